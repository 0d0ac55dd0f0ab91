import { describe, expect, it } from 'vitest';
import { INGEST_TOPIC_FILTERS, sharedSubscription } from './contracts/mqtt-topics.js';
import {
  allows,
  DYNSEC_ROLES,
  dynsecRoles,
  emqxAcl,
  grants,
  grantsAllow,
  mosquittoAclFile,
  type Principal,
  topicMatches,
} from './mqtt-policy.js';

const A = '0b0c4a6e-2d0a-4d6f-9a57-1f0b7c3a9e10';
const B = '7d3e9f10-5a6b-4c7d-8e9f-0a1b2c3d4e5f';
const device: Principal = { kind: 'device', deviceId: A };
const gateway: Principal = { kind: 'gateway', deviceId: A };
const ingest: Principal = { kind: 'ingest', group: 'ingest' };
const workers: Principal = { kind: 'workers' };

describe('the MQTT policy', () => {
  it('lets a device publish only its own telemetry, status and command replies', () => {
    for (const t of ['telemetry', 'status', 'commands/reply']) {
      expect(allows(device, 'publish', `devices/${A}/${t}`), t).toBe(true);
      expect(allows(device, 'publish', `devices/${B}/${t}`), t).toBe(false);
    }
    for (const t of [
      `devices/${A}/commands`,
      `devices/${A}/other`,
      `gateways/${A}/telemetry`,
      `devices/${A}`,
      `devices/${A}/telemetry/x`,
    ]) {
      expect(allows(device, 'publish', t), t).toBe(false);
    }
  });

  it('lets a device subscribe to its own commands only, by exact topic', () => {
    expect(allows(device, 'subscribe', `devices/${A}/commands`)).toBe(true);
    for (const t of [
      `devices/${B}/commands`,
      'devices/+/commands',
      `devices/${A}/#`,
      '#',
      `devices/${A}/+`,
      '$SYS/#',
      `gateways/${A}/commands`,
    ]) {
      expect(allows(device, 'subscribe', t), t).toBe(false);
    }
  });

  it('refuses wildcards, empty topics and NUL characters in publishes', () => {
    for (const t of ['devices/+/telemetry', `devices/${A}/#`, '', `devices/${A}/telemetry\u0000`]) {
      expect(allows(gateway, 'publish', t), JSON.stringify(t)).toBe(false);
    }
  });

  it("gives a concentrator its own device topics and its own gateways/ topics, never another's", () => {
    for (const t of ['connect', 'disconnect', 'telemetry', 'status', 'commands/reply']) {
      expect(allows(gateway, 'publish', `gateways/${A}/${t}`), t).toBe(true);
      expect(allows(gateway, 'publish', `gateways/${B}/${t}`), t).toBe(false);
    }
    expect(allows(gateway, 'publish', `devices/${A}/telemetry`)).toBe(true);
    expect(allows(gateway, 'subscribe', `gateways/${A}/commands`)).toBe(true);
    expect(allows(gateway, 'subscribe', `gateways/${B}/commands`)).toBe(false);
    expect(allows(gateway, 'subscribe', 'gateways/+/commands')).toBe(false);
  });

  it('lets ingest subscribe to every topic it consumes, shared or as EMQX passes it, and publish nothing devices read', () => {
    for (const f of INGEST_TOPIC_FILTERS) {
      expect(allows(ingest, 'subscribe', sharedSubscription('ingest', f)), f).toBe(true);
      expect(allows(ingest, 'subscribe', f), f).toBe(true);
      expect(allows(ingest, 'subscribe', sharedSubscription('other', f)), f).toBe(false);
    }
    expect(allows(ingest, 'subscribe', '$share/ingest/provision/+/request')).toBe(true);
    expect(allows(ingest, 'subscribe', '#')).toBe(false);
    expect(allows(ingest, 'publish', `devices/${A}/commands`)).toBe(false);
    expect(allows(ingest, 'publish', `devices/${A}/telemetry`)).toBe(false);
    expect(allows(ingest, 'publish', 'provision/abcdefghijklmnop/response')).toBe(true);
  });

  it('lets workers publish commands to any device or concentrator and nothing else', () => {
    expect(allows(workers, 'publish', `devices/${A}/commands`)).toBe(true);
    expect(allows(workers, 'publish', `gateways/${B}/commands`)).toBe(true);
    expect(allows(workers, 'publish', `devices/${A}/telemetry`)).toBe(false);
    expect(allows(workers, 'subscribe', `devices/${A}/commands/reply`)).toBe(false);
  });

  it("keeps a provisioning client to its own client id's request and answer", () => {
    const p: Principal = { kind: 'provisioner', clientId: 'prov-0123456789abcdef' };
    expect(allows(p, 'publish', 'provision/prov-0123456789abcdef/request')).toBe(true);
    expect(allows(p, 'subscribe', 'provision/prov-0123456789abcdef/response')).toBe(true);
    expect(allows(p, 'subscribe', 'provision/+/response')).toBe(false);
    expect(allows(p, 'publish', 'provision/someone-else-0123456/request')).toBe(false);
    expect(allows(p, 'publish', `devices/${A}/telemetry`)).toBe(false);
  });

  it('matches topic filters as MQTT does', () => {
    expect(topicMatches('devices/+/commands', `devices/${A}/commands`)).toBe(true);
    expect(topicMatches('devices/+/commands', `devices/${A}/commands/reply`)).toBe(false);
    expect(topicMatches('provision/#', 'provision/x/response')).toBe(true);
    expect(topicMatches('#', '$SYS/broker/load')).toBe(false);
    expect(topicMatches('a/b', 'a')).toBe(false);
  });

  it('sends EMQX exact subscriptions and a final deny of everything, $-topics included', () => {
    const acl = emqxAcl(device);
    expect(acl).toContainEqual({ permission: 'allow', action: 'subscribe', topic: `eq devices/${A}/commands` });
    expect(acl).toContainEqual({ permission: 'allow', action: 'publish', topic: `devices/${A}/telemetry` });
    expect(acl.slice(-2)).toEqual([
      { permission: 'deny', action: 'all', topic: '#' },
      { permission: 'deny', action: 'all', topic: '$SYS/#' },
    ]);
    expect(acl.filter((r) => r.permission === 'allow')).toHaveLength(grants(device).publish.length + grants(device).subscribe.length);
  });

  it("denies a plain device's dynamic-security role exactly the gateway-only topics", () => {
    const role = dynsecRoles('ingest').find((r) => r.rolename === DYNSEC_ROLES.device);
    const denied = (type: string, t: string) => role?.acls.some((a) => a.acltype === type && !a.allow && topicMatches(a.topic, t));
    for (const t of grants(device).publish) expect(denied('publishClientSend', t), t).toBe(false);
    for (const t of grants(device).receive) expect(denied('publishClientReceive', t), t).toBe(false);
    const gatewayOnly = grants(gateway).publish.filter((t) => t.startsWith('gateways/'));
    expect(gatewayOnly.length).toBeGreaterThan(0);
    for (const t of gatewayOnly) expect(denied('publishClientSend', t.replace(A, B)), t).toBe(true);
    expect(denied('publishClientReceive', `gateways/${B}/commands`)).toBe(true);
  });

  it("writes the ACL file's patterns from a concentrator's grants with %c for the id", () => {
    const file = mosquittoAclFile();
    for (const t of grants(gateway).publish) expect(file).toContain(`pattern write ${t.replace(A, '%c')}\n`);
    expect(file).toContain('pattern read devices/%c/commands\n');
    expect(file).toContain('pattern read gateways/%c/commands\n');
    expect(file).not.toMatch(/^topic /m);
  });
});

