import { describe, expect, it } from 'vitest';
import { ErrorCode, type RulrError } from './errors.js';
import { ANONYMOUS, authorize, encodeIdentity, type Identity, signIdentity, signRequest, verifyRequest } from './identity.js';

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
  const body = JSON.stringify({ query: '{ devices { totalCount } }' });
  const request = { method: 'POST', path: '/graphql', body };
  const sign = (id: Identity = user, o: { now?: number; nonce?: string } = {}) => signIdentity(id, SECRET, request, o);

  it('should round-trip an identity signed for the same request with the same secret', () => {
    const v = verifyRequest(sign(), request, SECRET);
    expect(v.identity).toEqual(user);
    const withSession: Identity = { ...user, sessionId: 's-1', platform: true };
    expect(verifyRequest(sign(withSession), request, SECRET).identity).toEqual(withSession);
  });

  it('should verify the body as bytes, whether it was signed as a string or a buffer', () => {
    expect(verifyRequest(sign(), { ...request, body: Buffer.from(body) }, SECRET).identity).toEqual(user);
  });

  it('should give each signed header its own nonce', () => {
    const nonces = new Set(Array.from({ length: 100 }, () => verifyRequest(sign(), request, SECRET).nonce));
    expect(nonces.size).toBe(100);
  });

  it('should refuse a missing header', () => {
    expect(codeOf(() => verifyRequest(undefined, request, SECRET))).toBe(ErrorCode.Unauthenticated);
  });

  it('should refuse a header signed with another secret', () => {
    expect(codeOf(() => verifyRequest(signIdentity(user, 'y'.repeat(40), request), request, SECRET))).toBe(ErrorCode.Unauthenticated);
  });

  it('accepts a header of a previous secret while RULR_SECRET is rotated, and none of a secret not given', () => {
    const old = signIdentity(user, 'o'.repeat(40), request);
    expect(verifyRequest(old, request, [SECRET, 'o'.repeat(40)]).identity).toMatchObject({ subject: user.subject });
    expect(verifyRequest(sign(), request, [SECRET, 'o'.repeat(40)]).identity).toMatchObject({ subject: user.subject });
    expect(codeOf(() => verifyRequest(old, request, [SECRET]))).toBe(ErrorCode.Unauthenticated);
    expect(codeOf(() => verifyRequest(signIdentity(user, 'y'.repeat(40), request), request, [SECRET, 'o'.repeat(40)]))).toBe(
      ErrorCode.Unauthenticated,
    );
  });

  it('should refuse a header presented with another body, method or path than the one it was signed for', () => {
    const h = sign();
    for (const other of [
      { ...request, body: JSON.stringify({ query: 'mutation { createSite(input: { name: "x" }) { id } }' }) },
      { ...request, body: `${body} ` },
      { ...request, method: 'GET' },
      { ...request, path: '/other' },
    ]) {
      expect(() => verifyRequest(h, other, SECRET)).toThrow(/another request/);
    }
  });

  it('should refuse a header whose identity, time or nonce was changed after signing', () => {
    const [v, , at, nonce, mac] = sign().split('.');
    const admin = Buffer.from(JSON.stringify({ ...user, role: 'admin' })).toString('base64url');
    for (const forged of [
      `${v}.${admin}.${at}.${nonce}.${mac}`,
      `${v}.${encodeIdentity(user)}.${(Date.now() + 1).toString(36)}.${nonce}.${mac}`,
      `${v}.${encodeIdentity(user)}.${at}.other.${mac}`,
    ]) {
      expect(codeOf(() => verifyRequest(forged, request, SECRET))).toBe(ErrorCode.Unauthenticated);
    }
  });

  it('should refuse a header older or newer than its maximum age', () => {
    const now = Date.now();
    expect(() => verifyRequest(sign(user, { now: now - 31_000 }), request, SECRET, { now })).toThrow(/expired/);
    expect(() => verifyRequest(sign(user, { now: now + 31_000 }), request, SECRET, { now })).toThrow(/expired/);
    expect(verifyRequest(sign(user, { now: now - 29_000 }), request, SECRET, { now }).identity).toEqual(user);
    expect(() => verifyRequest(sign(user, { now: now - 3_000 }), request, SECRET, { now, maxAgeMs: 2_000 })).toThrow(/expired/);
  });

  it('should refuse headers of another format, the previous one included', () => {
    const previous = `${Buffer.from(JSON.stringify({ ...user, iat: Date.now() })).toString('base64url')}.c2lnbmF0dXJl`;
    for (const h of [previous, 'v2.a.b.c', 'v3.a.b.c.d', '', 'v2....']) {
      expect(
        codeOf(() => verifyRequest(h, request, SECRET)),
        h,
      ).toBe(ErrorCode.Unauthenticated);
    }
  });

  it('should refuse a validly signed header whose identity lacks a field or has a wrong one', () => {
    for (const bad of [
      { ...user, role: 'owner' },
      { ...user, scopes: 'all' },
      { ...user, kind: 'robot' },
      { ...user, platform: 'yes' },
    ]) {
      const encoded = Buffer.from(JSON.stringify(bad)).toString('base64url');
      expect(codeOf(() => verifyRequest(signRequest(encoded, request, SECRET), request, SECRET))).toBe(ErrorCode.Unauthenticated);
    }
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
