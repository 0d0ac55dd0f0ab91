// bench/open-loop.ts's generator in a process of its own (spawned by {@link runOpenLoopInChild}):
// a fresh, small heap holding nothing but the connections and the requests (one off-heap buffer),
// so neither a collection of the benchmark's big heap (devices, bodies, database clients) nor
// anything else it does can delay the schedule and be counted as server latency.
import { spawn } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { type EncodedRequests, type OpenLoopResult, runOpenLoopRaw } from './open-loop.js';
import { recordStalls, type Stall } from './stalls.js';

export interface ChildRunOptions {
  url: string;
  rate: number;
  durationS: number;
  connections: number;
  /** requests in flight per connection (HTTP/1.1 pipelining, as EMQX's client); @default 1 */
  pipelining?: number;
  /** note the worst latency over 20 ms per 250 ms slot (wall-clock ms of the slot) */
  tail?: boolean;
  /** note the generator's own event-loop stalls over 10 ms */
  stalls?: boolean;
  /**
   * Seconds of the same load sent first over the same connections and not counted (the generator is a
   * new process: its own code runs cold at first, and what it is slow to send counts as latency from
   * the scheduled time; new connections are slow at first too).
   */
  warmupS?: number;
}

export interface ChildRunResult extends OpenLoopResult {
  slow: [number, number][];
  stalls: Stall[];
  /**
   * the generator's event-loop delay p99 and max (ms) over the run (monitorEventLoopDelay: each value
   * includes its timer's interval, 5 ms with `stalls`, else 10 ms)
   */
  loopP99: number;
  loopMax: number;
}

/** Runs the generator in a child process with `requests` (written to a temporary file, read there off-heap). */
export async function runOpenLoopInChild(
  o: ChildRunOptions,
  requests: EncodedRequests,
): Promise<ChildRunResult & { warmupCompleted: number }> {
  const base = `${os.tmpdir()}/rulr-open-loop-${process.pid}-${Date.now()}`;
  writeFileSync(`${base}.data`, requests.data);
  writeFileSync(`${base}.offsets`, Buffer.from(requests.offsets.buffer, requests.offsets.byteOffset, requests.offsets.byteLength));
  try {
    const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--run'], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    child.stdin?.write(`${JSON.stringify({ ...o, base })}\n`);
    let out = '';
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
    });
    child.stdin?.end();
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    const line = out.split('\n').find((l) => l.startsWith('RESULT '));
    if (code !== 0 || !line) throw new Error(`open-loop generator exited with ${code}: ${out.slice(0, 300)}`);
    const result = JSON.parse(line.slice(7)) as ChildRunResult;
    return { ...result, warmupCompleted: result.warmupCompleted ?? 0 };
  } finally {
    rmSync(`${base}.data`, { force: true });
    rmSync(`${base}.offsets`, { force: true });
  }
}

if (process.argv[2] === '--run') {
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const o = JSON.parse((await lines.next()).value as string) as ChildRunOptions & { base: string };
  const data = readFileSync(`${o.base}.data`);
  const raw = readFileSync(`${o.base}.offsets`);
  const offsets = new Uint32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  const slow = new Map<number, number>();
  // the generator's own event-loop delay, always (a histogram timer every 10 ms, next to nothing); the
  // stall recorder's 2 ms timer only when asked: a late generator is counted as server latency
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const loop = recordStalls();
  if (!o.stalls) loop.stop();
  const r = await runOpenLoopRaw({
    url: o.url,
    headers: {},
    body: '',
    encoded: { data, offsets },
    rate: o.rate,
    durationS: o.durationS,
    connections: o.connections,
    pipelining: o.pipelining ?? 1,
    warmupS: o.warmupS ?? 0,
    ...(o.tail
      ? {
          onSample: (_at: number, ms: number, scheduled: number) => {
            if (ms <= 20) return;
            const b = Math.floor((performance.timeOrigin + scheduled) / 250) * 250;
            slow.set(b, Math.max(slow.get(b) ?? 0, ms));
          },
        }
      : {}),
  });
  const s = loop.take();
  loop.stop();
  delay.disable();
  const result: ChildRunResult = {
    ...r,
    slow: [...slow],
    stalls: o.stalls ? s.stalls : [],
    loopP99: o.stalls ? s.p99 : delay.percentile(99) / 1e6,
    loopMax: o.stalls ? s.max : delay.max / 1e6,
  };
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  process.exit(0);
}
