import { DEVICE_CHANNELS, GATEWAY_CHANNELS, INGEST_TOPIC_FILTERS, sharedSubscription } from './contracts/mqtt-topics.js';
import { PROVISION_REQUEST_FILTER } from './contracts/provisioning.js';

/**
 * The one MQTT policy: who may publish and subscribe to what. Pure; both brokers apply it — EMQX
 * through ingest's HTTP authentication and authorization endpoints (which call {@link allows} and
 * send {@link emqxAcl}), Mosquitto through the dynamic-security roles and the ACL file generated
 * from it ({@link dynsecRoles}, {@link mosquittoAclFile}; docs/broker-auth.md explains the split).
 *
 * - a device publishes only `devices/{id}/telemetry`, `/status`, `/commands/reply` and subscribes
 *   only to `devices/{id}/commands`, by exact topic (no wildcards);
 * - a concentrator (a device whose profile is a gateway) has a device's rights for its own id, and
 *   the same for `gateways/{id}/…` (`connect`, `disconnect`, `telemetry`, `status`, `commands/reply`;
 *   subscribes to `gateways/{id}/commands`);
 * - ingest subscribes, through its shared-subscription group, to what devices publish and to
 *   provisioning requests, and publishes provisioning answers;
 * - workers publish commands;
 * - a provisioning client (EMQX only) publishes its request and reads its answer, on its client id.
 *
 * Nobody is a superuser; anything not granted is refused.
 */

export type Principal =
  | { kind: 'device'; deviceId: string }
  | { kind: 'gateway'; deviceId: string }
  | { kind: 'ingest'; group: string }
  | { kind: 'workers' }
  | { kind: 'provisioner'; clientId: string };

export type MqttAction = 'publish' | 'subscribe';

/** What one principal may do: topic filters it may publish to, filters it may subscribe to (exactly). */
export interface Grants {
  /** topic filters (`+` in a service's grants) a published topic must match */
  publish: string[];
  /** filters a subscription must equal, character for character */
  subscribe: string[];
  /** filters of the messages it may receive (what its subscriptions deliver) */
  receive: string[];
}

/** The topics of the device-to-platform command reply and the platform-to-device commands (issue 12). */
const COMMANDS = 'commands';
const COMMAND_REPLY = 'commands/reply';

const deviceGrants = (id: string): Grants => ({
  publish: [...DEVICE_CHANNELS.map((c) => `devices/${id}/${c}`), `devices/${id}/${COMMAND_REPLY}`],
  subscribe: [`devices/${id}/${COMMANDS}`],
  receive: [`devices/${id}/${COMMANDS}`],
});

const gatewayOnlyGrants = (id: string): Grants => ({
  publish: [...GATEWAY_CHANNELS.map((c) => `gateways/${id}/${c}`), `gateways/${id}/${COMMAND_REPLY}`],
  subscribe: [`gateways/${id}/${COMMANDS}`],
  receive: [`gateways/${id}/${COMMANDS}`],
});

const merge = (...g: Grants[]): Grants => ({
  publish: g.flatMap((x) => x.publish),
  subscribe: g.flatMap((x) => x.subscribe),
  receive: g.flatMap((x) => x.receive),
});

/** The topic filters ingest consumes: what devices and concentrators publish, and provisioning requests. */
export const INGEST_RECEIVES: readonly string[] = [
  ...deviceGrants('+').publish,
  ...gatewayOnlyGrants('+').publish,
  PROVISION_REQUEST_FILTER,
];

/** The filters ingest subscribes to (each through `$share/<group>/`). */
export const ingestSubscriptions = (): string[] => [
  ...new Set([...INGEST_TOPIC_FILTERS, `devices/+/${COMMAND_REPLY}`, `gateways/+/${COMMAND_REPLY}`, PROVISION_REQUEST_FILTER]),
];

/** Everything `p` may do. */
export function grants(p: Principal): Grants {
  switch (p.kind) {
    case 'device':
      return deviceGrants(p.deviceId);
    case 'gateway':
      return merge(deviceGrants(p.deviceId), gatewayOnlyGrants(p.deviceId));
    case 'ingest': {
      const subs = ingestSubscriptions();
      return {
        publish: ['provision/+/response'],
        // EMQX authorizes a shared subscription on its topic filter, Mosquitto on the whole `$share/…` string
        subscribe: [...subs, ...subs.map((f) => sharedSubscription(p.group, f))],
        receive: [...INGEST_RECEIVES],
      };
    }
    case 'workers':
      return { publish: [`devices/+/${COMMANDS}`, `gateways/+/${COMMANDS}`], subscribe: [], receive: [] };
    case 'provisioner':
      return {
        publish: [`provision/${p.clientId}/request`],
        subscribe: [`provision/${p.clientId}/response`],
        receive: [`provision/${p.clientId}/response`],
      };
  }
}

