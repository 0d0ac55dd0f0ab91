// Entry used by tests and the bench that run ingest as a child process
// (`npx tsx ingest/testing/run-ingest.ts`). Prints `ready <port>` once subscribed. With
// RULR_BENCH_LATENCY=1 it records publish→commit latency (the message's `ts` is its publish time)
// and prints a JSON summary when a line `stats` arrives on stdin.
import { createInterface } from 'node:readline';
import { loadConfig } from '../../lib/config.js';
import { createLogger } from '../../lib/logger.js';
import { RoleContext } from '../../lib/role.js';
import { startIngest } from '../index.js';

const cfg = loadConfig();
const ctx = new RoleContext(cfg, createLogger(cfg.LOG_LEVEL));
const latencies: number[] = [];
const TS = /"ts":(\d+)/;
const h = await startIngest(ctx, {
  port: 0,
  ...(process.env.RULR_BENCH_LATENCY === '1'
    ? {
        onCommit: (msgs) => {
          const now = Date.now();
          for (const m of msgs) {
            const ts = TS.exec(m.payload.toString('latin1', 0, 40));
            if (ts) latencies.push(now - Number(ts[1]));
          }
        },
      }
    : {}),
});
await h.subscribed;
process.stdout.write(`ready ${h.port}\n`);
createInterface({ input: process.stdin }).on('line', (l) => {
  if (l.trim() !== 'stats') return;
  const s = latencies.splice(0).sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? null;
  process.stdout.write(`stats ${JSON.stringify({ n: s.length, p50: q(0.5), p99: q(0.99), max: s[s.length - 1] ?? null })}\n`);
});
const stop = async () => {
  await h.close();
  await ctx.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
