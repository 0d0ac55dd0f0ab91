// PostgreSQL backend CPU of ingest's batch transactions and of the rollup compactor, without MQTT:
// `npx tsx bench/ingest-pg-cost.ts`. Writes the bench's 1,000 devices × 10 metrics readings through a
// BatchWriter in batches of COST_BATCH readings (default 50,000), compacting every COST_COMPACT_EVERY
// batches (default 2), and reads each backend's CPU from /proc (PostgreSQL on this host). Variants
// (COST_VARIANTS, default `raw,nodeltas,full`): `raw` = binary COPY of the rows only, `nodeltas` =
// the writer without metric deltas (energy still), `full` = the writer and compactor as ingest runs
// them. COST_READINGS (default 1,000,000); COST_KEEP=1 keeps the database and skips the last
// compaction (to EXPLAIN the compaction by hand). Compaction here runs on a fixed schedule; the
// compactor's own pacing (`maxBusyFraction`) only shows in the live bench.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { seedFleet } from '../ingest/testing/fixtures.js';
import { RollupCompactor } from '../lib/telemetry/compactor.js';
import { BatchWriter, directBinary, type Row } from '../lib/telemetry/writer.js';
import { migrateToLatest } from '../schema/migrate.js';
import { adminUrl, dbUrl } from '../test/support/env.js';

const READINGS = Number(process.env.COST_READINGS ?? 1_000_000);
const BATCH = Number(process.env.COST_BATCH ?? 50_000);
const COMPACT_EVERY = Number(process.env.COST_COMPACT_EVERY ?? 2);
const VARIANTS = (process.env.COST_VARIANTS ?? 'raw,nodeltas,full').split(',');
const DEVICES = 1000;
const METRICS = ['power', 'voltage', 'current', 'temp', 'lux', 'dim', 'pf', 'freq', 'rssi', 'energy'];

function cpu(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(f[11]) + Number(f[12])) / 100;
}
async function pidOf(sql: pg.Client, app: string, db: string): Promise<number> {
  const r = await sql.query<{ pid: number }>('select pid from pg_stat_activity where application_name = $1 and datname = $2', [app, db]);
  return r.rows[0]?.pid as number;
}

async function variant(name: string): Promise<void> {
  const dbName = `rulr_cost_${randomBytes(3).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  await admin.query(`create database ${dbName}`);
  const url = dbUrl(dbName);
  try {
    const kdb = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 1 }) }) });
    await migrateToLatest(kdb);
    await kdb.destroy();
    const fleet = await seedFleet(url, {
      devices: DEVICES,
      metrics: METRICS.map((n) => (n === 'energy' ? { name: n, type: 'number', counter: true } : { name: n, type: 'number' })),
    });
    const sql = new pg.Client({ connectionString: url });
    await sql.connect();
    const t0 = Date.now() - 7_200_000;
    const all: Row[] = [];
    for (let i = 0; all.length < READINGS; i++) {
      const ts = t0 + Math.floor(i / DEVICES) * 10;
      for (let k = 0; k < METRICS.length; k++)
        all.push({
          ts,
          orgId: fleet.orgId,
          deviceId: fleet.deviceIds[i % DEVICES] as string,
          metric: METRICS[k] as string,
          value: k === 9 ? i / 100 : Math.round(((i * 31 + k * 17) % 1000) * 10) / 10,
          text: null,
          counter: k === 9,
        });
    }
    let wCpu = 0;
    let cCpu = 0;
    const w0 = performance.now();
    if (name === 'raw') {
      const c = new pg.Client({ connectionString: url, application_name: 'cost-raw' });
      await c.connect();
      const pid = await pidOf(sql, 'cost-raw', dbName);
      const c0 = cpu(pid);
      for (let i = 0; i < all.length; i += BATCH) {
        await c.query('begin');
        await new Promise<void>((res, rej) => {
          const s = c.query(copyFrom('copy device_metrics (time, org_id, device_id, metric, value, text) from stdin with (format binary)'));
          s.on('finish', res);
          s.on('error', rej);
          s.end(directBinary(all.slice(i, i + BATCH)));
        });
        await c.query('commit');
      }
      wCpu = cpu(pid) - c0;
      await c.end();
    } else {
      const writer = new BatchWriter(url, name === 'nodeltas' ? { metricRollups: false } : {});
      const compactor = new RollupCompactor({ url, ...(name === 'nodeltas' ? { metricRollups: false } : {}) });
      await writer.write([], []);
      await compactor.runOnce();
      const wp = await pidOf(sql, 'rulr-ingest', dbName);
      const cp = await pidOf(sql, 'rulr-compactor', dbName);
      const a = cpu(wp);
      const b = cpu(cp);
      let n = 0;
      for (let i = 0; i < all.length; i += BATCH) {
        await writer.write(all.slice(i, i + BATCH), []);
        if (++n % COMPACT_EVERY === 0) await compactor.runOnce();
      }
      if (process.env.COST_KEEP !== '1') await compactor.runOnce();
      wCpu = cpu(wp) - a;
      cCpu = cpu(cp) - b;
      await writer.close();
      await compactor.close();
      if (name === 'full' && process.env.COST_KEEP !== '1') {
        const r = await sql.query(
          'select (select sum(count) from metrics_hourly)::bigint h, (select sum(count) from metrics_daily)::bigint d',
        );
        if (Number(r.rows[0].h) !== all.length || Number(r.rows[0].d) !== all.length)
          throw new Error(`rollups wrong: ${JSON.stringify(r.rows[0])}`);
      }
    }
    const wall = (performance.now() - w0) / 1000;
    console.log(
      `${name.padEnd(9)} batch ${BATCH} compact/${COMPACT_EVERY}: writer backend ${wCpu.toFixed(2)} s, compactor backend ${cCpu.toFixed(2)} s, total ${(wCpu + cCpu).toFixed(2)} s (${(((wCpu + cCpu) / all.length) * 1e6).toFixed(2)} µs/reading), wall ${wall.toFixed(1)} s`,
    );
    await sql.end();
  } finally {
    if (process.env.COST_KEEP === '1') console.log(`kept ${dbName}`);
    else await admin.query(`drop database if exists ${dbName} with (force)`);
    await admin.end();
  }
}

for (const v of VARIANTS) await variant(v);
process.exit(0);