/** Whether `topic` (a topic name, no wildcards) matches the MQTT filter `filter`. */
export function topicMatches(filter: string, topic: string): boolean {
  // a filter without wildcards matches only itself (every device grant: no splitting on the hot path)
  if (!filter.includes('+') && !filter.includes('#')) return filter === topic;
  if (topic.startsWith('$') !== filter.startsWith('$')) return false;
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return i === f.length - 1;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

/** What follows `devices/{id}/` (and for a concentrator `gateways/{id}/`) in the topics it may publish to. */
const OWN_PUBLISH = {
  devices: new Set<string>([...DEVICE_CHANNELS, COMMAND_REPLY]),
  gateways: new Set<string>([...GATEWAY_CHANNELS, COMMAND_REPLY]),
};

/**
 * {@link grantsAllow} for a device or concentrator whose id has no wildcard character, without
 * building its grants at every authorization: its grants are exact topics `<root>/<id>/<suffix>`,
 * so a topic is allowed exactly when it is one of them, character for character.
 */
function allowsOwn(gateway: boolean, id: string, action: MqttAction, topic: string): boolean {
  const root = topic.startsWith('devices/') ? 'devices' : gateway && topic.startsWith('gateways/') ? 'gateways' : undefined;
  if (root === undefined) return false;
  const at = root.length + 1;
  if (!topic.startsWith(id, at) || topic.charCodeAt(at + id.length) !== 47 /* '/' */) return false;
  const rest = topic.slice(at + id.length + 1);
  return action === 'publish' ? OWN_PUBLISH[root].has(rest) : rest === COMMANDS;
}

const isTopicName = (t: string) => t.length > 0 && t.length <= 65535 && !t.includes('+') && !t.includes('#') && !t.includes('\u0000');

/**
 * Whether `p` may `action` on `topic`: a publish to a topic name matching one of its publish grants,
 * a subscription to exactly one of its subscribe grants. Anything else, malformed topics included, is refused.
 */
export function allows(p: Principal, action: MqttAction, topic: string): boolean {
  if (typeof topic !== 'string' || topic.length === 0 || topic.includes('\u0000')) return false;
  if ((p.kind === 'device' || p.kind === 'gateway') && !p.deviceId.includes('+') && !p.deviceId.includes('#')) {
    return allowsOwn(p.kind === 'gateway', p.deviceId, action, topic);
  }
  return grantsAllow(p, action, topic);
}

/** {@link allows} by the principal's {@link grants} (every principal; the device fast path is tested equal to it). */
export function grantsAllow(p: Principal, action: MqttAction, topic: string): boolean {
  if (typeof topic !== 'string' || topic.length === 0 || topic.includes('\u0000')) return false;
  const g = grants(p);
  if (action === 'publish') return isTopicName(topic) && g.publish.some((f) => topicMatches(f, topic));
  return g.subscribe.includes(topic);
}

/** One rule of an EMQX 5.8+ authentication answer's `acl` (new format, see emqx docs "Access Control List"). */
export interface EmqxAclRule {
  permission: 'allow' | 'deny';
  action: 'publish' | 'subscribe' | 'all';
  topic: string;
}

/**
 * `p`'s rights as EMQX ACL rules: publishes by filter, subscriptions by exact filter (`eq`), then
 * deny everything else, `$`-topics included, so nothing falls through to other authorizers.
 */
export function emqxAcl(p: Principal): EmqxAclRule[] {
  const g = grants(p);
  return [
    ...g.publish.map((topic): EmqxAclRule => ({ permission: 'allow', action: 'publish', topic })),
    ...g.subscribe.map((topic): EmqxAclRule => ({ permission: 'allow', action: 'subscribe', topic: `eq ${topic}` })),
    { permission: 'deny', action: 'all', topic: '#' },
    { permission: 'deny', action: 'all', topic: '$SYS/#' },
  ];
}

/* ---------------------------------------------------------------------------------------------
 * Mosquitto. Dynamic security in Mosquitto 2.0 has no per-client topic substitution and rewrites its
 * whole JSON file on every command, so a role per device would double the commands and the file of
 * a 100,000-device fleet. Instead: device identity from dynamic security (a client per credential,
 * pinned to the device id as its MQTT client id), topic rights from the ACL file's `%c` patterns
 * (the same templates, with the client id for the device id), and the device/concentrator
 * difference from two shared dynamic-security roles that deny a plain device the gateway topics.
 * Dynamic security decides first; with its defaults set to deny, what it does not match is left to
 * the ACL file.
 * ------------------------------------------------------------------------------------------- */

/** Dynamic-security role names the platform manages. */
export const DYNSEC_ROLES = {
  device: 'rulr-device',
  gateway: 'rulr-gateway',
  ingest: 'rulr-ingest',
  workers: 'rulr-workers',
} as const;

/** Dynamic security's defaults, so that what its roles do not match goes to the ACL file, or is refused. */
export const DYNSEC_DEFAULT_ACCESS = [
  { acltype: 'publishClientSend', allow: false },
  { acltype: 'publishClientReceive', allow: false },
  { acltype: 'subscribe', allow: false },
  { acltype: 'unsubscribe', allow: true },
] as const;

export type DynsecAclType = 'publishClientSend' | 'publishClientReceive' | 'subscribeLiteral' | 'subscribePattern';
export interface DynsecAcl {
  acltype: DynsecAclType;
  topic: string;
  allow: boolean;
}
export interface DynsecRole {
  rolename: string;
  acls: DynsecAcl[];
}

/** The roles the sync keeps in dynamic security, for ingest's shared-subscription `group`. */
export function dynsecRoles(group: string): DynsecRole[] {
  // the gateway-only topics of any device, which a plain device's role denies
  const gatewayOnly = gatewayOnlyGrants('+');
  const ingest = grants({ kind: 'ingest', group });
  const workers = grants({ kind: 'workers' });
  return [
    {
      rolename: DYNSEC_ROLES.device,
      acls: [
        ...gatewayOnly.publish.map((topic): DynsecAcl => ({ acltype: 'publishClientSend', topic, allow: false })),
        ...gatewayOnly.receive.map((topic): DynsecAcl => ({ acltype: 'publishClientReceive', topic, allow: false })),
        { acltype: 'publishClientSend', topic: 'provision/#', allow: false },
        { acltype: 'publishClientReceive', topic: 'provision/#', allow: false },
      ],
    },
    {
      rolename: DYNSEC_ROLES.gateway,
      acls: [
        { acltype: 'publishClientSend', topic: 'provision/#', allow: false },
        { acltype: 'publishClientReceive', topic: 'provision/#', allow: false },
      ],
    },
    {
      rolename: DYNSEC_ROLES.ingest,
      acls: [
        ...ingestSubscriptions().map((f): DynsecAcl => ({ acltype: 'subscribeLiteral', topic: sharedSubscription(group, f), allow: true })),
        ...ingest.receive.map((topic): DynsecAcl => ({ acltype: 'publishClientReceive', topic, allow: true })),
        ...ingest.publish.map((topic): DynsecAcl => ({ acltype: 'publishClientSend', topic, allow: true })),
      ],
    },
    {
      rolename: DYNSEC_ROLES.workers,
      acls: workers.publish.map((topic): DynsecAcl => ({ acltype: 'publishClientSend', topic, allow: true })),
    },
  ];
}

/**
 * The Mosquitto ACL file (`acl_file`): the device and concentrator grants with `%c` (the client id,
 * which dynamic security pins to the device id) for the id. `write` for publishes, `read` for what
 * may be delivered (Mosquitto checks reads per message, so a subscription to another device's
 * topic is accepted and delivers nothing).
 */
export function mosquittoAclFile(): string {
  const g = grants({ kind: 'gateway', deviceId: '%c' });
  return [
    '# Generated from lib/mqtt-policy.ts (`npx tsx scripts/broker-config.ts` writes deploy/mosquitto/acl); do not edit by hand.',
    '# Device and concentrator topic rights: %c is the MQTT client id, which dynamic security pins',
    '# to the device id of the credential. Plain devices are denied the gateways/ topics by their',
    '# dynamic-security role (rulr-device); services get their rights from their roles.',
    ...g.publish.map((t) => `pattern write ${t}`),
    ...g.receive.map((t) => `pattern read ${t}`),
    '',
  ].join('\n');
}
