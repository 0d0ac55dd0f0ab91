import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STREET_LIGHT_METRICS } from '../cli/seed.js';
import { dimLevel, lightReading, loadSimulatedDevices, localHour, simulate } from '../cli/simulate.js';
import {
  decodeJson,
  gatewayDevices,
  gatewayStatus,
  gatewayTelemetry,
  parseProfileMetrics,
  parseStatus,
  telemetryEntries,
  validateEntries,
} from '../ingest/parse.js';
import { parseTopic } from '../lib/contracts/mqtt-topics.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { MQTT_URL } from './support/env.js';
import { insertDevice, insertOrg, insertSite } from './support/telemetry-fixtures.js';

// The seed's own street-light profile, so the simulator is checked against what the demo fleet uses.
const PROFILE = STREET_LIGHT_METRICS;

let tdb: TestDatabase;
const slug = `sim-${randomBytes(3).toString('hex')}`;
const prefix = `t${randomBytes(4).toString('hex')}/`;
const ids: string[] = [];
let gatewayId: string;

beforeAll(async () => {
  tdb = await createTestDatabase();
  const org = await insertOrg(tdb.db, slug);
  const site = await insertSite(tdb.db, org, 'street');
  const { rows } = await sql<{ id: string }>`insert into device_profiles (org_id, name, metrics)
    values (${org}, 'Street-light controller', ${JSON.stringify(PROFILE)}::jsonb) returning id`.execute(tdb.db);
  const profileId = rows[0]?.id as string;
  for (let i = 0; i < 6; i++) ids.push(await insertDevice(tdb.db, org, `SL-${i}`, site.id));
  await sql`update devices set profile_id = ${profileId}, attributes = '{"ratedPowerW": 120}'`.execute(tdb.db);
  const { rows: gw } = await sql<{ id: string }>`insert into device_profiles (org_id, name, is_gateway)
    values (${org}, 'Concentrator', true) returning id`.execute(tdb.db);
  gatewayId = await insertDevice(tdb.db, org, 'GW-1', site.id);
  await sql`update devices set profile_id = ${gw[0]?.id as string} where id = ${gatewayId}`.execute(tdb.db);
  // SL-4 and SL-5 hang behind the concentrator
  await sql`update devices set parent_id = ${gatewayId} where serial in ('SL-4', 'SL-5')`.execute(tdb.db);
  await insertDevice(tdb.db, org, 'SL-retired', site.id, { decommissioned: true });
});

afterAll(async () => {
  await tdb.drop();
});

describe('fleet simulator', () => {
  it('lights lamps at night, dims them after midnight and keeps them off by day', () => {
    const noon = Date.UTC(2026, 5, 1, 12);
    expect(dimLevel(localHour(noon, 0))).toBe(0);
    expect(dimLevel(localHour(Date.UTC(2026, 5, 1, 20), 0))).toBe(100);
    expect(dimLevel(localHour(Date.UTC(2026, 5, 1, 2), 0))).toBe(50);
    // 12:00 UTC is 21:00 local solar time at 135° E
    expect(dimLevel(localHour(noon, 135))).toBe(100);
    const full = lightReading(120, 100, () => 0.5);
    const dimmed = lightReading(120, 50, () => 0.5);
    const off = lightReading(120, 0, () => 0.5);
    expect(full).toMatchObject({ voltage: 230, power: 120, lampState: true });
    expect(dimmed.power).toBeCloseTo(66, 1);
    expect(off.lampState).toBe(false);
    expect(off.power).toBeLessThan(1);
    expect(full.current).toBeCloseTo(120 / 230, 3);
  });

  it('publishes telemetry and status that ingest parses, plus the requested share of malformed messages', async () => {
    const devices = await loadSimulatedDevices(tdb.db, slug, 100);
    expect(devices.map((d) => d.serial)).toEqual(['SL-0', 'SL-1', 'SL-2', 'SL-3', 'SL-4', 'SL-5']);
    expect(devices.filter((d) => d.parentId).map((d) => d.serial)).toEqual(['SL-4', 'SL-5']);
    const sub = await mqtt.connectAsync(MQTT_URL, { clientId: `sim-test-${randomBytes(4).toString('hex')}`, protocolVersion: 5 });
    const got: { topic: string; payload: Buffer }[] = [];
    sub.on('message', (topic, payload) => got.push({ topic, payload }));
    await sub.subscribeAsync(`${prefix}#`, { qos: 1 });
    const lines: string[] = [];
    const res = await simulate(devices, MQTT_URL, {
      devices: 6,
      rate: 100,
      durationS: 2,
      badFraction: 0.2,
      topicPrefix: prefix,
      connections: 2,
      reportEveryS: 1,
      log: (l) => lines.push(l),
    });
    for (let i = 0; i < 40 && got.length < res.sent + res.statusMessages; i++) await new Promise((r) => setTimeout(r, 50));
    await sub.endAsync();

    expect(res.sent).toBeGreaterThanOrEqual(150);
    expect(res.sent).toBeLessThanOrEqual(210);
    expect(got).toHaveLength(res.sent + res.statusMessages);
    expect(lines.some((l) => /sent \d+ .* msg\/s/.test(l))).toBe(true);
    const defs = parseProfileMetrics(PROFILE);
    let good = 0;
    let bad = 0;
    const energy = new Map<string, number[]>();
    const connected: string[] = [];
    for (const m of got) {
      const now = Date.now();
      try {
        const topic = parseTopic(m.topic.slice(prefix.length));
        let perDevice: [string, ReturnType<typeof telemetryEntries>][] = [];
        if (topic.kind === 'device') {
          if (!ids.includes(topic.deviceId)) throw new Error('unknown device');
          if (topic.channel === 'status') {
            expect(typeof parseStatus(m.payload, 65536).online).toBe('boolean');
            continue;
          }
          perDevice = [[topic.deviceId, telemetryEntries(decodeJson(m.payload, 65536), now)]];
        } else {
          expect(topic.gatewayId).toBe(gatewayId);
          const doc = decodeJson(m.payload, 65536);
          if (topic.channel === 'connect') {
            connected.push(...gatewayDevices(doc));
            continue;
          }
          if (topic.channel === 'status') {
            for (const serial of gatewayStatus(doc).keys()) expect(['SL-4', 'SL-5']).toContain(serial);
            continue;
          }
          perDevice = [...gatewayTelemetry(doc, now)].map(([serial, entries]) => {
            expect(['SL-4', 'SL-5']).toContain(serial);
            return [serial, entries];
          });
        }
        for (const [key, entries] of perDevice) {
          const v = validateEntries(entries, defs);
          if (v.wrongType.length || v.unknownMetrics || v.outOfRange) throw new Error('invalid readings');
          expect(v.readings.map((r) => r.metric).sort()).toEqual([
            'current',
            'dimLevel',
            'energy',
            'lampFault',
            'lampState',
            'power',
            'voltage',
          ]);
          const e = v.readings.find((r) => r.metric === 'energy')?.value as number;
          energy.set(key, [...(energy.get(key) ?? []), e]);
          good++;
        }
      } catch {
        bad++;
      }
    }
    expect(connected.sort()).toEqual(['SL-4', 'SL-5']);
    expect([...energy.keys()]).toEqual(expect.arrayContaining(['SL-4', 'SL-5', ids[0]]));
    expect(good + bad).toBe(res.sent);
    expect(bad).toBe(res.bad);
    expect(bad / res.sent).toBeGreaterThan(0.05);
    expect(bad / res.sent).toBeLessThan(0.4);
    for (const series of energy.values()) expect([...series].sort((a, b) => a - b)).toEqual(series);
  });
});
