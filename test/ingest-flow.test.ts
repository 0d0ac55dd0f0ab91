import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import type { MqttClient } from 'mqtt';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type IngestHandle, startIngest } from '../ingest/index.js';
import { type Broker, startNoDropBroker } from '../ingest/testing/broker.js';
import { contextFor, type Fleet, ingestEnv, publisher, seedFleet, until } from '../ingest/testing/fixtures.js';
import { RULE_EVAL_QUEUE } from '../lib/contracts/rule-eval.js';
import { registry } from '../lib/metrics.js';
import { createRedis, type Redis } from '../lib/redis.js';
import type { RoleContext } from '../lib/role.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { REDIS_URL } from './support/env.js';

let t: TestDatabase;
let broker: Broker;
let ctx: RoleContext;
let ingest: IngestHandle;
let pub: MqttClient;
let sql: pg.Client;
let redis: Redis;
let prefix: string;
let fleet: Fleet;
const events: Record<string, unknown>[] = [];
let sub: Redis;

const count = async (q: string, p: unknown[] = []) => Number((await sql.query(q, p)).rows[0]?.n ?? 0);
const send = (topic: string, body: unknown) =>
  pub.publishAsync(topic, typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body), { qos: 1 });
const dev = (i: number) => fleet.deviceIds[i] as string;

beforeAll(async () => {
  t = await createTestDatabase();
  broker = await startNoDropBroker();
  const env = ingestEnv({ dbUrl: t.url, mqttUrl: broker.url, extra: { INGEST_MAX_PAYLOAD_BYTES: '2048', REDIS_URL } });
  prefix = env.REDIS_PREFIX as string;
  ({ ctx } = contextFor(env));
  fleet = await seedFleet(t.url, { devices: 6 });
  sub = createRedis(REDIS_URL);
  // a channel message is one envelope or an array of them (ingest: one array per organization per batch)
  sub.on('message', (_c, m: string) => events.push(...[JSON.parse(m)].flat()));
  await sub.subscribe(`${prefix}events:${fleet.orgId}`);
  ingest = await startIngest(ctx, { port: 0 });
  await ingest.subscribed;
  pub = await publisher(broker.url);
  sql = new pg.Client({ connectionString: t.url });
  await sql.connect();
  redis = createRedis(REDIS_URL);
});

afterAll(async () => {
  await pub?.endAsync();
  await ingest?.close();
  await ctx?.close();
  await sql?.end();
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length) await redis.del(...keys);
  await redis?.quit();
  await sub?.quit();
  await broker?.stop();
  await t?.drop();
});

describe('ingest stores telemetry', () => {
  it('should store every payload form with numbers, booleans and strings in their columns', async () => {
    const now = Date.now();
    await send(`devices/${dev(0)}/telemetry`, { ts: now - 5000, values: { power: 12.5, on: true, mode: 'dim' } });
    await send(`devices/${dev(0)}/telemetry`, { ts: new Date(now - 4000).toISOString(), values: { power: 13 } });
    await send(`devices/${dev(0)}/telemetry`, [
      { ts: now - 3000, values: { power: 14, energy: 100.5 } },
      { ts: now - 2000, values: { power: 15, energy: 100.75, on: false } },
    ]);
    await send(`devices/${dev(0)}/telemetry`, { temp: 21.5, mode: 'full' });
    await until(async () => (await count('select count(*) n from device_metrics where device_id = $1', [dev(0)])) === 11, 10_000, 'rows');

    const { rows } = await sql.query(
      'select metric, extract(epoch from time) * 1000 as ts, value, text from device_metrics where device_id = $1 order by time, metric',
      [dev(0)],
    );
    const byMetric = (m: string) => rows.filter((r) => r.metric === m).map((r) => [Number(r.ts), r.value, r.text]);
    expect(byMetric('power')).toEqual([
      [now - 5000, 12.5, null],
      [now - 4000, 13, null],
      [now - 3000, 14, null],
      [now - 2000, 15, null],
    ]);
    expect(byMetric('on')).toEqual([
      [now - 5000, 1, 'true'],
      [now - 2000, 0, 'false'],
    ]);
    expect(byMetric('mode').map((r) => r[2])).toEqual(['dim', 'full']);
    expect(byMetric('temp')).toHaveLength(1);
    const energy = await sql.query('select counter_kwh from energy_readings where device_id = $1 order by time', [dev(0)]);
    expect(energy.rows.map((r) => r.counter_kwh)).toEqual([100.5, 100.75]);
  });

  it('should keep the latest value per metric and the status in Redis, and publish events', async () => {
    await until(async () => (await redis.hget(`${prefix}latest:${dev(0)}`, 'temp')) !== null, 5000, 'latest');
    const latest = await redis.hgetall(`${prefix}latest:${dev(0)}`);
    expect(JSON.parse(latest.power as string)).toMatchObject({ v: 15, t: null });
    expect(JSON.parse(latest.mode as string)).toMatchObject({ v: null, t: 'full' });
    const status = await redis.hgetall(`${prefix}status:${dev(0)}`);
    expect(status.online).toBe('1');
    expect(Number(status.lastSeen)).toBeGreaterThan(Date.now() - 60_000);
    const ofDevice = (field: string, id: string) =>
      events.filter((e) => e.field === field && (e.filter as { deviceId?: string }).deviceId === id);
    await until(() => ofDevice('telemetryUpdated', dev(0)).length > 0, 5000, 'event');
    const ev = ofDevice('telemetryUpdated', dev(0))[0] as { orgId: string; data: { device: { id: string }; readings: unknown[] } };
    expect(ev.orgId).toBe(fleet.orgId);
    expect(ev.data.device).toEqual({ id: dev(0) });
    expect(ev.data.readings.length).toBeGreaterThan(0);
    expect(ofDevice('deviceStatusChanged', dev(0)).some((e) => (e.data as { online: boolean }).online === true)).toBe(true);
    const q = new Queue(RULE_EVAL_QUEUE, { connection: redis, prefix: `${prefix}bull` });
    const jobs = await q.getJobs(['waiting', 'active', 'completed', 'delayed']);
    expect(jobs.length).toBeGreaterThan(0);
    expect(jobs[0]?.data.orgId).toBe(fleet.orgId);
    await q.close();
  });

  it('should not overwrite a newer latest value with an older reading', async () => {
    await send(`devices/${dev(0)}/telemetry`, { ts: Date.now() - 3_600_000, values: { temp: -99 } });
    await until(async () => (await count(`select count(*) n from device_metrics where device_id = $1 and value = -99`, [dev(0)])) === 1);
    await new Promise((r) => setTimeout(r, 100));
    expect(JSON.parse((await redis.hget(`${prefix}latest:${dev(0)}`, 'temp')) as string).v).toBe(21.5);
  });
});

