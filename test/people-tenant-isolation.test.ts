import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withTenant } from '../lib/db.js';
import { ANONYMOUS, type Identity } from '../lib/identity.js';
import { codes, type DevicesFixture, devicesFixture } from './devices-fixtures.js';
import { startSmtpServer, type TestSmtpServer } from './support/smtp.js';

interface Tenant {
  orgId: string;
  slug: string;
  admin: Identity;
  member: { id: string; email: string; password: string };
  invitationId: string;
  sessionId: string;
}

/** Every people-and-sessions mutation and query, aimed by org A's admin at org B's people, invitations and sessions. */
describe('tenant isolation of people and sessions', () => {
  let smtp: TestSmtpServer;
  let f: DevicesFixture;
  let a: Tenant;
  let b: Tenant;

  const tenant = async (slug: string): Promise<Tenant> => {
    const orgId = await f.org(slug);
    const adminUser = await f.user(orgId, 'admin');
    const admin: Identity = { kind: 'user', subject: adminUser.id, orgId, role: 'admin', scopes: [] };
    const member = await f.user(orgId, 'operator');
    const invitationId = (
      await f.ok(admin, `mutation($e: String!) { inviteUser(email: $e, role: VIEWER) { id } }`, { e: `invitee@${slug}.example.test` })
    ).inviteUser.id;
    const login = await f.ok(ANONYMOUS, `mutation($e: String!, $p: String!) { login(email: $e, password: $p) { sessionId } }`, {
      e: member.email,
      p: member.password,
    });
    return { orgId, slug, admin, member, invitationId, sessionId: login.login.sessionId };
  };

  beforeAll(async () => {
    smtp = await startSmtpServer();
    f = await devicesFixture({ SMTP_URL: smtp.url, LOGIN_MAX_FAILURES: '2' });
    a = await tenant('tenant-a');
    b = await tenant('tenant-b');
  });
  afterAll(async () => {
    await f.close();
    await smtp.close();
  });

  const sessions = () => f.mod.context(ANONYMOUS).people.sessions;

  it("answers NOT_FOUND to every people mutation on org B's ids and changes nothing", async () => {
    // B's member locked out, to see that A cannot lift it
    for (let i = 0; i < 2; i++) await f.run(ANONYMOUS, `mutation { login(email: "${b.member.email}", password: "wrong!") { token } }`);
    const attempts: [string, Record<string, unknown>][] = [
      [`mutation($id: ID!) { changeRole(userId: $id, role: ADMIN) { id } }`, { id: b.member.id }],
      [`mutation($id: ID!) { removeMember(userId: $id) }`, { id: b.member.id }],
      [`mutation($id: ID!) { unlockUser(userId: $id) { id } }`, { id: b.member.id }],
      [`mutation($id: ID!) { revokeUserSessions(userId: $id) }`, { id: b.member.id }],
      [`mutation($id: ID!) { revokeInvitation(id: $id) { id } }`, { id: b.invitationId }],
      [`mutation($id: ID!) { changeRole(userId: $id, role: VIEWER) { id } }`, { id: b.admin.subject }],
      [`mutation($id: ID!) { removeMember(userId: $id) }`, { id: b.admin.subject }],
    ];
    for (const [query, variables] of attempts) expect(codes(await f.run(a.admin, query, variables)), query).toEqual(['NOT_FOUND']);
    const asMemberOfA: Identity = {
      kind: 'user',
      subject: a.member.id,
      orgId: a.orgId,
      role: 'operator',
      scopes: [],
      sessionId: a.sessionId,
    };
    expect(codes(await f.run(asMemberOfA, `mutation($id: ID!) { revokeSession(id: $id) }`, { id: b.sessionId }))).toEqual(['NOT_FOUND']);
    expect(codes(await f.run(asMemberOfA, `mutation { switchOrganization(organization: "tenant-b") { token } }`))).toEqual(['FORBIDDEN']);
    expect(
      codes(await f.run(asMemberOfA, `mutation($o: String!) { switchOrganization(organization: $o) { token } }`, { o: b.orgId })),
    ).toEqual(['FORBIDDEN']);

    const roles = await f.t.db
      .selectFrom('memberships')
      .select(['user_id', 'role'])
      .where('org_id', '=', b.orgId)
      .orderBy('role')
      .execute();
    expect(roles).toEqual([
      { user_id: b.admin.subject, role: 'admin' },
      { user_id: b.member.id, role: 'operator' },
    ]);
    const inv = await f.t.db.selectFrom('invitations').select('revoked_at').where('id', '=', b.invitationId).executeTakeFirstOrThrow();
    expect(inv.revoked_at).toBeNull();
    expect(await sessions().get(b.sessionId)).not.toBeNull();
    expect(
      codes(await f.run(ANONYMOUS, `mutation { login(email: "${b.member.email}", password: "${b.member.password}") { token } }`)),
    ).toEqual(['RATE_LIMITED']);
  });

  it('shows org A only its own members and invitations, and a person only their own memberships and sessions', async () => {
    const d = await f.ok(a.admin, `{ users { id } invitations { id } }`);
    expect(d.users.map((u: { id: string }) => u.id).sort()).toEqual([a.admin.subject, a.member.id].sort());
    expect(d.invitations).toEqual([{ id: a.invitationId }]);
    const me: Identity = { kind: 'user', subject: a.member.id, orgId: a.orgId, role: 'operator', scopes: [], sessionId: a.sessionId };
    const mine = await f.ok(me, `{ memberships { organization { id } } sessions { id } }`);
    expect(mine.memberships).toEqual([{ organization: { id: a.orgId } }]);
    expect(mine.sessions).toEqual([{ id: a.sessionId }]);
  });

  it("invites into the asking admin's organization only, whatever the address", async () => {
    await f.ok(a.admin, `mutation { inviteUser(email: "invitee@tenant-b.example.test", role: ADMIN) { id } }`);
    const inB = await f.t.db.selectFrom('invitations').select(['org_id', 'role']).where('org_id', '=', b.orgId).execute();
    expect(inB).toEqual([{ org_id: b.orgId, role: 'viewer' }]);
  });

  describe('row-level security without the application filter', () => {
    it("returns only org A's invitations to a raw select in A's tenant transaction, and refuses one for B", async () => {
      const rows = await withTenant(
        f.t.db,
        a.orgId,
        async (tx) => (await sql<{ org_id: string }>`select org_id from invitations`.execute(tx)).rows,
      );
      expect(new Set(rows.map((r) => r.org_id))).toEqual(new Set([a.orgId]));
      await expect(
        withTenant(f.t.db, a.orgId, (tx) =>
          tx
            .insertInto('invitations')
            .values({
              org_id: b.orgId,
              email: 'x@example.test',
              role: 'admin',
              token_hash: 'x',
              invited_by: 'sneak',
              expires_at: new Date(),
            })
            .execute(),
        ),
      ).rejects.toThrow(/row-level security/);
    });

    it('keeps password-reset tokens out of every tenant transaction', async () => {
      await expect(withTenant(f.t.db, a.orgId, (tx) => sql`select * from password_resets`.execute(tx))).rejects.toThrow(
        /permission denied/,
      );
    });
  });
});
