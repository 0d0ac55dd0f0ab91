import { describe, expect, it } from 'vitest';
import { rejectionOf } from '../../test/support/contracts.js';
import { handoffKey, openHandoff, sealHandoff } from './broker-handoff.js';
import { rejectedCount } from './contract.js';

const KEY = handoffKey('rulr-test-secret-0123456789-0123456789');
const USER = '0b0c4a6e-2d0a-4d6f-9a57-1f0b7c3a9e10.0a1b2c3d';

describe('broker hand-off contract', () => {
  it('opens what it sealed, and seals the same secret differently each time', () => {
    const a = sealHandoff(KEY, USER, 's3cret');
    expect(openHandoff(KEY, USER, a)).toBe('s3cret');
    expect(sealHandoff(KEY, USER, 's3cret').equals(a)).toBe(false);
    expect(a.includes(Buffer.from('s3cret'))).toBe(false);
  });

  it('refuses a hand-off for another username, under another key, altered or cut short, counting each', async () => {
    const before = await rejectedCount('broker-handoff');
    const blob = sealHandoff(KEY, USER, 's3cret');
    const flipped = Buffer.from(blob);
    flipped[14] = (flipped[14] as number) ^ 1;
    expect(rejectionOf(() => openHandoff(KEY, `${USER}x`, blob))).toBe('does not open with this key and username');
    expect(rejectionOf(() => openHandoff(handoffKey('another-secret-0123456789-0123456789'), USER, blob))).toBe(
      'does not open with this key and username',
    );
    expect(rejectionOf(() => openHandoff(KEY, USER, flipped))).toBe('does not open with this key and username');
    expect(rejectionOf(() => openHandoff(KEY, USER, blob.subarray(0, 20)))).toBe('too short');
    expect(await rejectedCount('broker-handoff')).toBe(before + 4);
  });
});
