// bench:console: the operations console in headless Chromium against the whole platform with
// 10,000 street lights and the simulator at 1,000 messages/s (issue 15):
//   1. time to first meaningful paint of the fleet map: from the start of a fresh page load of
//      `#/map` (signed in) to the performance mark the console sets when the map has drawn its
//      devices (MAP_MARK), beside the first contentful paint of the sign-in page of the same build
//      (the baseline: the console's own shell, no data);
//   2. frames per second while panning: requestAnimationFrame callbacks counted in the page during
//      scripted mouse drags over the map, beside the same count on the idle map (the baseline);
//   3. browser memory over a soak of live updates: the page's JS heap (CDP Performance.getMetrics
//      JSHeapUsedSize after a forced GC) sampled through the soak; it must not grow without bound.
// Env: BENCH_CONSOLE_SHORT=1 (smoke run: 2,000 devices, 200 msg/s, 45 s soak), BENCH_DEVICES,
// BENCH_RATE, BENCH_SOAK_S, BENCH_PAN_S, BENCH_WRITE=1 (write the section of a short run too),
// BENCH_SHARED=1 (say in the section that other work shared the machine's cores during the run).
// A full run writes the `console` section of bench/RESULTS.md.

import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import type { CDPSession, Page } from 'playwright-core';
import { launchBrowser } from '../test/support/browser.js';
import { signIn } from '../test/support/console.js';
import { startPlatform } from '../test/support/platform.js';
import { benchDatabase } from './database.js';

const SHORT = process.env.BENCH_CONSOLE_SHORT === '1';
const DEVICES = Number(process.env.BENCH_DEVICES ?? (SHORT ? 2000 : 10_000));
const RATE = Number(process.env.BENCH_RATE ?? (SHORT ? 200 : 1000));
const SOAK_S = Number(process.env.BENCH_SOAK_S ?? (SHORT ? 45 : 600));
const PAN_S = Number(process.env.BENCH_PAN_S ?? (SHORT ? 5 : 10));
const SAMPLES = SHORT ? 5 : 20;
const SHARED = process.env.BENCH_SHARED === '1';
const DB_NAME = 'rulr_bench_console';

/** The mark the console sets once the map has drawn its devices (console/README.md). */
export const MAP_MARK = 'rulr:map-drawn';
/** The map's drawing surface, where the pans drag (console/README.md). */
export const MAP_SELECTOR = '[data-testid="fleet-map"]';

/** What the page-side functions below use of the browser (this project's TypeScript has no DOM lib). */
interface Win {
  __frames: number[];
  __counting: boolean;
  requestAnimationFrame(cb: (t: number) => void): number;
  performance: {
    getEntriesByName(name: string): { startTime: number; detail?: unknown }[];
    getEntriesByType(type: string): { name: string; startTime: number }[];
  };
}

const mb = (n: number) => Math.round((n / 1048576) * 10) / 10;
const fmt = (n: number) => n.toLocaleString('en-US');

/** Milliseconds from the start of the page load to the map's mark (waits for it). */
async function mapPaint(page: Page): Promise<number> {
  await page.waitForFunction((mark) => (globalThis as unknown as Win).performance.getEntriesByName(mark).length > 0, MAP_MARK, {
    timeout: 120_000,
    polling: 50,
  });
  return page.evaluate((mark) => (globalThis as unknown as Win).performance.getEntriesByName(mark)[0]?.startTime ?? Number.NaN, MAP_MARK);
}

