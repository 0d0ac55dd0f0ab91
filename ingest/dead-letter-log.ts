import type { Logger } from '../lib/logger.js';
import type { DeadLetterRow } from '../lib/telemetry/writer.js';

/** What one summary line carries (also what {@link DeadLetterLog.flush} returns). */
export interface DeadLetterSummary {
  /** seconds since the previous summary (or since the log started) */
  intervalS: number;
  /** dead letters stored in that interval */
  total: number;
  /** per reason, most frequent first */
  reasons: Record<string, number>;
  /** up to {@link SAMPLE_TOPICS} distinct topics, for a first look (the store has every message) */
  topics: string[];
}

/** Distinct topics a summary names as examples. */
export const SAMPLE_TOPICS = 5;

/**
 * Logs stored dead letters without flooding the terminal: each message at debug, and at info one
 * summary per interval with the counts per reason (nothing is logged for a quiet interval). The
 * messages themselves are in the dead-letter store (`deadLetters` query); the counter
 * `rulr_ingest_dead_letters_total{reason}` is kept by the pipeline.
 */
export class DeadLetterLog {
  private counts = new Map<string, number>();
  private topics = new Set<string>();
  private total = 0;
  private since: number;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.since = now();
  }

  /** Counts dead letters that were just committed (and logs each at debug). */
  record(dead: readonly DeadLetterRow[]): void {
    if (dead.length === 0) return;
    const debug = this.logger.isLevelEnabled('debug');
    for (const d of dead) {
      this.counts.set(d.reason, (this.counts.get(d.reason) ?? 0) + 1);
      if (this.topics.size < SAMPLE_TOPICS) this.topics.add(d.topic);
      if (debug)
        this.logger.debug({ topic: d.topic, reason: d.reason, detail: d.detail, deviceId: d.deviceId }, 'ingest: dead letter stored');
    }
    this.total += dead.length;
  }

  /** Logs the summary of the interval that ends now (if it had dead letters) and starts the next one. */
  flush(): DeadLetterSummary | null {
    const now = this.now();
    const intervalS = Math.max(0, Math.round((now - this.since) / 1000));
    this.since = now;
    if (this.total === 0) return null;
    const reasons = Object.fromEntries([...this.counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])));
    const summary: DeadLetterSummary = { intervalS, total: this.total, reasons, topics: [...this.topics] };
    this.counts = new Map();
    this.topics = new Set();
    this.total = 0;
    const list = Object.entries(reasons)
      .map(([r, n]) => `${r} ${n}`)
      .join(', ');
    this.logger.info(
      { deadLetters: summary },
      `ingest: ${summary.total} dead letters in the last ${intervalS} s (${list}); see the deadLetters query`,
    );
    return summary;
  }

  /** Flushes every `intervalMs` (the timer does not keep the process alive). */
  start(intervalMs: number): this {
    this.stop();
    this.timer = setInterval(() => this.flush(), intervalMs);
    this.timer.unref();
    return this;
  }

  /** Stops the timer and logs what the last interval held. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
