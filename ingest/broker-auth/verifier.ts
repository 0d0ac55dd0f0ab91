import { createHmac, hkdfSync } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { hashDeviceSecret, verifyDeviceSecret } from '../../lib/device-credentials.js';
import type { Logger } from '../../lib/logger.js';
import { counter } from '../../lib/metrics.js';
import type { Redis } from '../../lib/redis.js';
import type { CredentialInfo } from './credentials.js';

export interface VerifierOptions {
  redis: Redis;
  prefix: string;
  /** derives the key of the verification cache */
  rulrSecret: string;
  /**
   * RULR_SECRET_PREVIOUS: entries written under a previous secret still count (and are written
   * again under the current one), so a RULR_SECRET rotation does not send the whole fleet's next
   * reconnect through argon2id.
   */
  previousSecrets?: readonly string[] | undefined;
  /** how long a verified secret is remembered (s) */
  cacheTtlS: number;
  /** argon2 verifications in flight before further ones are refused */
  maxHashing: number;
  /** rewrites a legacy SHA-256 hash as argon2id after its first successful use */
  rehash: (credentialId: string, hash: string) => Promise<void>;
  logger?: Logger;
}

/** Why a secret was accepted or refused (the `outcome` label of `rulr_device_auth_verifications_total`). */
export type Verdict = 'cached' | 'verified' | 'wrong' | 'overloaded' | 'limited';

const macKey = (rulrSecret: string) => Buffer.from(hkdfSync('sha256', rulrSecret, Buffer.alloc(0), 'rulr/device-auth-cache', 32));
/**
 * The keyed hash of a presented secret, as a 32-character one-byte string: 100,000 remembered ones
 * are 100,000 flat strings for the collector, where Buffers were each a typed array, an ArrayBuffer
 * and a backing store it has to track.
 */
const mac = (key: Buffer, credentialId: string, secret: string) =>
  createHmac('sha256', key).update(credentialId).update('\u0000').update(secret).digest('binary');

/** Whether two MACs are equal, in time independent of where they differ. */
function sameMac(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return d === 0;
}
const redisKey = (prefix: string, credentialId: string) => `${prefix}device-auth:ok:${credentialId}`;

/**
 * The verification-cache entry a successful check of `secret` leaves in Redis: what a fleet that
 * connected before finds there (bench:auth's warm runs write it instead of verifying each device once).
 */
export const verificationEntry = (prefix: string, rulrSecret: string, credentialId: string, secret: string) => ({
  key: redisKey(prefix, credentialId),
  value: Buffer.from(mac(macKey(rulrSecret), credentialId, secret), 'binary'),
});

const verifications = counter(
  'rulr_device_auth_verifications_total',
  'Device secret checks by outcome (cached, verified, wrong, overloaded)',
  ['outcome'],
);

/** The counter of each outcome, its label set resolved once. */
const outcomes = Object.fromEntries(
  (['cached', 'verified', 'wrong', 'overloaded', 'limited'] as const).map((v) => [v, verifications.labels(v)]),
) as Record<Verdict, { inc(): void }>;

/**
 * Checks device secrets against their slow hashes, remembering what it verified. A keyed hash of
 * the presented secret (HMAC-SHA256 of credential id and secret, under a key derived from
 * RULR_SECRET that never leaves the process) is kept in memory and in Redis
 * (`<prefix>device-auth:ok:<credentialId>`, DEVICE_AUTH_CACHE_TTL_S): a reconnect costs one HMAC
 * and a comparison, about 2 µs, where argon2id costs about 11 ms. The entry proves only that this
 * secret matched this credential: whether the credential is still valid is decided apart, at each
 * request, from the credential directory. A wrong secret is remembered briefly too, so repeating
 * it does not re-run argon2; and at most `maxHashing` verifications run at once (the rest are
 * refused, the device retries), so a flood of wrong secrets cannot starve the event loop's pool.
 */
