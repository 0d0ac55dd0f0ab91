import { COMMAND_REPLY_FILTERS } from './commands.js';
import { isUuid, reject } from './contract.js';

/**
 * The MQTT topics between devices and the platform (the README's device section documents them
 * with their payloads). Devices and concentrators publish; ingest subscribes with shared
 * subscriptions ({@link sharedSubscription} of each {@link INGEST_TOPIC_FILTERS}) and parses each
 * message's topic with {@link parseTopic}. Payload parsing stays with ingest (ingest/parse.ts).
 *
 * - `devices/{deviceId}/telemetry`, `devices/{deviceId}/status`: one device;
 * - `gateways/{gatewayId}/connect|disconnect|telemetry|status`: a concentrator for its children;
 * - `devices/{deviceId}/commands/reply`, `gateways/{gatewayId}/commands/reply`: command replies
 *   (payloads in ./commands.ts). The platform's own `…/commands` topics are not subscribed to.
 *
 * Ids are device uuids (case-insensitive; parsed to lower case).
 */

const CONTRACT = 'mqtt-topics';

export const DEVICE_CHANNELS = ['telemetry', 'status'] as const;
export type DeviceChannel = (typeof DEVICE_CHANNELS)[number];
export const GATEWAY_CHANNELS = ['connect', 'disconnect', 'telemetry', 'status'] as const;
export type GatewayChannel = (typeof GATEWAY_CHANNELS)[number];

/** A topic a device or concentrator publishes on. */
export type Topic =
  | { kind: 'device'; deviceId: string; channel: DeviceChannel | 'reply' }
  | { kind: 'gateway'; gatewayId: string; channel: GatewayChannel | 'reply' };

export const deviceTopic = (deviceId: string, channel: DeviceChannel) => `devices/${deviceId}/${channel}`;
export const gatewayTopic = (gatewayId: string, channel: GatewayChannel) => `gateways/${gatewayId}/${channel}`;

/** The topic filters ingest subscribes to (each covers one or more topics of {@link Topic}). */
export const INGEST_TOPIC_FILTERS = [
  'devices/+/telemetry',
  'devices/+/status',
  // one filter per channel: `gateways/+/+` would also match the platform's `gateways/{id}/commands`
  ...GATEWAY_CHANNELS.map((c) => `gateways/+/${c}` as const),
  ...COMMAND_REPLY_FILTERS,
] as const;

/** An MQTT v5 shared subscription: subscribers of one `group` split the messages of `filter`. */
export const sharedSubscription = (group: string, filter: string) => `$share/${group}/${filter}`;

const DEVICE = new Set<string>(DEVICE_CHANNELS);
const GATEWAY = new Set<string>(GATEWAY_CHANNELS);

/**
 * A topic of the contract; anything else (another shape, an unknown channel, an id that is not a
 * uuid) throws a counted ContractError. Ingest dead-letters those as `bad_topic`.
 */
export function parseTopic(topic: string): Topic {
  const p = topic.split('/');
  const reply = p.length === 4 && p[2] === 'commands' && p[3] === 'reply';
  if (p.length !== 3 && !reply) return reject(CONTRACT, 'not <devices|gateways>/<id>/<channel>');
  const [root, rawId, channel] = p as [string, string, string];
  if (!isUuid(rawId)) return reject(CONTRACT, 'the id is not a uuid');
  const id = rawId.toLowerCase();
  if (reply && root === 'devices') return { kind: 'device', deviceId: id, channel: 'reply' };
  if (reply && root === 'gateways') return { kind: 'gateway', gatewayId: id, channel: 'reply' };
  if (root === 'devices' && DEVICE.has(channel)) return { kind: 'device', deviceId: id, channel: channel as DeviceChannel };
  if (root === 'gateways' && GATEWAY.has(channel)) return { kind: 'gateway', gatewayId: id, channel: channel as GatewayChannel };
  return reject(CONTRACT, `unknown topic ${root}/…/${channel.slice(0, 32)}`);
}
