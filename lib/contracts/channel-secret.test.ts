import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { rejectionOf } from '../../test/support/contracts.js';
import { handoffKey } from './broker-handoff.js';
import { channelSecretKey, channelSecretKeys, openChannelSecret, openChannelSecretWith, sealChannelSecret } from './channel-secret.js';
import { rejectedCount } from './contract.js';

const KEY = channelSecretKey('rulr-test-secret-0123456789-0123456789');
const ORG = randomUUID();
const CHANNEL = randomUUID();

describe('channel secret contract', () => {
  it('opens what it sealed, never holds the secret in clear, and differs per seal', () => {
    const a = sealChannelSecret(KEY, ORG, CHANNEL, 'a-very-long-signing-secret');
    expect(openChannelSecret(KEY, ORG, CHANNEL, a)).toBe('a-very-long-signing-secret');
    expect(a.includes(Buffer.from('signing'))).toBe(false);
    expect(sealChannelSecret(KEY, ORG, CHANNEL, 'a-very-long-signing-secret').equals(a)).toBe(false);
  });

  it('refuses a secret copied to another channel or organisation, under another key, or altered, counting each', async () => {
    const before = await rejectedCount('channel-secret');
    const blob = sealChannelSecret(KEY, ORG, CHANNEL, 'a-very-long-signing-secret');
    const flipped = Buffer.from(blob);
    flipped[13] = (flipped[13] as number) ^ 1;
    const refusal = 'does not open with this key and channel';
    expect(rejectionOf(() => openChannelSecret(KEY, ORG, randomUUID(), blob))).toBe(refusal);
    expect(rejectionOf(() => openChannelSecret(KEY, randomUUID(), CHANNEL, blob))).toBe(refusal);
    expect(rejectionOf(() => openChannelSecret(channelSecretKey('another-secret-0123456789-0123456789'), ORG, CHANNEL, blob))).toBe(
      refusal,
    );
    expect(rejectionOf(() => openChannelSecret(KEY, ORG, CHANNEL, flipped))).toBe(refusal);
    expect(await rejectedCount('channel-secret')).toBe(before + 4);
  });

  it('opens a secret sealed under a previous RULR_SECRET while it is rotated, saying which key opened it', async () => {
    const [current, previous] = channelSecretKeys(['n'.repeat(40), 'rulr-test-secret-0123456789-0123456789']) as [Buffer, Buffer];
    expect(previous.equals(KEY)).toBe(true);
    const old = sealChannelSecret(KEY, ORG, CHANNEL, 'sealed-before-the-rotation');
    expect(openChannelSecretWith([current, previous], ORG, CHANNEL, old)).toEqual({ secret: 'sealed-before-the-rotation', keyIndex: 1 });
    expect(openChannelSecret([current, previous], ORG, CHANNEL, old)).toBe('sealed-before-the-rotation');
    const fresh = sealChannelSecret(current, ORG, CHANNEL, 'sealed-after');
    expect(openChannelSecretWith([current, previous], ORG, CHANNEL, fresh).keyIndex).toBe(0);
    // without the previous key it no longer opens, and the refusal is counted
    const before = await rejectedCount('channel-secret');
    expect(rejectionOf(() => openChannelSecret([current], ORG, CHANNEL, old))).toBe('does not open with this key and channel');
    expect(rejectionOf(() => openChannelSecret([current, channelSecretKey('x'.repeat(40))], ORG, CHANNEL, old))).toBe(
      'does not open with these keys and channel',
    );
    expect(await rejectedCount('channel-secret')).toBe(before + 2);
  });

  it('derives the same key in every role, and one of its own, not the broker hand-off key', () => {
    const secret = 's'.repeat(40);
    expect(channelSecretKey(secret).equals(channelSecretKey(secret))).toBe(true);
    expect(channelSecretKey(secret).equals(handoffKey(secret))).toBe(false);
  });
});
