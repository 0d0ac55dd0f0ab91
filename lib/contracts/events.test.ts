import { describe, expect, it } from 'vitest';
import { rejectedCount } from './contract.js';
import {
  alarmChangedEvent,
  commandJobUpdatedEvent,
  deviceStatusChangedEvent,
  encodeEvent,
  eventsChannel,
  parseEvents,
  type RealtimeEvent,
  telemetryUpdatedEvent,
} from './events.js';

const ORG = '0a1b2c3d-4e5f-6789-abcd-ef0123456789';
const DEVICE = '12345678-9abc-def0-1234-56789abcdef0';
const good: RealtimeEvent = {
  field: 'telemetryUpdated',
  orgId: ORG,
  filter: { deviceId: DEVICE },
  data: { x: 1 },
  coalesce: DEVICE,
  at: 5,
};

describe('events contract', () => {
  it('names one channel per organization under the prefix', () => {
    expect(eventsChannel('p:', ORG)).toBe(`p:events:${ORG}`);
  });

  it('parses what its builders write, one envelope or an array of them', () => {
    expect(parseEvents(encodeEvent(good))).toEqual({ events: [good], invalid: 0 });
    const built = [
      telemetryUpdatedEvent({ orgId: ORG, deviceId: DEVICE, siteId: null, sitePath: [], readings: [] }, 1),
      deviceStatusChangedEvent({ orgId: ORG, deviceId: DEVICE, siteId: 's', sitePath: ['s'] }, true, 1000, 2),
      alarmChangedEvent(ORG, 'raised', { id: 'a', deviceId: DEVICE, severity: 'minor' }, { siteId: null, sitePath: null }, 3),
    ];
    const { events, invalid } = parseEvents(`[${built.join(',')}]`);
    expect(invalid).toBe(0);
    expect(events.map((e) => e.field)).toEqual(['telemetryUpdated', 'deviceStatusChanged', 'alarmChanged']);
  });

  it('rejects corrupt JSON, wrong types and missing fields, counting each, and keeps the good elements of an array', async () => {
    const before = await rejectedCount('events');
    expect(parseEvents('{"field":')).toEqual({ events: [], invalid: 1 });
    expect(parseEvents(`${encodeEvent(good)} trailing junk`)).toEqual({ events: [], invalid: 1 });
    const bad = [
      { ...good, field: 7 },
      { ...good, orgId: null },
      { ...good, filter: 'deviceId' },
      { ...good, filter: [DEVICE] },
      { ...good, coalesce: 1 },
      { ...good, at: 'now' },
      { field: 'telemetryUpdated', orgId: ORG },
      'an event',
      null,
    ];
    const { events, invalid } = parseEvents(JSON.stringify([good, ...bad, good]));
    expect(events).toEqual([good, good]);
    expect(invalid).toBe(bad.length);
    expect(await rejectedCount('events')).toBe(before + 2 + bad.length);
  });

  it('ignores unknown extra properties, so a newer producer does not break an older gateway', () => {
    const { events } = parseEvents(JSON.stringify({ ...good, version: 2, extra: { any: 'thing' } }));
    expect(events).toHaveLength(1);
  });

  it('writes telemetryUpdated with every reading of the device, as JSON', () => {
    const ts = Date.UTC(2026, 10, 27, 8, 0, 0, 5);
    const d = {
      orgId: ORG,
      deviceId: DEVICE,
      siteId: null,
      sitePath: ['north', 'lamp "7"'],
      readings: [
        { metric: 'power', ts, value: 12.5, text: null },
        { metric: 'on', ts, value: 1, text: 'true' },
        { metric: 'mode', ts: ts + 1000, value: null, text: 'dim "50%"\n⚡\\' },
        { metric: 'energy', ts: ts + 1000, value: -0, text: null },
        { metric: 'tiny', ts: ts + 2000, value: 1e-7, text: null },
      ],
    };
    const json = telemetryUpdatedEvent(d, 42);
    expect(JSON.parse(json)).toEqual({
      field: 'telemetryUpdated',
      orgId: d.orgId,
      filter: { deviceId: d.deviceId, siteId: null, sitePath: ['north', 'lamp "7"'] },
      data: {
        device: { id: d.deviceId },
        readings: [
          { metric: 'power', ts: '2026-11-27T08:00:00.005Z', value: 12.5, text: null },
          { metric: 'on', ts: '2026-11-27T08:00:00.005Z', value: 1, text: 'true' },
          { metric: 'mode', ts: '2026-11-27T08:00:01.005Z', value: null, text: 'dim "50%"\n⚡\\' },
          { metric: 'energy', ts: '2026-11-27T08:00:01.005Z', value: 0, text: null },
          { metric: 'tiny', ts: '2026-11-27T08:00:02.005Z', value: 1e-7, text: null },
        ],
      },
      coalesce: d.deviceId,
      at: 42,
    });
    // Same text as JSON.stringify of that object (key order included).
    expect(json).toBe(JSON.stringify(JSON.parse(json)));
  });

  it('writes deviceStatusChanged with the last-seen time as ISO 8601, or null for a device never seen', () => {
    const d = { orgId: ORG, deviceId: DEVICE, siteId: 's2', sitePath: ['s1', 's2'] };
    expect(JSON.parse(deviceStatusChangedEvent(d, false, 0, 9))).toEqual({
      field: 'deviceStatusChanged',
      orgId: ORG,
      filter: { deviceId: DEVICE, siteId: 's2', sitePath: ['s1', 's2'] },
      data: { device: { id: DEVICE }, online: false, lastSeen: null },
      at: 9,
    });
    expect(JSON.parse(deviceStatusChangedEvent(d, true, 1000, 9)).data.lastSeen).toBe('1970-01-01T00:00:01.000Z');
  });

  it('writes alarmChanged with the alarm as an entity reference and a site-path filter', () => {
    const ev = JSON.parse(
      alarmChangedEvent('o', 'raised', { id: 'a', deviceId: 'd', severity: 'major' }, { siteId: 's2', sitePath: 's1.s2' }, 0),
    );
    expect(ev).toEqual({
      field: 'alarmChanged',
      orgId: 'o',
      filter: { deviceId: 'd', siteId: 's2', sitePath: ['s1', 's2'], severity: 'MAJOR' },
      data: { kind: 'RAISED', alarm: { id: 'a' }, at: '1970-01-01T00:00:00.000Z' },
      at: 0,
    });
  });

  it('writes commandJobUpdated with the job as an entity reference, filterable by job and coalesced per job', () => {
    const raw = commandJobUpdatedEvent({ id: 'j', orgId: ORG, status: 'ABORTED' }, 0);
    expect(JSON.parse(raw)).toEqual({
      field: 'commandJobUpdated',
      orgId: ORG,
      filter: { jobId: 'j' },
      data: { status: 'ABORTED', job: { id: 'j' }, at: '1970-01-01T00:00:00.000Z' },
      coalesce: 'job:j',
      at: 0,
    });
    expect(parseEvents(raw)).toEqual({ events: [JSON.parse(raw)], invalid: 0 });
  });
});
