import { describe, expect, it } from 'vitest';
import { rejectionOf } from '../../test/support/contracts.js';
import { rejectedCount } from './contract.js';
import { encodeRevocation, encodeSession, parseRevocation, parseSession, type Session } from './sessions.js';

const session: Session = {
  id: 'AAAAAAAAAAAAAAAAAAAAAA',
  userId: '11111111-1111-4111-8111-111111111111',
  orgId: '22222222-2222-4222-8222-222222222222',
  role: 'operator',
  platform: false,
  refreshHash: 'a'.repeat(64),
  createdAt: 1_700_000_000_000,
  refreshedAt: 1_700_000_000_500,
  expiresAt: 1_702_592_000_000,
};

describe('session hash', () => {
  it('parses back what encodeSession writes', () => {
    expect(parseSession(session.id, encodeSession(session))).toEqual(session);
    expect(parseSession(session.id, encodeSession({ ...session, platform: true }))).toMatchObject({ platform: true });
  });

  it('ignores extra fields', () => {
    expect(parseSession(session.id, { ...encodeSession(session), later: 'x' })).toEqual(session);
  });

  it('rejects missing and malformed fields with a reason, and counts them', async () => {
    const before = await rejectedCount('sessions');
    const h = encodeSession(session);
    expect(rejectionOf(() => parseSession('short', h))).toBe('id must be 22 base64url characters');
    expect(rejectionOf(() => parseSession(session.id, { ...h, user: 'x' }))).toBe('user and org must be uuids');
    expect(rejectionOf(() => parseSession(session.id, { ...h, role: 'owner' }))).toBe('role must be admin, operator or viewer');
    expect(rejectionOf(() => parseSession(session.id, { ...h, platform: 'yes' }))).toBe('platform must be 0 or 1');
    expect(rejectionOf(() => parseSession(session.id, { ...h, refresh: 'abc' }))).toBe('refresh must be a SHA-256 hex');
    const { expires: _e, ...noExpiry } = h;
    expect(rejectionOf(() => parseSession(session.id, noExpiry))).toBe('created, refreshed and expires must be ms');
    expect(await rejectedCount('sessions')).toBe(before + 6);
  });
});

describe('session revocation notice', () => {
  it('parses back what it builds', () => {
    expect(parseRevocation(encodeRevocation([session.id]))).toEqual({ sessionIds: [session.id] });
  });

  it('rejects corrupt notices and counts them', async () => {
    const before = await rejectedCount('session-revocations');
    for (const raw of ['{', '[]', '{"sessionIds":[]}', '{"sessionIds":["x"]}', '{"sessionIds":"AAAAAAAAAAAAAAAAAAAAAA"}']) {
      expect(
        rejectionOf(() => parseRevocation(raw)),
        raw,
      ).not.toBe('accepted');
    }
    expect(await rejectedCount('session-revocations')).toBe(before + 5);
  });
});
