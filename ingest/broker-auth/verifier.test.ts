import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateDeviceSecret, hashDeviceSecret } from '../../lib/device-credentials.js';
import { createRedis, type Redis } from '../../lib/redis.js';
import { REDIS_URL } from '../../test/support/env.js';
import type { CredentialInfo } from './credentials.js';
import { SecretVerifier } from './verifier.js';

/** The device-secret verification cache in real Redis across a RULR_SECRET rotation. */
describe('SecretVerifier across a RULR_SECRET rotation', () => {
  const OLD = randomBytes(32).toString('base64url');
  const NEW = randomBytes(32).toString('base64url');
  const prefix = `rulr-test-${randomBytes(4).toString('hex')}:`;
  let redis: Redis;
  const secret = generateDeviceSecret();
  let credential: CredentialInfo;
  beforeAll(async () => {
    redis = createRedis(REDIS_URL);
    const id = randomUUID();
    credential = {
      id,
      username: `${id}.0`,
      deviceId: randomUUID(),
      orgId: randomUUID(),
      profileId: null,
      kind: 'secret',
      scheme: 'argon2id',
      hash: await hashDeviceSecret(secret),
      fingerprint: null,
      expiresAt: null,
      isGateway: false,
      decommissioned: false,
    };
  });
  afterAll(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
  });

  /** a fresh ingest process: nothing in memory, the shared cache in Redis */
  const process = (rulrSecret: string, previousSecrets: string[] = []) =>
    new SecretVerifier({ redis, prefix, rulrSecret, previousSecrets, cacheTtlS: 600, maxHashing: 4, rehash: async () => undefined });
  /** refuses to run argon2id: a verdict of 'cached' proves the cache decided */
  const noHashing = async () => false;

  it('remembers a secret verified under the previous secret, moves the entry to the new one, and never accepts a wrong secret from it', async () => {
    expect(await process(OLD).verify(credential, secret)).toBe('verified');
    const entry = await redis.getBuffer(`${prefix}device-auth:ok:${credential.id}`);
    const ttl = await redis.ttl(`${prefix}device-auth:ok:${credential.id}`);
    // a process that no longer accepts OLD cannot use the entry: it would have to run argon2id
    expect(await process(NEW).verify(credential, secret, noHashing)).toBe('limited');
    // a wrong secret gets nothing from the old entry
    expect(await process(NEW, [OLD]).verify(credential, `${secret}x`, noHashing)).toBe('limited');
    // during the rotation the old entry counts, and is written again under the new secret, TTL kept
    expect(await process(NEW, [OLD]).verify(credential, secret, noHashing)).toBe('cached');
    const moved = await redis.getBuffer(`${prefix}device-auth:ok:${credential.id}`);
    expect(moved?.equals(entry as Buffer)).toBe(false);
    expect(await redis.ttl(`${prefix}device-auth:ok:${credential.id}`)).toBeLessThanOrEqual(ttl);
    expect(await redis.ttl(`${prefix}device-auth:ok:${credential.id}`)).toBeGreaterThan(0);
    // after RULR_SECRET_PREVIOUS is emptied, the moved entry still spares argon2id
    expect(await process(NEW).verify(credential, secret, noHashing)).toBe('cached');
  });
});
