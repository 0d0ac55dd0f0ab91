import { seal, sealingKey, sealingKeys, unseal, unsealWith } from './sealed.js';

/**
 * A notification channel's signing secret (docs/notifications.md): the rules subgraph seals it when
 * an admin sets it (`notification_channels.secret_sealed`), the workers' notifier opens it to sign
 * a webhook. Format: lib/contracts/sealed.ts under the key of purpose `notification-channel`, with
 * `<org id>/<channel id>` as associated data (a sealed secret copied to another channel or
 * organisation does not open).
 */

const CONTRACT = 'channel-secret';

/** The channel-secret key of a deployment (every role derives the same one from `RULR_SECRET`). */
export const channelSecretKey = (rulrSecret: string): Buffer => sealingKey(rulrSecret, 'notification-channel');

/** The channel-secret keys a deployment opens with, newest first (`acceptedSecrets(config)`). */
export const channelSecretKeys = (rulrSecrets: readonly string[]): Buffer[] => sealingKeys(rulrSecrets, 'notification-channel');

export const sealChannelSecret = (key: Buffer, orgId: string, channelId: string, secret: string): Buffer =>
  seal(key, `${orgId}/${channelId}`, secret);

/** Throws a counted ContractError when it was sealed for another channel, under another key, or altered. */
export const openChannelSecret = (keys: Buffer | readonly Buffer[], orgId: string, channelId: string, blob: Buffer): string =>
  unseal(CONTRACT, keys, 'channel', `${orgId}/${channelId}`, blob);

/** {@link openChannelSecret}, and which of `keys` opened it (0: the current one). */
export const openChannelSecretWith = (keys: readonly Buffer[], orgId: string, channelId: string, blob: Buffer) =>
  unsealWith(CONTRACT, keys, 'channel', `${orgId}/${channelId}`, blob);
