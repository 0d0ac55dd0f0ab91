import { describe, expect, it } from 'vitest';
import { rejectionOf } from '../../test/support/contracts.js';
import { rejectedCount } from './contract.js';
import { deviceTopic, gatewayTopic, INGEST_TOPIC_FILTERS, parseTopic, sharedSubscription } from './mqtt-topics.js';

const ID = '0b0c4a6e-2d0a-4d6f-9a57-1f0b7c3a9e10';

describe('MQTT topics contract', () => {
  it('parses the device and gateway topics its builders write, ids in lower case', () => {
    expect(parseTopic(deviceTopic(ID, 'telemetry'))).toEqual({ kind: 'device', deviceId: ID, channel: 'telemetry' });
    expect(parseTopic(deviceTopic(ID.toUpperCase(), 'status'))).toEqual({ kind: 'device', deviceId: ID, channel: 'status' });
    for (const channel of ['connect', 'disconnect', 'telemetry', 'status'] as const) {
      expect(parseTopic(gatewayTopic(ID, channel))).toEqual({ kind: 'gateway', gatewayId: ID, channel });
    }
  });

  it('rejects topics outside the contract with a reason, counting each', async () => {
    const before = await rejectedCount('mqtt-topics');
    const reasonOf = (topic: string) => rejectionOf(() => parseTopic(topic));
    expect(reasonOf('devices/not-a-uuid/telemetry')).toBe('the id is not a uuid');
    expect(reasonOf(`devices/${ID}/commands`)).toMatch(/^unknown topic/);
    expect(reasonOf(`gateways/${ID}/reboot`)).toMatch(/^unknown topic/);
    expect(reasonOf(`sensors/${ID}/telemetry`)).toMatch(/^unknown topic/);
    expect(reasonOf(`devices/${ID}/telemetry/extra`)).toBe('not <devices|gateways>/<id>/<channel>');
    expect(reasonOf(`/devices/${ID}/telemetry`)).toBe('not <devices|gateways>/<id>/<channel>');
    expect(reasonOf('')).toBe('not <devices|gateways>/<id>/<channel>');
    expect(await rejectedCount('mqtt-topics')).toBe(before + 7);
  });

  it('subscribes ingest to every topic of the contract through one shared group', () => {
    expect(INGEST_TOPIC_FILTERS.map((f) => sharedSubscription('ingest', f))).toEqual([
      '$share/ingest/devices/+/telemetry',
      '$share/ingest/devices/+/status',
      '$share/ingest/gateways/+/connect',
      '$share/ingest/gateways/+/disconnect',
      '$share/ingest/gateways/+/telemetry',
      '$share/ingest/gateways/+/status',
      '$share/ingest/devices/+/commands/reply',
      '$share/ingest/gateways/+/commands/reply',
    ]);
  });

  it("parses command reply topics and never matches the platform's own command topics", () => {
    expect(parseTopic(`devices/${ID}/commands/reply`)).toEqual({ kind: 'device', deviceId: ID, channel: 'reply' });
    expect(parseTopic(`gateways/${ID}/commands/reply`)).toEqual({ kind: 'gateway', gatewayId: ID, channel: 'reply' });
    expect(rejectionOf(() => parseTopic(`gateways/${ID}/commands`))).toMatch(/^unknown topic/);
    // MQTT filter semantics: `+` is one level; none of ingest's filters matches `…/commands`
    const matches = (filter: string, topic: string) => {
      const f = filter.split('/');
      const t = topic.split('/');
      return f.length === t.length && f.every((x, i) => x === '+' || x === t[i]);
    };
    for (const topic of [`gateways/${ID}/commands`, `devices/${ID}/commands`])
      expect(INGEST_TOPIC_FILTERS.filter((f) => matches(f, topic))).toEqual([]);
  });
});
