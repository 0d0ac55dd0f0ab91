import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConsoleLink } from '../lib/contracts/console-links.js';
import { ANONYMOUS, type Identity, type Role } from '../lib/identity.js';
import { codes, type DevicesFixture, devicesFixture } from './devices-fixtures.js';
import { type ReceivedMail, startSmtpServer, type TestSmtpServer } from './support/smtp.js';

const CONSOLE = 'https://console.example.test';
const NEW_PASSWORD = 'a new and long password';

describe('people and sessions in the devices subgraph', () => {
  let smtp: TestSmtpServer;
  let f: DevicesFixture;
  let n = 0;

  beforeAll(async () => {
    smtp = await startSmtpServer();
    f = await devicesFixture({
      SMTP_URL: smtp.url,
      MAIL_CONSOLE_URL: CONSOLE,
      LOGIN_MAX_FAILURES: '3',
      RESET_MAX_PER_HOUR: '3',
    });
  });
  afterAll(async () => {
    await f.close();
    await smtp.close();
  });

  const address = (what: string) => `${what}-${++n}-${Date.now()}@example.test`;
  const identityOf = (userId: string, orgId: string, role: Role, extra: Partial<Identity> = {}): Identity => ({
    kind: 'user',
    subject: userId,
    orgId,
    role,
    scopes: [],
    ...extra,
  });
  /** A member (a real account) and their identity. */
  const member = async (orgId: string, role: Role) => {
    const u = await f.user(orgId, role);
    return { ...u, identity: identityOf(u.id, orgId, role) };
  };
  const mailTo = (to: string, subject?: RegExp) =>
    smtp.waitFor((m) => m.to.some((x) => x.toLowerCase() === to.toLowerCase()) && (!subject || subject.test(m.mail.subject ?? '')));
  const tokenIn = (m: ReceivedMail, kind: 'accept-invitation' | 'reset-password') => {
    const link = /(https:\/\/\S+)/.exec(m.text)?.[1] ?? '';
    expect(link.startsWith(`${CONSOLE}/#/${kind}?token=`)).toBe(true);
    const parsed = parseConsoleLink(link);
    expect(parsed.kind).toBe(kind);
    return parsed.token;
  };
  const login = (email: string, password: string, organization?: string) =>
    f.run(
      ANONYMOUS,
      `mutation($e: String!, $p: String!, $o: String) { login(email: $e, password: $p, organization: $o) { token role refreshToken sessionId organization { slug } } }`,
      { e: email, p: password, o: organization ?? null },
    );
  /** The identity a token of this session would carry, as the gateway forwards it. */
  const sessionIdentity = (userId: string, orgId: string, role: Role, sessionId: string) => identityOf(userId, orgId, role, { sessionId });
  const auditActions = async (orgId: string) =>
    (await f.t.db.selectFrom('audit_logs').select('action').where('org_id', '=', orgId).execute()).map((r) => r.action);
  const slugOf = async (orgId: string) =>
    (await f.t.db.selectFrom('organizations').select('slug').where('id', '=', orgId).executeTakeFirstOrThrow()).slug;

  const INVITE = `mutation($e: String!, $r: Role!) { inviteUser(email: $e, role: $r) { id email role status expiresAt } }`;
  const ACCEPT = `mutation($t: String!, $p: String!, $n: String) { acceptInvitation(token: $t, password: $p, name: $n) { token role refreshToken sessionId organization { id slug } } }`;

  describe('invitations', () => {
    it('mails an invitation whose link lets a new person set a password, join with the invited role and sign in', async () => {
      const orgId = await f.org();
      const admin = await member(orgId, 'admin');
      const email = address('new');
      const inv = (await f.ok(admin.identity, INVITE, { e: email, r: 'OPERATOR' })).inviteUser;
      expect(inv).toMatchObject({ email, role: 'OPERATOR', status: 'PENDING' });
      const mail = await mailTo(email, /You are invited to/);
      expect(mail.mail.subject).toBe(`You are invited to ${(await slugOf(orgId)).toUpperCase()} on RULR`);
      const token = tokenIn(mail, 'accept-invitation');

      const preview = await f.ok(
        ANONYMOUS,
        `query($t: String!) { invitation(token: $t) { email role accountExists organization { id } } }`,
        { t: token },
      );
      expect(preview.invitation).toEqual({ email, role: 'OPERATOR', accountExists: false, organization: { id: orgId } });
      expect(codes(await f.run(ANONYMOUS, ACCEPT, { t: token, p: 'short' }))).toEqual(['BAD_USER_INPUT']);

      const accepted = (await f.ok(ANONYMOUS, ACCEPT, { t: token, p: NEW_PASSWORD, n: 'Xavier' })).acceptInvitation;
      expect(accepted).toMatchObject({ role: 'OPERATOR', organization: { id: orgId } });
      expect(accepted.refreshToken).toMatch(/^rt\./);
      const users = (await f.ok(admin.identity, `{ users { email name role } }`)).users;
      expect(users).toContainEqual({ email, name: 'Xavier', role: 'OPERATOR' });
      expect((await login(email, NEW_PASSWORD)).errors).toBeUndefined();

      expect((await f.ok(ANONYMOUS, `query($t: String!) { invitation(token: $t) { email } }`, { t: token })).invitation).toBeNull();
      expect(codes(await f.run(ANONYMOUS, ACCEPT, { t: token, p: NEW_PASSWORD }))).toEqual(['BAD_USER_INPUT']);
      expect((await f.ok(admin.identity, `{ invitations { id status } }`)).invitations).toEqual([{ id: inv.id, status: 'ACCEPTED' }]);
      expect(await auditActions(orgId)).toEqual(expect.arrayContaining(['invitation.create', 'invitation.accept', 'membership.create']));
    });

    it('lets a person who has an account accept only with its own password, and keeps one account', async () => {
      const orgA = await f.org();
      const orgB = await f.org();
      const existing = await member(orgA, 'viewer');
      const adminB = await member(orgB, 'admin');
      await f.ok(adminB.identity, INVITE, { e: existing.email.toUpperCase(), r: 'ADMIN' });
      const token = tokenIn(await mailTo(existing.email.toUpperCase(), /invited/), 'accept-invitation');
      expect(
        (await f.ok(ANONYMOUS, `query($t: String!) { invitation(token: $t) { accountExists } }`, { t: token })).invitation.accountExists,
      ).toBe(true);
      const wrong = await f.run(ANONYMOUS, ACCEPT, { t: token, p: 'not the password at all' });
      expect(codes(wrong)).toEqual(['UNAUTHENTICATED']);
      expect(
        await f.t.db.selectFrom('memberships').select('role').where('org_id', '=', orgB).where('user_id', '=', existing.id).execute(),
      ).toEqual([]);
      const ok = (await f.ok(ANONYMOUS, ACCEPT, { t: token, p: existing.password })).acceptInvitation;
      expect(ok).toMatchObject({ role: 'ADMIN', organization: { id: orgB } });
      const accounts = await f.t.db.selectFrom('users').select('id').where('email', 'ilike', existing.email).execute();
      expect(accounts).toEqual([{ id: existing.id }]);
      const mine = await f.ok(identityOf(existing.id, orgA, 'viewer'), `{ memberships { role current organization { id } } }`);
      expect(mine.memberships).toEqual([
        { role: 'VIEWER', current: true, organization: { id: orgA } },
        { role: 'ADMIN', current: false, organization: { id: orgB } },
      ]);
    });

    it('replaces an open invitation when inviting again, and refuses revoked and expired ones', async () => {
      const orgId = await f.org();
      const admin = await member(orgId, 'admin');
      const email = address('twice');
      const first = (await f.ok(admin.identity, INVITE, { e: email, r: 'VIEWER' })).inviteUser;
      const firstToken = tokenIn(await mailTo(email), 'accept-invitation');
      const second = (await f.ok(admin.identity, INVITE, { e: email, r: 'OPERATOR' })).inviteUser;
      const secondToken = tokenIn(await smtp.waitFor((m) => m.to.includes(email) && !m.text.includes(firstToken)), 'accept-invitation');
      const statuses = (await f.ok(admin.identity, `{ invitations { id status } }`)).invitations;
      expect(statuses).toEqual([
        { id: second.id, status: 'PENDING' },
        { id: first.id, status: 'REVOKED' },
      ]);
      expect(codes(await f.run(ANONYMOUS, ACCEPT, { t: firstToken, p: NEW_PASSWORD }))).toEqual(['BAD_USER_INPUT']);

      await f.ok(admin.identity, `mutation($id: ID!) { revokeInvitation(id: $id) { status } }`, { id: second.id });
      expect(codes(await f.run(ANONYMOUS, ACCEPT, { t: secondToken, p: NEW_PASSWORD }))).toEqual(['BAD_USER_INPUT']);

      const third = (await f.ok(admin.identity, INVITE, { e: email, r: 'VIEWER' })).inviteUser;
      const thirdToken = tokenIn(
        await smtp.waitFor((m) => m.to.includes(email) && !m.text.includes(firstToken) && !m.text.includes(secondToken)),
        'accept-invitation',
      );
      await f.t.db
        .updateTable('invitations')
        .set({ expires_at: new Date(Date.now() - 1000) })
        .where('id', '=', third.id)
        .execute();
      expect(codes(await f.run(ANONYMOUS, ACCEPT, { t: thirdToken, p: NEW_PASSWORD }))).toEqual(['BAD_USER_INPUT']);
      expect((await f.ok(admin.identity, `{ invitations { status } }`)).invitations[0]).toEqual({ status: 'EXPIRED' });
      expect(await f.t.db.selectFrom('users').select('id').where('email', '=', email).execute()).toEqual([]);
    });

    it('refuses to invite someone who is a member already', async () => {
      const orgId = await f.org();
      const admin = await member(orgId, 'admin');
      const other = await member(orgId, 'viewer');
      expect(codes(await f.run(admin.identity, INVITE, { e: other.email, r: 'ADMIN' }))).toEqual(['CONFLICT']);
    });

    it('leaves no invitation behind when its mail cannot be sent', async () => {
      const orgId = await f.org();
      const admin = await member(orgId, 'admin');
      smtp.refuseNext(1, 554);
      const r = await f.run(admin.identity, INVITE, { e: address('unlucky'), r: 'VIEWER' });
      expect(codes(r)).toEqual(['INTERNAL_SERVER_ERROR']);
      expect(r.errors?.[0]?.message).toMatch(/e-mail could not be sent/);
      expect((await f.ok(admin.identity, `{ invitations { id } }`)).invitations).toEqual([]);
    });
  });

  describe('password reset', () => {
    const REQUEST = `mutation($e: String!) { requestPasswordReset(email: $e) }`;
    const RESET = `mutation($t: String!, $p: String!) { resetPassword(token: $t, newPassword: $p) }`;

    it('mails a single-use link that sets a new password, ends every session and lifts a lockout', async () => {
      const orgId = await f.org();
      const u = await member(orgId, 'operator');
      const before = (await login(u.email, u.password)).data?.login as { sessionId: string };
      for (let i = 0; i < 3; i++) await login(u.email, 'wrong password');
      expect(codes(await login(u.email, u.password))).toEqual(['RATE_LIMITED']);

      expect((await f.ok(ANONYMOUS, REQUEST, { e: u.email })).requestPasswordReset).toBe(true);
      const mail = await mailTo(u.email, /Reset your RULR password/);
      const token = tokenIn(mail, 'reset-password');
      expect(codes(await f.run(ANONYMOUS, RESET, { t: token, p: 'short' }))).toEqual(['BAD_USER_INPUT']);
      expect((await f.ok(ANONYMOUS, RESET, { t: token, p: NEW_PASSWORD })).resetPassword).toBe(true);

      expect(codes(await login(u.email, u.password))).toEqual(['UNAUTHENTICATED']);
      expect((await login(u.email, NEW_PASSWORD)).errors).toBeUndefined();
      expect(codes(await f.run(ANONYMOUS, RESET, { t: token, p: 'yet another long password' }))).toEqual(['BAD_USER_INPUT']);
      expect(await f.mod.context(ANONYMOUS).people.sessions.get(before.sessionId)).toBeNull();
      expect(await auditActions(orgId)).toEqual(
        expect.arrayContaining(['user.password_reset_request', 'user.password_reset', 'user.lock']),
      );
    });

    it('answers true for an unknown address and sends nothing, and mails one address at most RESET_MAX_PER_HOUR times an hour', async () => {
      const unknown = address('nobody');
      expect((await f.ok(ANONYMOUS, REQUEST, { e: unknown })).requestPasswordReset).toBe(true);
      const orgId = await f.org();
      const u = await member(orgId, 'viewer');
      for (let i = 0; i < 5; i++) expect((await f.ok(ANONYMOUS, REQUEST, { e: u.email })).requestPasswordReset).toBe(true);
      await expect.poll(() => smtp.messages.filter((m) => m.to.includes(u.email)).length).toBe(3);
      await new Promise((r) => setTimeout(r, 500));
      expect(smtp.messages.filter((m) => m.to.includes(u.email))).toHaveLength(3);
      expect(smtp.messages.filter((m) => m.to.includes(unknown))).toEqual([]);
    });

    it('refuses an expired reset link', async () => {
      const orgId = await f.org();
      const u = await member(orgId, 'viewer');
      await f.ok(ANONYMOUS, REQUEST, { e: u.email });
      const token = tokenIn(await mailTo(u.email, /Reset/), 'reset-password');
      await f.t.db
        .updateTable('password_resets')
        .set({ expires_at: new Date(Date.now() - 1000) })
        .where('user_id', '=', u.id)
        .execute();
      expect(codes(await f.run(ANONYMOUS, RESET, { t: token, p: NEW_PASSWORD }))).toEqual(['BAD_USER_INPUT']);
      expect((await login(u.email, u.password)).errors).toBeUndefined();
    });
  });

  describe('sign-in and sessions', () => {
    const REFRESH = `mutation($t: String!) { refreshSession(refreshToken: $t) { token refreshToken sessionId role } }`;

    it('locks an address after repeated failures, an unknown one alike, until an admin unlocks it', async () => {
      const orgId = await f.org();
      const admin = await member(orgId, 'admin');
      const u = await member(orgId, 'viewer');
      for (let i = 0; i < 3; i++) expect(codes(await login(u.email, 'wrong password'))).toEqual(['UNAUTHENTICATED']);
      const locked = await login(u.email, u.password);
      expect(codes(locked)).toEqual(['RATE_LIMITED']);
      expect(locked.errors?.[0]?.extensions?.retryAfter).toBeGreaterThan(0);
      const listed = (await f.ok(admin.identity, `{ users { id lockedUntil } }`)).users.find((x: { id: string }) => x.id === u.id);
      expect(new Date(listed.lockedUntil).getTime()).toBeGreaterThan(Date.now());

      const unknown = address('ghost');
      for (let i = 0; i < 3; i++) expect(codes(await login(unknown, 'whatever'))).toEqual(['UNAUTHENTICATED']);
      expect(codes(await login(unknown, 'whatever'))).toEqual(['RATE_LIMITED']);

      const unlocked = await f.ok(admin.identity, `mutation($id: ID!) { unlockUser(userId: $id) { id lockedUntil } }`, { id: u.id });
      expect(unlocked.unlockUser).toEqual({ id: u.id, lockedUntil: null });
      expect((await login(u.email, u.password)).errors).toBeUndefined();
      expect(await auditActions(orgId)).toEqual(expect.arrayContaining(['user.lock', 'user.unlock']));
    });

    it('rotates the refresh token on every refresh, and ends the session when a used one comes back', async () => {
      const orgId = await f.org();
      const u = await member(orgId, 'operator');
      const first = (await login(u.email, u.password)).data?.login as { refreshToken: string; sessionId: string };
      const second = (await f.ok(ANONYMOUS, REFRESH, { t: first.refreshToken })).refreshSession;
      expect(second).toMatchObject({ sessionId: first.sessionId, role: 'OPERATOR' });
      expect(second.refreshToken).not.toBe(first.refreshToken);
      const reused = await f.run(ANONYMOUS, REFRESH, { t: first.refreshToken });
      expect(codes(reused)).toEqual(['UNAUTHENTICATED']);
      expect(reused.errors?.[0]?.message).toMatch(/already used/);
      // the thief's and the owner's copies alike
      expect(codes(await f.run(ANONYMOUS, REFRESH, { t: second.refreshToken }))).toEqual(['UNAUTHENTICATED']);
      expect(codes(await f.run(ANONYMOUS, REFRESH, { t: 'rt.nonsense' }))).toEqual(['UNAUTHENTICATED']);
    });

    it("changes a password only with the current one, and ends the person's other sessions", async () => {
      const orgId = await f.org();
      const u = await member(orgId, 'viewer');
      const s1 = (await login(u.email, u.password)).data?.login as { sessionId: string };
      const s2 = (await login(u.email, u.password)).data?.login as { sessionId: string };
      const me = sessionIdentity(u.id, orgId, 'viewer', s1.sessionId);
      const CHANGE = `mutation($c: String!, $p: String!) { changePassword(currentPassword: $c, newPassword: $p) }`;
      expect(codes(await f.run(me, CHANGE, { c: 'not it at all', p: NEW_PASSWORD }))).toEqual(['UNAUTHENTICATED']);
      expect(codes(await f.run(me, CHANGE, { c: u.password, p: 'short' }))).toEqual(['BAD_USER_INPUT']);
      expect((await f.ok(me, CHANGE, { c: u.password, p: NEW_PASSWORD })).changePassword).toBe(true);
      const store = f.mod.context(ANONYMOUS).people.sessions;
      expect(await store.get(s2.sessionId)).toBeNull();
      expect(await store.get(s1.sessionId)).not.toBeNull();
      const listed = (await f.ok(me, `{ sessions { id current } }`)).sessions;
      expect(listed).toEqual([{ id: s1.sessionId, current: true }]);
      expect((await login(u.email, NEW_PASSWORD)).errors).toBeUndefined();
    });

    it('lists memberships and switches organization, ending the session it leaves', async () => {
      const orgA = await f.org();
      const orgB = await f.org();
      const u = await member(orgA, 'viewer');
      await f.t.db.insertInto('memberships').values({ org_id: orgB, user_id: u.id, role: 'admin' }).execute();
      const s = (await login(u.email, u.password, await slugOf(orgA))).data?.login as { sessionId: string };
      const me = sessionIdentity(u.id, orgA, 'viewer', s.sessionId);
      const SWITCH = `mutation($o: String!) { switchOrganization(organization: $o) { role sessionId organization { id } } }`;
      const switched = (await f.ok(me, SWITCH, { o: await slugOf(orgB) })).switchOrganization;
      expect(switched).toMatchObject({ role: 'ADMIN', organization: { id: orgB } });
      const store = f.mod.context(ANONYMOUS).people.sessions;
      expect(await store.get(s.sessionId)).toBeNull();
      expect((await store.get(switched.sessionId))?.orgId).toBe(orgB);
      const elsewhere = await f.org();
      expect(codes(await f.run(sessionIdentity(u.id, orgB, 'admin', switched.sessionId), SWITCH, { o: elsewhere }))).toEqual(['FORBIDDEN']);
    });

    it('refuses a refresh once the membership behind the session is gone', async () => {
      const orgId = await f.org();
      const admin = await member(orgId, 'admin');
      const u = await member(orgId, 'operator');
      const s = (await login(u.email, u.password)).data?.login as { refreshToken: string };
      await f.t.db.deleteFrom('memberships').where('org_id', '=', orgId).where('user_id', '=', u.id).execute();
      expect(codes(await f.run(ANONYMOUS, REFRESH, { t: s.refreshToken }))).toEqual(['UNAUTHENTICATED']);
      expect(admin).toBeDefined();
    });

    it('logs out with the access token or any refresh token of the session', async () => {
      const orgId = await f.org();
      const u = await member(orgId, 'viewer');
      const store = f.mod.context(ANONYMOUS).people.sessions;
      const a = (await login(u.email, u.password)).data?.login as { sessionId: string };
      expect((await f.ok(sessionIdentity(u.id, orgId, 'viewer', a.sessionId), `mutation { logout }`)).logout).toBe(true);
      expect(await store.get(a.sessionId)).toBeNull();
      const b = (await login(u.email, u.password)).data?.login as { sessionId: string; refreshToken: string };
      const rotated = (await f.ok(ANONYMOUS, REFRESH, { t: b.refreshToken })).refreshSession;
      expect(rotated.sessionId).toBe(b.sessionId);
      expect(codes(await f.run(ANONYMOUS, `mutation { logout }`))).toEqual(['UNAUTHENTICATED']);
      expect((await f.ok(ANONYMOUS, `mutation($t: String) { logout(refreshToken: $t) }`, { t: b.refreshToken })).logout).toBe(true);
      expect(await store.get(b.sessionId)).toBeNull();
    });
  });

  describe('members', () => {
    const CHANGE_ROLE = `mutation($id: ID!, $r: Role!) { changeRole(userId: $id, role: $r) { id role } }`;
    const REMOVE = `mutation($id: ID!) { removeMember(userId: $id) }`;

    it('never removes or demotes the last admin, even when two admins demote each other at once', async () => {
      const orgId = await f.org();
      const a = await member(orgId, 'admin');
      expect(codes(await f.run(a.identity, REMOVE, { id: a.id }))).toEqual(['CONFLICT']);
      expect(codes(await f.run(a.identity, CHANGE_ROLE, { id: a.id, r: 'VIEWER' }))).toEqual(['CONFLICT']);
      const b = await member(orgId, 'admin');
      const [x, y] = await Promise.all([
        f.run(a.identity, CHANGE_ROLE, { id: b.id, r: 'OPERATOR' }),
        f.run(b.identity, CHANGE_ROLE, { id: a.id, r: 'OPERATOR' }),
      ]);
      expect([...codes(x), ...codes(y)]).toEqual(['CONFLICT']);
      const admins = await f.t.db
        .selectFrom('memberships')
        .select('user_id')
        .where('org_id', '=', orgId)
        .where('role', '=', 'admin')
        .execute();
      expect(admins).toHaveLength(1);
    });

    it("ends a member's sessions in the organization when their role changes or they are removed, and only there", async () => {
      const orgId = await f.org();
      const other = await f.org();
      const admin = await member(orgId, 'admin');
      const u = await member(orgId, 'operator');
      await f.t.db.insertInto('memberships').values({ org_id: other, user_id: u.id, role: 'viewer' }).execute();
      const store = f.mod.context(ANONYMOUS).people.sessions;
      const here = (await login(u.email, u.password, await slugOf(orgId))).data?.login as { sessionId: string };
      const there = (await login(u.email, u.password, await slugOf(other))).data?.login as { sessionId: string };
      expect((await f.ok(admin.identity, CHANGE_ROLE, { id: u.id, r: 'VIEWER' })).changeRole).toEqual({ id: u.id, role: 'VIEWER' });
      expect(await store.get(here.sessionId)).toBeNull();
      expect(await store.get(there.sessionId)).not.toBeNull();
      const again = (await login(u.email, u.password, await slugOf(orgId))).data?.login as { sessionId: string; role: string };
      expect(again.role).toBe('VIEWER');
      expect((await f.ok(admin.identity, REMOVE, { id: u.id })).removeMember).toBe(true);
      expect(await store.get(again.sessionId)).toBeNull();
      expect(await store.get(there.sessionId)).not.toBeNull();
      expect(codes(await login(u.email, u.password, await slugOf(orgId)))).toEqual(['UNAUTHENTICATED']);
      const revoked = await f.run(identityOf(admin.id, orgId, 'admin'), `mutation($id: ID!) { revokeUserSessions(userId: $id) }`, {
        id: u.id,
      });
      expect(codes(revoked)).toEqual(['NOT_FOUND']);
      expect(await auditActions(orgId)).toEqual(expect.arrayContaining(['membership.role_change', 'membership.remove']));
    });

    it('leaves people management to admins: viewers and operators, and API keys without `*`, are refused', async () => {
      const orgId = await f.org();
      const target = await member(orgId, 'viewer');
      const inv = (await f.ok((await member(orgId, 'admin')).identity, INVITE, { e: address('pending'), r: 'VIEWER' })).inviteUser;
      const attempts: [string, Record<string, unknown>][] = [
        [INVITE, { e: address('x'), r: 'VIEWER' }],
        [CHANGE_ROLE, { id: target.id, r: 'ADMIN' }],
        [REMOVE, { id: target.id }],
        [`mutation($id: ID!) { unlockUser(userId: $id) { id } }`, { id: target.id }],
        [`mutation($id: ID!) { revokeUserSessions(userId: $id) }`, { id: target.id }],
        [`mutation($id: ID!) { revokeInvitation(id: $id) { id } }`, { id: inv.id }],
        [`{ invitations { id } }`, {}],
        [`mutation { createOrganization(input: { slug: "sneaky", name: "S", adminEmail: "s@example.test" }) { organization { id } } }`, {}],
      ];
      for (const who of [
        (await member(orgId, 'viewer')).identity,
        (await member(orgId, 'operator')).identity,
        f.as(orgId, 'admin', 'apikey', ['devices:read', 'devices:write']),
      ]) {
        for (const [q, v] of attempts) expect(codes(await f.run(who, q, v)), `${who.role} ${who.kind}: ${q}`).toEqual(['FORBIDDEN']);
      }
      // any member sees the team; an API key only with `*`
      expect((await f.run((await member(orgId, 'viewer')).identity, `{ users { id } }`)).errors).toBeUndefined();
      expect(codes(await f.run(f.as(orgId, 'admin', 'apikey', ['devices:read']), `{ users { id } }`))).toEqual(['FORBIDDEN']);
      expect((await f.ok(f.as(orgId, 'admin', 'apikey', ['*']), `{ users { id } }`)).users.length).toBeGreaterThan(0);
      for (const [q, v] of attempts.slice(0, 7)) expect(codes(await f.run(ANONYMOUS, q, v)), q).toEqual(['UNAUTHENTICATED']);
    });
  });

  describe('organizations', () => {
    const CREATE = `mutation($i: CreateOrganizationInput!) { createOrganization(input: $i) { organization { id slug name } invitation { email role status } } }`;

    it('lets platform operators create organizations: a new admin is invited, an existing account made admin at once', async () => {
      const home = await f.org();
      const op = await member(home, 'admin');
      const platform = identityOf(op.id, home, 'admin', { platform: true });
      const email = address('founder');
      const created = (await f.ok(platform, CREATE, { i: { slug: `new-${n}-a`, name: 'New A', adminEmail: email } })).createOrganization;
      expect(created.invitation).toEqual({ email, role: 'ADMIN', status: 'PENDING' });
      const token = tokenIn(await mailTo(email, /New A/), 'accept-invitation');
      const accepted = (await f.ok(ANONYMOUS, ACCEPT, { t: token, p: NEW_PASSWORD })).acceptInvitation;
      expect(accepted).toMatchObject({ role: 'ADMIN', organization: { id: created.organization.id } });

      const existing = await member(home, 'viewer');
      const second = (await f.ok(platform, CREATE, { i: { slug: `new-${n}-b`, name: 'New B', adminEmail: existing.email } }))
        .createOrganization;
      expect(second.invitation).toBeNull();
      const role = await f.t.db
        .selectFrom('memberships')
        .select('role')
        .where('org_id', '=', second.organization.id)
        .where('user_id', '=', existing.id)
        .executeTakeFirst();
      expect(role).toEqual({ role: 'admin' });
      expect(codes(await f.run(platform, CREATE, { i: { slug: `new-${n}-b`, name: 'Again', adminEmail: email } }))).toEqual(['CONFLICT']);
      expect(codes(await f.run(platform, CREATE, { i: { slug: 'Bad Slug', name: 'x', adminEmail: email } }))).toEqual(['BAD_USER_INPUT']);
      expect(codes(await f.run(op.identity, CREATE, { i: { slug: `new-${n}-c`, name: 'C', adminEmail: email } }))).toEqual(['FORBIDDEN']);
      expect(await auditActions(second.organization.id)).toEqual(expect.arrayContaining(['organization.create', 'membership.create']));
    });

    it('creates no organization when the first admin cannot be invited', async () => {
      const home = await f.org();
      const op = await member(home, 'admin');
      smtp.refuseNext(1, 554);
      const slug = `unmailed-${n}`;
      const r = await f.run(identityOf(op.id, home, 'admin', { platform: true }), CREATE, {
        i: { slug, name: 'Unmailed', adminEmail: address('lost') },
      });
      expect(codes(r)).toEqual(['INTERNAL_SERVER_ERROR']);
      expect(await f.t.db.selectFrom('organizations').select('id').where('slug', '=', slug).execute()).toEqual([]);
    });
  });
});