export class SecretVerifier {
  private readonly key: Buffer;
  private readonly previousKeys: Buffer[];
  private readonly ok: LRUCache<string, string>;
  private readonly wrong = new LRUCache<string, true>({ max: 50_000, ttl: 60_000 });
  private hashing = 0;

  constructor(private readonly o: VerifierOptions) {
    this.key = macKey(o.rulrSecret);
    this.previousKeys = (o.previousSecrets ?? []).map(macKey);
    this.ok = new LRUCache({ max: 200_000, ttl: o.cacheTtlS * 1000 });
  }

  private redisKey = (credentialId: string) => redisKey(this.o.prefix, credentialId);

  /**
   * Whether `secret` is the secret of `c` (a secret credential), and how that was decided.
   * `mayHash` is asked before anything costs argon2 (the failure limits: a secret verified before
   * is accepted without them, every other attempt counts against them).
   */
  async verify(c: CredentialInfo, secret: string, mayHash: () => Promise<boolean> = async () => true): Promise<Verdict> {
    const presented = mac(this.key, c.id, secret);
    const known = this.ok.get(c.id);
    if (known !== undefined && sameMac(known, presented)) return this.count('cached');
    return this.check(c, secret, presented, known, mayHash);
  }

  /**
   * The verdict when this process remembers `secret` as the secret of `c` ('cached', counted as
   * {@link verify} counts it), without a promise; undefined otherwise (then {@link verify} decides).
   * A warm fleet's reconnect is answered from this, in the same turn as its request.
   */
  cached(c: CredentialInfo, secret: string): 'cached' | undefined {
    const known = this.ok.get(c.id);
    if (known === undefined || !sameMac(known, mac(this.key, c.id, secret))) return undefined;
    outcomes.cached.inc();
    return 'cached';
  }

  private async check(
    c: CredentialInfo,
    secret: string,
    presented: string,
    known: string | undefined,
    mayHash: () => Promise<boolean>,
  ): Promise<Verdict> {
    const wrongKey = `${c.id}:${presented}`;
    if (this.wrong.has(wrongKey)) return this.count('wrong');
    if (!known) {
      const shared = (await this.o.redis.getBuffer(this.redisKey(c.id)).catch(() => null))?.toString('binary');
      if (shared && sameMac(shared, presented)) {
        this.ok.set(c.id, presented);
        return this.count('cached');
      }
      if (shared && this.previousKeys.some((k) => sameMac(shared, mac(k, c.id, secret)))) {
        // verified under the secret RULR_SECRET replaced: the same proof, kept under the current key
        this.ok.set(c.id, presented);
        await this.o.redis.set(this.redisKey(c.id), Buffer.from(presented, 'binary'), 'KEEPTTL').catch(() => undefined);
        return this.count('cached');
      }
    }
    if (!c.hash || !c.scheme) return this.count('wrong');
    if (!(await mayHash())) return this.count('limited');
    if (this.hashing >= this.o.maxHashing) return this.count('overloaded');
    this.hashing++;
    let match: boolean;
    try {
      match = await verifyDeviceSecret(c.scheme, c.hash, secret);
    } finally {
      this.hashing--;
    }
    if (!match) {
      this.wrong.set(wrongKey, true);
      return this.count('wrong');
    }
    this.ok.set(c.id, presented);
    await this.o.redis.set(this.redisKey(c.id), Buffer.from(presented, 'binary'), 'EX', this.o.cacheTtlS).catch(() => undefined);
    if (c.scheme === 'sha256') void this.migrate(c, secret);
    return this.count('verified');
  }

  private async migrate(c: CredentialInfo, secret: string): Promise<void> {
    try {
      await this.o.rehash(c.id, await hashDeviceSecret(secret));
    } catch (e) {
      this.o.logger?.warn(
        { err: (e as Error).message, credentialId: c.id },
        'device-auth: legacy hash not rewritten (retried at next use)',
      );
    }
  }

  private count(v: Verdict): Verdict {
    outcomes[v].inc();
    return v;
  }
}