describe('ingest dead letters', () => {
  it('should dead-letter every bad payload kind while storing the good readings of the same batch and staying up', async () => {
    const good = dev(1);
    const ts = Date.now() - 1000;
    const unknown = randomUUID();
    await Promise.all([
      send(`devices/${good}/telemetry`, { ts, values: { power: 1 } }),
      send(`devices/${good}/telemetry`, '{not json'),
      send(`devices/${good}/telemetry`, { ts: ts + 3, values: { mode: 'x'.repeat(1000), power: 2, temp: 3 } }),
      send(`devices/${good}/telemetry`, JSON.stringify({ ts: ts + 1, values: { pad: 'y'.repeat(3000) } })),
      send(`devices/${good}/telemetry`, { ts: ts + 2, values: { power: 'high', temp: 4 } }),
      send(`devices/${unknown}/telemetry`, { ts, values: { power: 1 } }),
      // ingest no longer subscribes to gateways/+/+ (it would match gateways/{id}/commands): a bad id is the topic error now
      send('devices/not-a-uuid/telemetry', { a: 1 }),
      send(`devices/${good}/telemetry`, { ts: 'not-a-date', values: { power: 1 } }),
      send(`devices/${good}/telemetry`, 42),
    ]);
    await until(async () => (await count('select count(*) n from dead_letters')) >= 7, 10_000, 'dead letters');
    const { rows } = await sql.query('select reason, topic, org_id, device_id, payload from dead_letters order by id');
    const reasons = rows.map((r) => r.reason).sort();
    expect(reasons).toEqual(['bad_shape', 'bad_timestamp', 'bad_topic', 'not_json', 'too_large', 'unknown_device', 'wrong_type']);
    expect(rows.find((r) => r.reason === 'unknown_device')?.org_id).toBeNull();
    expect(rows.find((r) => r.reason === 'wrong_type')).toMatchObject({ org_id: fleet.orgId, device_id: good });
    expect(rows.find((r) => r.reason === 'not_json')?.payload).toBe('{not json');
    const stored = await sql.query('select metric, value from device_metrics where device_id = $1 order by time, metric', [good]);
    expect(stored.rows.map((r) => `${r.metric}=${r.value}`).sort()).toEqual(['mode=null', 'power=1', 'power=2', 'temp=3', 'temp=4'].sort());

    const metrics = await registry.getSingleMetricAsString('rulr_ingest_dead_letters_total');
    expect(metrics).toMatch(/rulr_ingest_dead_letters_total\{reason="not_json"\} 1/);
    expect(metrics).toMatch(/rulr_ingest_dead_letters_total\{reason="unknown_device"\} 1/);

    await send(`devices/${good}/telemetry`, { ts: ts + 10, values: { power: 99 } });
    await until(async () => (await count('select count(*) n from device_metrics where device_id = $1 and value = 99', [good])) === 1);
  });
});

