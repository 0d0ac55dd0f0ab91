import { describe, expect, it } from 'vitest';
import { apiKeyMatches, generateApiKey, hashPassword, issueToken, parseApiKey, TokenVerifier, verifyPassword } from './auth.js';
import { ErrorCode, type RulrError } from './errors.js';

const opts = { secret: 's'.repeat(40), issuer: 'rulr', ttlSeconds: 60 };
const claims = { userId: 'u-1', orgId: '11111111-1111-1111-1111-111111111111', role: 'viewer' as const };

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (e) {
    return (e as RulrError).code;
  }
  return undefined;
}

describe('JWT', () => {
  it('should verify a token it issued and return the identity', async () => {
    const id = await new TokenVerifier(opts).verify(await issueToken(claims, opts));
    expect(id).toMatchObject({ kind: 'user', subject: 'u-1', orgId: claims.orgId, role: 'viewer' });
  });

  it('should refuse an expired token', async () => {
    const token = await issueToken(claims, opts, Math.floor(Date.now() / 1000) - 3600);
    expect(await codeOf(new TokenVerifier(opts).verify(token))).toBe(ErrorCode.Unauthenticated);
  });

  it('should refuse a token signed with another secret', async () => {
    const token = await issueToken(claims, { ...opts, secret: 'z'.repeat(40) });
    expect(await codeOf(new TokenVerifier(opts).verify(token))).toBe(ErrorCode.Unauthenticated);
  });

  it('while RULR_SECRET is rotated, verifies tokens of a previous secret until they expire, and still none of another', async () => {
    const rotated = { ...opts, secret: 'n'.repeat(40), previousSecrets: [opts.secret] };
    const old = await issueToken(claims, opts);
    expect(await new TokenVerifier(rotated).verify(old)).toMatchObject({ subject: 'u-1', orgId: claims.orgId });
    // new tokens are signed with the new secret only: a verifier that does not know it yet refuses them
    const fresh = await issueToken(claims, rotated);
    expect(await new TokenVerifier(rotated).verify(fresh)).toMatchObject({ subject: 'u-1' });
    expect(await codeOf(new TokenVerifier(opts).verify(fresh))).toBe(ErrorCode.Unauthenticated);
    const expiredOld = await issueToken(claims, opts, Math.floor(Date.now() / 1000) - 3600);
    await expect(new TokenVerifier(rotated).verify(expiredOld)).rejects.toThrow('token expired');
    const stranger = await issueToken(claims, { ...opts, secret: 'z'.repeat(40) });
    await expect(new TokenVerifier(rotated).verify(stranger)).rejects.toThrow('invalid token');
    // once RULR_SECRET_PREVIOUS is emptied, the old token is refused
    expect(await codeOf(new TokenVerifier({ ...rotated, previousSecrets: [] }).verify(old))).toBe(ErrorCode.Unauthenticated);
  });

  it('should refuse garbage', async () => {
    expect(await codeOf(new TokenVerifier(opts).verify('not-a-jwt'))).toBe(ErrorCode.Unauthenticated);
  });
});

describe('API keys', () => {
  it('should match only the exact key it generated', () => {
    const k = generateApiKey();
    expect(parseApiKey(k.key)).toEqual({ prefix: k.prefix });
    expect(apiKeyMatches(k.key, k.hash)).toBe(true);
    expect(apiKeyMatches(`${k.key.slice(0, -1)}x`, k.hash)).toBe(false);
  });

  it('should reject strings that are not RULR keys', () => {
    expect(parseApiKey('rulr_zz_short')).toBeNull();
  });
});

describe('passwords', () => {
  it('should verify the right password and refuse a wrong one', async () => {
    const h = await hashPassword('correct horse');
    expect(await verifyPassword(h, 'correct horse')).toBe(true);
    expect(await verifyPassword(h, 'wrong')).toBe(false);
  });
});