describe('allows: the device and concentrator fast path', () => {
  const A = '3f2a1c4e-8b7d-4e6f-9a0b-1c2d3e4f5a6b';
  const B = '9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b';
  const topics = (id: string) =>
    ['devices', 'gateways', 'device', 'Devices', '$share/g/devices', ''].flatMap((root) =>
      [
        'telemetry',
        'status',
        'commands',
        'commands/reply',
        'connect',
        'disconnect',
        'commands/reply/x',
        '+',
        '#',
        '',
        'telemetry/',
      ].flatMap((rest) => [
        `${root}/${id}/${rest}`,
        `${root}/${id}${rest}`,
        `${root}/${id.slice(0, 35)}/${rest}`,
        `${root}/${id}x/${rest}`,
        `${root}//${id}/${rest}`,
      ]),
    );
  it('decides every topic as the grants do, for devices and concentrators, own and foreign ids', () => {
    for (const kind of ['device', 'gateway'] as const) {
      const p: Principal = { kind, deviceId: A };
      for (const t of [...topics(A), ...topics(B), `devices/${A}/telemetry\u0000`, 'devices/+/telemetry', 'devices/#']) {
        for (const action of ['publish', 'subscribe'] as const) {
          expect(allows(p, action, t), `${kind} ${action} ${t}`).toBe(grantsAllow(p, action, t));
        }
      }
    }
  });
  it('leaves ids with wildcard characters to the grants', () => {
    const p: Principal = { kind: 'device', deviceId: '+' };
    expect(allows(p, 'publish', 'devices/x/telemetry')).toBe(grantsAllow(p, 'publish', 'devices/x/telemetry'));
  });
});