/** requestAnimationFrame callbacks per second (and the slowest frames) while `during` runs. */
async function frames(page: Page, during: () => Promise<void>): Promise<{ fps: number; p95Ms: number; longFrames: number }> {
  // A string, not a function: tsx (esbuild keepNames) wraps named inner functions in a `__name`
  // helper that exists in Node, not in the page ("ReferenceError: __name is not defined").
  await page.evaluate(`(() => {
    const w = globalThis;
    w.__frames = [];
    w.__counting = true;
    const tick = (t) => {
      w.__frames.push(t);
      if (w.__counting) w.requestAnimationFrame(tick);
    };
    w.requestAnimationFrame(tick);
  })()`);
  await during();
  const ts = await page.evaluate(() => {
    const w = globalThis as unknown as Win;
    w.__counting = false;
    return w.__frames;
  });
  const gaps = ts
    .slice(1)
    .map((t, i) => t - (ts[i] as number))
    .sort((a, b) => a - b);
  const span = ((ts.at(-1) ?? 0) - (ts[0] ?? 0)) / 1000;
  return {
    fps: span > 0 ? Math.round(((ts.length - 1) / span) * 10) / 10 : 0,
    p95Ms: Math.round(gaps[Math.floor(gaps.length * 0.95)] ?? 0),
    longFrames: gaps.filter((g) => g > 50).length,
  };
}

/** Drags the map around for `seconds` (a square path of short strokes, like a person exploring). */
async function pan(page: Page, seconds: number): Promise<void> {
  const box = await page.locator(MAP_SELECTOR).boundingBox();
  if (!box) throw new Error(`no ${MAP_SELECTOR} on the page`);
  const cx = box.x + box.width / 2;
  const cy = box.y + box.height / 2;
  const r = Math.min(box.width, box.height) / 4;
  const dirs = [
    [1, 0],
    [0, 1],
    [-1, 0],
    [0, -1],
  ] as const;
  const end = Date.now() + seconds * 1000;
  for (let i = 0; Date.now() < end; i++) {
    const [dx, dy] = dirs[i % 4] as readonly [number, number];
    await page.mouse.move(cx - (dx * r) / 2, cy - (dy * r) / 2);
    await page.mouse.down();
    await page.mouse.move(cx + (dx * r) / 2, cy + (dy * r) / 2, { steps: 20 });
    await page.mouse.up();
  }
}

interface HeapSample {
  s: number;
  heapMb: number;
  nodes: number;
  listeners: number;
}

async function heap(cdp: CDPSession, t0: number): Promise<HeapSample> {
  await cdp.send('HeapProfiler.collectGarbage');
  const { metrics } = await cdp.send('Performance.getMetrics');
  const m = (name: string) => metrics.find((x) => x.name === name)?.value ?? 0;
  return { s: Math.round((Date.now() - t0) / 1000), heapMb: mb(m('JSHeapUsedSize')), nodes: m('Nodes'), listeners: m('JSEventListeners') };
}

/** Least-squares slope of heap MB per minute. */
function slope(samples: HeapSample[]): number {
  const n = samples.length;
  if (n < 2) return 0;
  const xs = samples.map((p) => p.s / 60);
  const ys = samples.map((p) => p.heapMb);
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += ((xs[i] as number) - mx) * ((ys[i] as number) - my);
    den += ((xs[i] as number) - mx) ** 2;
  }
  return den ? Math.round((num / den) * 100) / 100 : 0;
}

