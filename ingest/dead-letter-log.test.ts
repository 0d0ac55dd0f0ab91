import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { DeadLetterRow } from '../lib/telemetry/writer.js';
import { DeadLetterLog, SAMPLE_TOPICS } from './dead-letter-log.js';

/** A real pino logger writing JSON lines into an array. */
function capture(level: string) {
  const lines: Record<string, unknown>[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { logger: pino({ level }, out), lines };
}

const dl = (reason: string, topic = `devices/d-${reason}/telemetry`): DeadLetterRow => ({
  orgId: null,
  deviceId: null,
  topic,
  reason,
  detail: `detail of ${reason}`,
  payload: '{',
});

describe('DeadLetterLog', () => {
  it('logs one info summary per interval with the counts per reason, most frequent first', () => {
    let now = 1_000_000;
    const { logger, lines } = capture('info');
    const log = new DeadLetterLog(logger, () => now);
    log.record([dl('not_json'), dl('unknown_device'), dl('not_json')]);
    log.record([dl('wrong_type'), dl('not_json')]);
    now += 60_000;
    const s = log.flush();
    expect(s).toEqual({
      intervalS: 60,
      total: 5,
      reasons: { not_json: 3, unknown_device: 1, wrong_type: 1 },
      topics: ['devices/d-not_json/telemetry', 'devices/d-unknown_device/telemetry', 'devices/d-wrong_type/telemetry'],
    });
    expect(Object.keys(s?.reasons ?? {})).toEqual(['not_json', 'unknown_device', 'wrong_type']);
    expect(lines).toHaveLength(1);
    expect(lines[0]?.level).toBe(30);
    expect(lines[0]?.msg).toBe(
      'ingest: 5 dead letters in the last 60 s (not_json 3, unknown_device 1, wrong_type 1); see the deadLetters query',
    );
    expect(lines[0]?.deadLetters).toEqual(s);
  });

  it('starts each interval from zero and says nothing for a quiet one', () => {
    let now = 0;
    const { logger, lines } = capture('info');
    const log = new DeadLetterLog(logger, () => now);
    log.record([dl('too_large')]);
    now += 10_000;
    expect(log.flush()?.total).toBe(1);
    now += 10_000;
    expect(log.flush()).toBeNull();
    log.record([dl('bad_topic'), dl('bad_topic')]);
    now += 5_000;
    expect(log.flush()).toMatchObject({ intervalS: 5, total: 2, reasons: { bad_topic: 2 } });
    expect(lines.map((l) => (l.deadLetters as { total: number }).total)).toEqual([1, 2]);
  });

  it('keeps each message at debug only: nothing per message at info', () => {
    const info = capture('info');
    new DeadLetterLog(info.logger).record([dl('not_json'), dl('wrong_type')]);
    expect(info.lines).toHaveLength(0);

    const debug = capture('debug');
    new DeadLetterLog(debug.logger).record([dl('not_json'), dl('wrong_type')]);
    expect(debug.lines.map((l) => [l.level, l.msg, l.reason, l.topic])).toEqual([
      [20, 'ingest: dead letter stored', 'not_json', 'devices/d-not_json/telemetry'],
      [20, 'ingest: dead letter stored', 'wrong_type', 'devices/d-wrong_type/telemetry'],
    ]);
  });

  it('names at most a few distinct topics as examples however many messages there were', () => {
    const { logger } = capture('info');
    const log = new DeadLetterLog(logger);
    log.record(Array.from({ length: 1000 }, (_, i) => dl('not_json', `devices/d${i % 50}/telemetry`)));
    const s = log.flush();
    expect(s?.total).toBe(1000);
    expect(s?.topics).toHaveLength(SAMPLE_TOPICS);
    expect(new Set(s?.topics).size).toBe(SAMPLE_TOPICS);
  });

  it('flushes on its own timer, and the timer stops with stop()', async () => {
    const { logger, lines } = capture('info');
    const log = new DeadLetterLog(logger).start(30);
    log.record([dl('unknown_device')]);
    const end = Date.now() + 5000;
    while (lines.length === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    expect(lines[0]?.deadLetters).toMatchObject({ total: 1, reasons: { unknown_device: 1 } });
    log.stop();
    log.record([dl('unknown_device')]);
    await new Promise((r) => setTimeout(r, 100));
    expect(lines).toHaveLength(1);
  });
});
