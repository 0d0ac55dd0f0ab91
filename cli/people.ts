import type { Config } from '../lib/config.js';
import { consoleLink } from '../lib/contracts/console-links.js';
import { createDb, type Db } from '../lib/db.js';
import { createLogger } from '../lib/logger.js';
import { createMailSender, type MailSender } from '../lib/mail.js';
import { createRedis, type Redis } from '../lib/redis.js';
import { createOrganizationWithAdmin } from '../subgraphs/devices/people.js';
import { invitationMail } from '../subgraphs/devices/people-mail.js';
import { createRepositories, SessionStore } from '../subgraphs/devices/repositories/index.js';
import { createOrganizationSchema } from '../subgraphs/devices/validation.js';

interface CliDeps {
  /** reuse this database handle instead of connecting to `DATABASE_URL` (tests) */
  db?: Db | undefined;
  /** reuse this Redis connection instead of `REDIS_URL` (tests) */
  redis?: Redis | undefined;
  /** send with this instead of the configured sender (tests) */
  mail?: MailSender | undefined;
  /** return the result without printing it */
  quiet?: boolean | undefined;
}

export interface CreatedOrgResult {
  orgId: string;
  slug: string;
  /** the invitation link for a new admin (printed: whoever runs the CLI hands it over), or null */
  link: string | null;
  /** the admin's account when they had one (made admin at once) */
  adminUserId: string | null;
}

/**
 * `rulr org create <slug> --name <n> --admin <email>`: the organization, and its first admin,
 * made admin at once when they have an account, else invited: the link is printed, and mailed when
 * `SMTP_URL` is set.
 */
export async function createOrgCli(cfg: Config, o: { slug: string; name: string; admin: string } & CliDeps): Promise<CreatedOrgResult> {
  const parsed = createOrganizationSchema.safeParse({ slug: o.slug, name: o.name, adminEmail: o.admin });
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${String(issue?.path[0] ?? 'input')}: ${issue?.message ?? 'invalid'}`);
  }
  const db = o.db ?? createDb({ url: cfg.DATABASE_URL, poolSize: 2 });
  const mail = o.mail ?? (cfg.SMTP_URL ? createMailSender(cfg, createLogger('warn')) : undefined);
  let link: string | null = null;
  try {
    const r = await createOrganizationWithAdmin(
      createRepositories(db),
      'system:cli',
      { ...parsed.data, inviteTtlMs: cfg.INVITE_TTL_S * 1000 },
      async (token, row, org) => {
        link = consoleLink(cfg.MAIL_CONSOLE_URL, 'accept-invitation', token);
        await mail?.send(
          invitationMail({
            to: row.email,
            organization: org.name,
            role: row.role,
            consoleUrl: cfg.MAIL_CONSOLE_URL,
            token,
            expiresAt: new Date(row.expires_at),
          }),
        );
      },
    );
    const result = { orgId: r.organization.id, slug: r.organization.slug, link, adminUserId: r.adminUserId };
    if (!o.quiet) {
      console.log(`organization ${r.organization.slug} (${r.organization.id}) created`);
      if (link) {
        console.log(`${o.admin} is invited as its admin${mail ? ' (mailed)' : ''}; the link works once, for ${cfg.INVITE_TTL_S} s:`);
        console.log(link);
      } else console.log(`${o.admin} already had an account and is now its admin`);
    }
    return result;
  } finally {
    if (!o.mail) await mail?.close();
    if (!o.db) await db.destroy();
  }
}

/**
 * `rulr platform grant|revoke <email>`: makes a person a platform operator (from their next
 * sign-in) or not (their sessions end at once, so no token keeps the right).
 */
export async function platformCli(cfg: Config, o: { email: string; grant: boolean } & CliDeps): Promise<{ userId: string; ended: number }> {
  const db = o.db ?? createDb({ url: cfg.DATABASE_URL, poolSize: 1 });
  const redis = o.redis ?? createRedis(cfg.REDIS_URL);
  try {
    const user = await createRepositories(db).users.setPlatformOperator(o.email, o.grant);
    if (!user) throw new Error(`no account has the e-mail ${o.email}`);
    let ended = 0;
    if (!o.grant) {
      const store = new SessionStore(redis, cfg.REDIS_PREFIX, {
        idleMs: cfg.SESSION_IDLE_S * 1000,
        maxAgeMs: cfg.SESSION_MAX_AGE_S * 1000,
      });
      ended = (await store.revokeUser(user.id)).length;
    }
    if (!o.quiet) {
      console.log(
        o.grant
          ? `${user.email} is a platform operator from their next sign-in`
          : `${user.email} is no longer a platform operator (${ended} session(s) ended)`,
      );
    }
    return { userId: user.id, ended };
  } finally {
    if (!o.redis) await redis.quit().catch(() => redis.disconnect());
    if (!o.db) await db.destroy();
  }
}