async function main(): Promise<void> {
  const load0 = loadavg()[0] ?? 0;
  const started = new Date();
  console.log(`[bench:console] ${fmt(DEVICES)} devices, simulator ${fmt(RATE)} msg/s, soak ${SOAK_S} s${SHORT ? ' (short)' : ''}`);
  const database = await benchDatabase(DB_NAME);
  const p = await startPlatform({
    devices: DEVICES,
    simulate: { rate: RATE, devices: DEVICES, inProcess: false },
    database,
    name: 'bench-console',
  });
  const browser = await launchBrowser({ args: ['--enable-precise-memory-info'] });
  try {
    // Traffic first: the console is measured under live load.
    const t0 = Date.now();
    while (Number((await p.sql.query('select count(*) n from device_metrics')).rows[0].n) === 0) {
      if (Date.now() - t0 > 60_000) throw new Error('no simulated readings after 60 s (see test-results/console/bench-console.*.log)');
      await new Promise((r) => setTimeout(r, 500));
    }
    const page = await browser.page();

    // Baseline: the sign-in page's first contentful paint (same build, same server, no data).
    await page.goto(`${p.url}/#/signin`);
    await page.getByRole('form', { name: 'Sign in' }).waitFor();
    const signinFcp = await page.evaluate(
      () =>
        (globalThis as unknown as Win).performance.getEntriesByType('paint').find((e) => e.name === 'first-contentful-paint')?.startTime ??
        Number.NaN,
    );

    await signIn(page, p.url, p.admin);
    // A fresh load of the map, signed in (the console keeps its session across a reload).
    await page.goto('about:blank');
    await page.goto(`${p.url}/#/map`);
    const paintMs = await mapPaint(page);
    const points = await page.evaluate((mark) => {
      const e = (globalThis as unknown as Win).performance.getEntriesByName(mark)[0];
      return (e?.detail as { points?: number } | undefined)?.points ?? null;
    }, MAP_MARK);
    await browser.screenshot(page, 'bench-console-map');
    console.log(`[bench:console] map drawn after ${Math.round(paintMs)} ms (sign-in page FCP ${Math.round(signinFcp)} ms)`);

    const idle = await frames(page, () => new Promise((r) => setTimeout(r, PAN_S * 1000)));
    const panning = await frames(page, () => pan(page, PAN_S));
    console.log(`[bench:console] ${panning.fps} fps panning, ${idle.fps} fps idle`);

    const cdp = await browser.context.newCDPSession(page);
    await cdp.send('Performance.enable');
    const soak0 = Date.now();
    const samples: HeapSample[] = [await heap(cdp, soak0)];
    const rows0 = Number((await p.sql.query('select count(*) n from device_metrics')).rows[0].n);
    for (let i = 1; i <= SAMPLES; i++) {
      await new Promise((r) => setTimeout(r, (SOAK_S * 1000) / SAMPLES));
      samples.push(await heap(cdp, soak0));
      console.log(`[bench:console] ${samples.at(-1)?.s} s: JS heap ${samples.at(-1)?.heapMb} MB, ${samples.at(-1)?.nodes} DOM nodes`);
    }
    const soakS = (Date.now() - soak0) / 1000;
    const rows1 = Number((await p.sql.query('select count(*) n from device_metrics')).rows[0].n);
    await browser.screenshot(page, 'bench-console-after-soak');
    const half = samples.slice(Math.floor(samples.length / 2));
    const firstHalfMax = Math.max(...samples.slice(0, Math.ceil(samples.length / 2)).map((s) => s.heapMb));
    const secondHalfMax = Math.max(...half.map((s) => s.heapMb));
    const lateSlope = slope(half);
    const bounded = secondHalfMax <= firstHalfMax * 1.25 + 2 || lateSlope <= 0.1;
    const errors = browser.errors.length;
    const load1 = loadavg()[0] ?? 0;

    const result = {
      started: started.toISOString().slice(0, 16),
      paintMs: Math.round(paintMs),
      points,
      signinFcp: Math.round(signinFcp),
      idle,
      panning,
      samples,
      soakS: Math.round(soakS),
      readingsPerS: Math.round((rows1 - rows0) / soakS),
      firstHalfMax,
      secondHalfMax,
      lateSlope,
      bounded,
      errors,
      load0,
      load1,
    };
    console.log(JSON.stringify({ ...result, samples: undefined }));
    if (!SHORT || process.env.BENCH_WRITE === '1') writeSection(result);
  } finally {
    await browser.close();
    await p.close();
  }
}

