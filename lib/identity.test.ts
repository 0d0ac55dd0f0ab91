import { describe, expect, it } from 'vitest';
import { ErrorCode, type RulrError } from './errors.js';
import { ANONYMOUS, authorize, type Identity, signIdentity, verifyIdentity } from './identity.js';

const SECRET = 'x'.repeat(40);
const user: Identity = { kind: 'user', subject: 'u1', orgId: '11111111-1111-1111-1111-111111111111', role: 'operator', scopes: [] };

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as RulrError).code;
  }
  return undefined;
}

describe('signed identity header', () => {
  it('should round-trip an identity signed with the same secret', () => {
    expect(verifyIdentity(signIdentity(user, SECRET), SECRET)).toEqual(user);
  });

  it('should refuse a missing header', () => {
    expect(codeOf(() => verifyIdentity(undefined, SECRET))).toBe(ErrorCode.Unauthenticated);
  });

  it('should refuse a header signed with another secret', () => {
    expect(codeOf(() => verifyIdentity(signIdentity(user, 'y'.repeat(40)), SECRET))).toBe(ErrorCode.Unauthenticated);
  });

  it('should refuse a header whose body was changed after signing', () => {
    const [, mac] = signIdentity(user, SECRET).split('.');
    const forged = Buffer.from(JSON.stringify({ ...user, role: 'admin', iat: Date.now() })).toString('base64url');
    expect(codeOf(() => verifyIdentity(`${forged}.${mac}`, SECRET))).toBe(ErrorCode.Unauthenticated);
  });

  it('should refuse a header older than five minutes', () => {
    const old = signIdentity(user, SECRET, Date.now() - 6 * 60_000);
    expect(codeOf(() => verifyIdentity(old, SECRET))).toBe(ErrorCode.Unauthenticated);
  });
});

describe('authorize', () => {
  it('should let an operator do operator work and refuse admin work', () => {
    expect(authorize(user, { role: 'operator', scope: 'devices:write' })).toBe(user);
    expect(codeOf(() => authorize(user, { role: 'admin', scope: 'devices:write' }))).toBe(ErrorCode.Forbidden);
  });

  it('should refuse an API key without the required scope even with a high role', () => {
    const key: Identity = { ...user, kind: 'apikey', role: 'admin', scopes: ['devices:read'] };
    expect(codeOf(() => authorize(key, { role: 'viewer', scope: 'devices:write' }))).toBe(ErrorCode.Forbidden);
    expect(authorize(key, { role: 'viewer', scope: 'devices:read' })).toBe(key);
  });

  it('should treat an anonymous caller as unauthenticated', () => {
    expect(codeOf(() => authorize(ANONYMOUS, { role: 'viewer', scope: 'devices:read' }))).toBe(ErrorCode.Unauthenticated);
  });
});
