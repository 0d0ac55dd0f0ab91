import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../lib/config.js';
import type { Db } from '../lib/db.js';
import { createLogger } from '../lib/logger.js';
import { RoleContext } from '../lib/role.js';
import { compactRollups } from '../lib/telemetry/compactor.js';
import { BatchWriter, type Row } from '../lib/telemetry/writer.js';
import { MetricsRepository } from '../subgraphs/metrics/repository.js';
import { AGGREGATES, DAY, HOUR, MINUTE, planSeries } from '../subgraphs/metrics/series.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { REDIS_URL } from './support/env.js';
import { insertDevice, insertOrg } from './support/telemetry-fixtures.js';

/**
 * Cross-role check of the telemetry contract: rollups maintained incrementally by ingest's writer
 * (batches out of order, a redelivered batch) answer every series exactly as the raw rows do.
 */

let tdb: TestDatabase;
let ctx: RoleContext;
let repo: MetricsRepository;
let org: string;
let dev: string;
const T0 = Date.UTC(2026, 1, 2);

beforeAll(async () => {
  tdb = await createTestDatabase();
  ctx = new RoleContext(loadConfig({ REDIS_URL, LOG_LEVEL: 'silent' }), createLogger('silent'));
  repo = new MetricsRepository(tdb.db as Db, ctx.redis, `t${randomBytes(4).toString('hex')}:`);
  org = await insertOrg(tdb.db, `i-${randomBytes(3).toString('hex')}`);
  dev = await insertDevice(tdb.db, org, 'I-1', null);
});

afterAll(async () => {
  await ctx.close();
  await tdb.drop();
});

describe("ingest's incremental rollups read by the metrics subgraph", () => {
  it('give every aggregate at 1h, 6h and 1d exactly as the raw rows do, with batches out of order and one redelivered, before and after compaction', async () => {
    const rows: Row[] = [];
    for (let i = 0; i < 2 * 24 * 60; i += 3) {
      const ts = T0 + i * MINUTE + (i % 2) * 1500;
      rows.push({ ts, orgId: org, deviceId: dev, metric: 'power', value: ((i * 13) % 97) - 10.5, text: null, counter: false });
      rows.push({ ts, orgId: org, deviceId: dev, metric: 'lampState', value: i % 2, text: i % 2 ? 'true' : 'false', counter: false });
    }
    const batches: Row[][] = [];
    for (let i = 0; i < rows.length; i += 250) batches.push(rows.slice(i, i + 250));
    const writer = new BatchWriter(tdb.url);
    try {
      for (const b of [...batches].reverse()) await writer.write(b, []);
      await writer.write(batches[3] as Row[], []); // redelivered: must not count twice
    } finally {
      await writer.close();
    }
    for (const compacted of [false, true]) {
      if (compacted) {
        const c = new pg.Client({ connectionString: tdb.url });
        await c.connect();
        await compactRollups(c).finally(() => c.end());
      }
      await checkAgainstRaw(compacted);
    }
  });
});

async function checkAgainstRaw(compacted: boolean): Promise<void> {
  const deltas = await sql<{ n: number }>`select count(*)::int as n from metrics_rollup_deltas`.execute(tdb.db);
  expect(deltas.rows[0]?.n === 0).toBe(compacted);
  for (const interval of ['1h', '6h', '1d']) {
    const plan = planSeries(new Date(T0), new Date(T0 + 2 * DAY), interval);
    expect(plan.source).toBe(interval === '1d' ? 'daily' : 'hourly');
    for (const agg of AGGREGATES) {
      const fromRollup = await repo.series(org, dev, 'power', plan, agg);
      const fromRaw = await repo.seriesFromRaw(org, dev, 'power', plan, agg);
      expect(fromRollup.length, `${interval} ${agg}`).toBe((2 * DAY) / plan.intervalMs);
      expect(fromRollup.map((p) => p.ts.getTime())).toEqual(fromRaw.map((p) => p.ts.getTime()));
      for (const [i, p] of fromRollup.entries()) expect(p.value, `${interval} ${agg} #${i}`).toBeCloseTo(fromRaw[i]?.value as number, 6);
    }
  }
  const hourlyCount = await repo.series(org, dev, 'power', planSeries(new Date(T0), new Date(T0 + HOUR), '1h'), 'COUNT');
  expect(hourlyCount[0]?.value).toBe(20);
  // booleans are stored raw but neither rolled up nor aggregated
  expect(await repo.series(org, dev, 'lampState', planSeries(new Date(T0), new Date(T0 + DAY), '1h'), 'AVG')).toEqual([]);
  expect(await repo.series(org, dev, 'lampState', planSeries(new Date(T0), new Date(T0 + DAY), '15m'), 'AVG')).toEqual([]);
}