function writeSection(r: {
  started: string;
  paintMs: number;
  points: number | null;
  signinFcp: number;
  idle: { fps: number; p95Ms: number; longFrames: number };
  panning: { fps: number; p95Ms: number; longFrames: number };
  samples: HeapSample[];
  soakS: number;
  readingsPerS: number;
  firstHalfMax: number;
  secondHalfMax: number;
  lateSlope: number;
  bounded: boolean;
  errors: number;
  load0: number;
  load1: number;
}): void {
  const first = r.samples[0] as HeapSample;
  const last = r.samples.at(-1) as HeapSample;
  const ratio = (a: number, b: number) => (b > 0 ? `${(Math.round((a / b) * 100) / 100).toFixed(2)}×` : 'n/a');
  const section = [
    '<!-- console:start -->',
    '## Console in the browser (`npm run bench:console`)',
    '',
    `Run ${r.started}Z on ${cpus().length} × ${cpus()[0]?.model.split(' ').slice(0, 2).join(' ') ?? 'CPU'}, ${Math.round(totalmem() / 2 ** 30)} GiB RAM, Node ${process.version}, headless Chromium (Debian, software rendering), 1-minute load average ${r.load0.toFixed(1)} before and ${r.load1.toFixed(1)} after.`,
    ...(SHARED
      ? [
          '**The machine was shared**: other sessions ran their tests, builds and benchmarks on the same 2 cores during this run, so the figures are pessimistic.',
        ]
      : []),
    `Command: \`${SHARED ? 'BENCH_SHARED=1 ' : ''}npm run bench:console\` (env: \`BENCH_CONSOLE_SHORT=1\` for a smoke run, \`BENCH_DEVICES\`, \`BENCH_RATE\`, \`BENCH_SOAK_S\`, \`BENCH_PAN_S\`).`,
    `Setup: own database \`${DB_NAME}\` with the demo organization (${fmt(DEVICES)} street lights), every role in one process (\`startRoles(all)\`, as \`rulr start all\`), \`rulr simulate\` at ${fmt(RATE)} messages/s in its own process (${fmt(r.readingsPerS)} readings/s stored during the soak), the console signed in as the demo admin on a 1280×800 viewport, everything on this one machine.`,
    '',
    '| measure | console | baseline (same run) | ratio |',
    '| --- | ---: | ---: | ---: |',
    `| first meaningful paint of the map: page load → \`${MAP_MARK}\` mark${r.points !== null ? ` (${fmt(r.points)} points)` : ''} | ${fmt(r.paintMs)} ms | sign-in page first contentful paint ${fmt(r.signinFcp)} ms | ${ratio(r.paintMs, r.signinFcp)} |`,
    `| frames per second while panning (${PAN_S} s of drags) | ${r.panning.fps} fps (p95 frame ${r.panning.p95Ms} ms, ${r.panning.longFrames} frames > 50 ms) | idle map with live updates ${r.idle.fps} fps (p95 ${r.idle.p95Ms} ms) | ${ratio(r.panning.fps, r.idle.fps)} |`,
    `| JS heap after a forced GC, over ${r.soakS >= 120 ? `${Math.round(r.soakS / 60)} min` : `${r.soakS} s`} of live updates | ${last.heapMb} MB at the end (max ${r.secondHalfMax} MB in the second half) | ${first.heapMb} MB at the start (max ${r.firstHalfMax} MB in the first half) | ${ratio(last.heapMb, first.heapMb)} |`,
    '',
    `Heap samples (s: MB): ${r.samples.map((s) => `${s.s}: ${s.heapMb}`).join(', ')}; DOM nodes ${first.nodes} → ${last.nodes}, event listeners ${first.listeners} → ${last.listeners}. Slope over the second half: ${r.lateSlope} MB/min. Verdict: ${r.bounded ? '**bounded** (the second half peaks within 25 % of the first, or grows under 0.1 MB/min)' : '**grows** (see the samples)'}. Browser console errors during the run: ${r.errors}.`,
    '<!-- console:end -->',
  ].join('\n');
  const path = new URL('./RESULTS.md', import.meta.url);
  const md = readFileSync(path, 'utf8');
  const re = /<!-- console:start -->[\s\S]*<!-- console:end -->/;
  writeFileSync(path, re.test(md) ? md.replace(re, section) : `${md.trimEnd()}\n\n${section}\n`);
  console.log('[bench:console] bench/RESULTS.md updated');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
