import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOrgCli, platformCli } from '../cli/people.js';
import { parseConsoleLink } from '../lib/contracts/console-links.js';
import { ANONYMOUS } from '../lib/identity.js';
import { SmtpMailSender } from '../lib/mail.js';
import { codes, type DevicesFixture, devicesFixture } from './devices-fixtures.js';
import { startSmtpServer, type TestSmtpServer } from './support/smtp.js';

describe('rulr org create and rulr platform', () => {
  let f: DevicesFixture;
  let smtp: TestSmtpServer;
  beforeAll(async () => {
    f = await devicesFixture();
    smtp = await startSmtpServer();
  });
  afterAll(async () => {
    await f.close();
    await smtp.close();
  });
  const deps = () => ({ db: f.t.db, redis: f.ctx.redis, quiet: true });
  const LOGIN = `mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token sessionId role organization { slug } } }`;

  it('creates an organization and invites its first admin with a link that works once, mailed when a server is configured', async () => {
    const mail = new SmtpMailSender({ url: smtp.url, from: 'rulr@example.test', logger: f.ctx.logger });
    const r = await createOrgCli(f.ctx.config, {
      slug: 'city-north',
      name: 'City North',
      admin: 'chief@north.example.test',
      ...deps(),
      mail,
    });
    await mail.close();
    expect(r.adminUserId).toBeNull();
    const { kind, token } = parseConsoleLink(r.link ?? '');
    expect(kind).toBe('accept-invitation');
    const mailed = await smtp.waitFor((m) => m.to.includes('chief@north.example.test'));
    expect(mailed.text).toContain(r.link);
    const accepted = await f.ok(
      ANONYMOUS,
      `mutation($t: String!) { acceptInvitation(token: $t, password: "a long enough password") { role organization { id slug } } }`,
      { t: token },
    );
    expect(accepted.acceptInvitation).toEqual({ role: 'ADMIN', organization: { id: r.orgId, slug: 'city-north' } });
    const audit = await f.t.db.selectFrom('audit_logs').select(['actor', 'action']).where('org_id', '=', r.orgId).orderBy('at').execute();
    expect(audit.slice(0, 2)).toEqual([
      { actor: 'system:cli', action: 'organization.create' },
      { actor: 'system:cli', action: 'invitation.create' },
    ]);
  });

  it('makes a person who has an account admin at once, and refuses bad or taken slugs', async () => {
    const home = await f.org();
    const u = await f.user(home, 'viewer');
    const r = await createOrgCli(f.ctx.config, { slug: 'city-south', name: 'City South', admin: u.email, ...deps() });
    expect(r).toMatchObject({ adminUserId: u.id, link: null });
    expect(
      (await f.ok(ANONYMOUS, `mutation { login(email: "${u.email}", password: "${u.password}", organization: "city-south") { role } }`))
        .login.role,
    ).toBe('ADMIN');
    await expect(createOrgCli(f.ctx.config, { slug: 'city-south', name: 'Again', admin: u.email, ...deps() })).rejects.toThrow(
      /already exists/,
    );
    await expect(createOrgCli(f.ctx.config, { slug: 'No Good', name: 'x', admin: u.email, ...deps() })).rejects.toThrow(/^slug:/);
    await expect(createOrgCli(f.ctx.config, { slug: 'fine-slug', name: 'x', admin: 'not-an-email', ...deps() })).rejects.toThrow(
      /^adminEmail:/,
    );
  });

  it('grants platform operators the right to create organizations from their next sign-in, and ends their sessions on revoke', async () => {
    const home = await f.org();
    const u = await f.user(home, 'admin');
    await expect(platformCli(f.ctx.config, { email: 'nobody@example.test', grant: true, ...deps() })).rejects.toThrow(/no account/);
    await platformCli(f.ctx.config, { email: u.email.toUpperCase(), grant: true, ...deps() });
    const s = (await f.ok(ANONYMOUS, LOGIN, { e: u.email, p: u.password })).login;
    const op = {
      kind: 'user' as const,
      subject: u.id,
      orgId: home,
      role: 'admin' as const,
      scopes: [],
      sessionId: s.sessionId,
      platform: true,
    };
    expect((await f.ok(op, `{ me { platformOperator } }`)).me.platformOperator).toBe(true);
    const created = await f.ok(
      op,
      `mutation { createOrganization(input: { slug: "by-platform", name: "By platform", adminEmail: "${u.email}" }) { organization { slug } invitation { id } } }`,
    );
    expect(created.createOrganization).toEqual({ organization: { slug: 'by-platform' }, invitation: null });
    const revoked = await platformCli(f.ctx.config, { email: u.email, grant: false, ...deps() });
    expect(revoked.ended).toBe(1);
    expect(await f.mod.context(ANONYMOUS).people.sessions.get(s.sessionId)).toBeNull();
    const after = (await f.ok(ANONYMOUS, LOGIN, { e: u.email, p: u.password })).login;
    expect(after.sessionId).not.toBe(s.sessionId);
    const platformRow = await f.t.db.selectFrom('users').select('platform_operator').where('id', '=', u.id).executeTakeFirstOrThrow();
    expect(platformRow.platform_operator).toBe(false);
    expect(
      codes(
        await f.run(
          { ...op, platform: undefined },
          `mutation { createOrganization(input: { slug: "nope-1", name: "n", adminEmail: "a@b.co" }) { organization { id } } }`,
        ),
      ),
    ).toEqual(['FORBIDDEN']);
  });
});