describe('ingest rollups', () => {
  it('should keep hourly and daily rollups equal to aggregates of the raw rows, counting a redelivered reading once', async () => {
    const d = dev(2);
    const base = Math.floor(Date.now() / 3_600_000) * 3_600_000 - 3 * 3_600_000;
    const msgs: unknown[] = [];
    for (let i = 0; i < 60; i++) msgs.push({ ts: base + i * 173_000, values: { power: (i * 37) % 101, temp: i / 3 } });
    for (const m of msgs) await send(`devices/${d}/telemetry`, m);
    await send(`devices/${d}/telemetry`, msgs[5]);
    await send(`devices/${d}/telemetry`, msgs[30]);
    await until(async () => (await count('select count(*) n from device_metrics where device_id = $1', [d])) === 120);
    await new Promise((r) => setTimeout(r, 300));
    for (const [table, unit] of [
      ['metrics_hourly', 'hour'],
      ['metrics_daily', 'day'],
    ]) {
      const raw = await sql.query(
        `select date_trunc('${unit}', time, 'UTC') as bucket, metric, min(value) min, max(value) max, sum(value) sum, count(*)::int count,
                (array_agg(value order by time desc))[1] as last, max(time) as last_time
           from device_metrics where device_id = $1 and text is null group by 1, 2 order by 1, 2`,
        [d],
      );
      const roll = await sql.query(
        `select bucket, metric, min, max, sum, count::int count, last, last_time from ${table}_live where device_id = $1 order by 1, 2`,
        [d],
      );
      expect(roll.rows.length).toBeGreaterThan(1);
      expect(roll.rows.map((r) => ({ ...r, sum: Number(r.sum.toFixed(6)) }))).toEqual(
        raw.rows.map((r) => ({ ...r, sum: Number(r.sum.toFixed(6)) })),
      );
    }
  });
});

describe('ingest device status and concentrators', () => {
  it('should mark a device offline from its status topic (last will) and online from JSON status with state', async () => {
    const d = dev(3);
    await send(`devices/${d}/status`, { online: true, state: { fw: '1.2.3' } });
    await until(async () => (await redis.hget(`${prefix}status:${d}`, 'online')) === '1');
    expect(JSON.parse((await redis.hget(`${prefix}status:${d}`, 'state')) as string)).toEqual({ fw: '1.2.3' });
    await send(`devices/${d}/status`, 'offline');
    await until(async () => (await redis.hget(`${prefix}status:${d}`, 'online')) === '0');
    await until(
      () =>
        events.some(
          (e) =>
            e.field === 'deviceStatusChanged' &&
            (e.filter as { deviceId: string }).deviceId === d &&
            (e.data as { online: boolean }).online === false,
        ),
      5000,
      'offline event',
    );
  });

  it('should mark devices offline once their profile silence timeout has passed', async () => {
    const d = dev(4);
    await send(`devices/${d}/telemetry`, { power: 5 });
    await until(async () => (await redis.hget(`${prefix}status:${d}`, 'online')) === '1');
    await ingest.pipeline.checkSilence(Date.now() + 10_000);
    expect(await redis.hget(`${prefix}status:${d}`, 'online')).toBe('1');
    expect(await ingest.pipeline.checkSilence(Date.now() + 901_000)).toBeGreaterThanOrEqual(1);
    expect(await redis.hget(`${prefix}status:${d}`, 'online')).toBe('0');
  });

  it('should store concentrator child telemetry by serial and create children on first sight when the profile allows it', async () => {
    const gw = await seedFleet(t.url, { devices: 1, isGateway: true, autoCreateChildren: true, metrics: [] });
    const g = gw.deviceIds[0] as string;
    const ts = Date.now() - 1000;
    await send(`gateways/${g}/connect`, { devices: ['LAMP-1', 'LAMP-2'] });
    await send(`gateways/${g}/telemetry`, {
      'LAMP-1': [{ ts, values: { power: 7 } }],
      'LAMP-2': { ts, values: { power: 8 } },
      'LAMP-3': { power: 9 },
    });
    await until(
      async () =>
        (await count('select count(*) n from device_metrics m join devices d on d.id = m.device_id where d.parent_id = $1', [g])) === 3,
      10_000,
      'child rows',
    );
    const kids = await sql.query('select serial, org_id, parent_id from devices where parent_id = $1 order by serial', [g]);
    expect(kids.rows.map((r) => r.serial)).toEqual(['LAMP-1', 'LAMP-2', 'LAMP-3']);
    expect(kids.rows.every((r) => r.org_id === gw.orgId)).toBe(true);
    const lamp1 = await sql.query(`select id from devices where parent_id = $1 and serial = 'LAMP-1'`, [g]);
    await until(async () => (await redis.hget(`${prefix}status:${lamp1.rows[0].id}`, 'online')) === '1');
    await send(`gateways/${g}/disconnect`, { devices: ['LAMP-1'] });
    await until(async () => (await redis.hget(`${prefix}status:${lamp1.rows[0].id}`, 'online')) === '0');
  });

  it('should dead-letter child telemetry of unknown serials when the concentrator may not create children', async () => {
    const gw = await seedFleet(t.url, { devices: 1, isGateway: true, autoCreateChildren: false, metrics: [] });
    const g = gw.deviceIds[0] as string;
    await send(`gateways/${g}/telemetry`, { NOPE: { power: 1 } });
    await until(
      async () => (await count(`select count(*) n from dead_letters where reason = 'unknown_child' and device_id = $1`, [g])) === 1,
    );
    expect(await count('select count(*) n from devices where parent_id = $1', [g])).toBe(0);
  });
});
