import { Writable } from 'node:stream';
import type { MqttClient } from 'mqtt';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type IngestHandle, startIngest } from '../ingest/index.js';
import { type Broker, startNoDropBroker } from '../ingest/testing/broker.js';
import { type Fleet, ingestEnv, publisher, seedFleet, until } from '../ingest/testing/fixtures.js';
import { loadConfig } from '../lib/config.js';
import { RoleContext } from '../lib/role.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { REDIS_URL } from './support/env.js';

// The ingest role as `rulr start all` runs it, its log captured at info: a burst of bad messages is
// one summary line per interval, not one line per message, and every message is still stored.
let t: TestDatabase;
let broker: Broker;
let ctx: RoleContext;
let ingest: IngestHandle;
let pub: MqttClient;
let sql: pg.Client;
let fleet: Fleet;
const lines: Record<string, unknown>[] = [];

beforeAll(async () => {
  t = await createTestDatabase();
  broker = await startNoDropBroker();
  fleet = await seedFleet(t.url, { devices: 2 });
  const cfg = loadConfig({
    ...process.env,
    ...ingestEnv({ dbUrl: t.url, mqttUrl: broker.url, extra: { REDIS_URL, LOG_LEVEL: 'info', INGEST_DEAD_LETTER_SUMMARY_S: '1' } }),
  });
  const out = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  ctx = new RoleContext(cfg, pino({ level: 'info' }, out));
  ingest = await startIngest(ctx, { port: 0 });
  await ingest.subscribed;
  pub = await publisher(broker.url);
  sql = new pg.Client({ connectionString: t.url });
  await sql.connect();
});

afterAll(async () => {
  await pub?.endAsync();
  await ingest?.close();
  await ctx?.close();
  await sql?.end();
  await broker?.stop();
  await t?.drop();
});

const summaries = () =>
  lines
    .map((l) => l.deadLetters as { total: number; reasons: Record<string, number> } | undefined)
    .filter((s): s is { total: number; reasons: Record<string, number> } => typeof s === 'object' && s !== null && 'total' in s);

describe('ingest dead-letter log', () => {
  it('sums up a burst of bad messages per reason at info and stores every one of them', async () => {
    const dev = fleet.deviceIds[0] as string;
    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < 30; i++) sends.push(pub.publishAsync(`devices/${dev}/telemetry`, `not json ${i}`, { qos: 1 }));
    for (let i = 0; i < 12; i++)
      sends.push(
        pub.publishAsync(`devices/00000000-0000-4000-8000-0000000000${String(i).padStart(2, '0')}/telemetry`, '{"power":1}', { qos: 1 }),
      );
    sends.push(pub.publishAsync(`devices/${dev}/telemetry`, JSON.stringify({ power: 12 }), { qos: 1 }));
    await Promise.all(sends);

    await until(async () => Number((await sql.query('select count(*) n from dead_letters')).rows[0].n) === 42, 20_000, 'dead letters');
    await until(() => summaries().reduce((n, s) => n + s.total, 0) >= 42, 10_000, 'summary lines');

    const total: Record<string, number> = {};
    for (const s of summaries()) for (const [r, n] of Object.entries(s.reasons)) total[r] = (total[r] ?? 0) + n;
    expect(total).toEqual({ not_json: 30, unknown_device: 12 });
    // a handful of summary lines (one a second at most), not 42 lines
    expect(summaries().length).toBeLessThanOrEqual(5);
    expect(lines.filter((l) => typeof l.msg === 'string' && (l.msg as string).includes('dead letter')).length).toBe(summaries().length);
    for (const l of lines.filter((l) => l.deadLetters)) expect(l.level).toBe(30);

    const { rows } = await sql.query<{ reason: string; n: string }>(
      'select reason, count(*) n from dead_letters group by reason order by reason',
    );
    expect(rows.map((r) => [r.reason, Number(r.n)])).toEqual([
      ['not_json', 30],
      ['unknown_device', 12],
    ]);
    // the good reading of the same burst is stored
    await until(
      async () => Number((await sql.query('select count(*) n from device_metrics where device_id = $1', [dev])).rows[0].n) === 1,
      10_000,
      'reading',
    );
  });
});
