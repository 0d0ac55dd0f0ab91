// Event-loop stall recorder for benchmarks (BENCH_STALLS=1): a 2 ms interval timer notes every
// turn that came more than `thresholdMs` late, with its wall-clock time, so stalls of a server and
// of the load generator (separate processes) can be lined up with each other and with --trace-gc.
import { monitorEventLoopDelay } from 'node:perf_hooks';

export interface Stall {
  /** Date.now() when the late turn ran (the stall ended) */
  at: number;
  ms: number;
}

export function recordStalls(thresholdMs = 10) {
  const stalls: Stall[] = [];
  const h = monitorEventLoopDelay({ resolution: 5 });
  h.enable();
  let last = performance.now();
  const t = setInterval(() => {
    const now = performance.now();
    const late = now - last - 2;
    if (late > thresholdMs) stalls.push({ at: Date.now(), ms: Math.round(late) });
    last = now;
  }, 2);
  t.unref();
  return {
    stalls,
    /** the stalls since the last call, and the event-loop delay histogram's p99 and max (ms) */
    take() {
      const out = { stalls: stalls.splice(0), p99: h.percentile(99) / 1e6, max: h.max / 1e6 };
      h.reset();
      return out;
    },
    stop() {
      clearInterval(t);
      h.disable();
    },
  };
}

export const showStalls = (who: string, s: Stall[]) =>
  s.length ? `${who} stalls over 10 ms (epoch ms:ms): ${s.map((x) => `${x.at}:${x.ms}`).join(' ')}` : `${who}: no stall over 10 ms`;
