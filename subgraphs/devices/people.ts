import type { GraphQLResolveInfo } from 'graphql';
import { actorOf } from '../../lib/audit.js';
import { hashPassword, issueToken, verifyPassword } from '../../lib/auth.js';
import type { Config } from '../../lib/config.js';
import { isUuid } from '../../lib/db.js';
import { BadInputError, ErrorCode, ForbiddenError, NotFoundError, RulrError, UnauthenticatedError } from '../../lib/errors.js';
import { authorize, type Identity, type Requirement, type Role } from '../../lib/identity.js';
import type { Logger } from '../../lib/logger.js';
import type { MailSender } from '../../lib/mail.js';
import { invitationMail, passwordResetMail } from './people-mail.js';
import type {
  DevicesRepositories,
  InvitationRow,
  IssuedSession,
  MemberRow,
  OrganizationRow,
  PeopleThrottles,
  SessionStore,
  UserRow,
} from './repositories/index.js';
import {
  acceptInvitationSchema,
  changePasswordSchema,
  changeRoleSchema,
  check,
  checkId,
  createOrganizationSchema,
  inviteSchema,
  loginSchema,
  logoutSchema,
  newPasswordSchema,
  refreshSchema,
  requestResetSchema,
  resetPasswordSchema,
  switchSchema,
  tokenSchema,
} from './validation.js';

/** What people and sessions need besides SQL: sessions and throttles in Redis, and a mail sender. */
export interface PeopleServices {
  sessions: SessionStore;
  throttles: PeopleThrottles;
  mail: MailSender;
  logger: Logger;
}

/** The part of the devices subgraph's context these resolvers read. */
export interface PeopleContext {
  identity: Identity;
  repos: DevicesRepositories;
  people: PeopleServices;
}

export type PeopleConfig = Pick<
  Config,
  'RULR_SECRET' | 'JWT_ISSUER' | 'JWT_TTL_SECONDS' | 'INVITE_TTL_S' | 'RESET_TOKEN_TTL_S' | 'MAIL_CONSOLE_URL'
>;

type Args = Record<string, unknown>;
type Resolver<P = unknown> = (parent: P, args: Args, ctx: PeopleContext, info: GraphQLResolveInfo) => unknown;

/** Managing people needs an admin, or a key holding every scope (`*`). */
const ADMIN: Requirement = { role: 'admin', scope: '*' };
/** Any member sees who else is a member; an API key only with `*` (names and e-mails are not device data). */
const MEMBERS: Requirement = { role: 'viewer', scope: '*' };

/** A person's own identity (their token from `login`), for what only a person does: change a password, list sessions. */
function person(ctx: PeopleContext): Identity & { subject: string } {
  const id = ctx.identity;
  if (id.kind === 'anonymous') throw new UnauthenticatedError();
  if (id.kind !== 'user' || !isUuid(id.subject))
    throw new ForbiddenError('only a signed-in person can do this (this token names no person)');
  return id;
}

const orgOf = (m: { id: string; slug: string; name: string }): OrganizationRow => ({ id: m.id, slug: m.slug, name: m.name });

const lockedMessage = (ms: number) =>
  new RulrError(
    ErrorCode.RateLimited,
    `too many failed sign-ins: try again in ${Math.ceil(ms / 60_000)} minute(s), or reset your password`,
    { retryAfter: Math.ceil(ms / 1000) },
  );

/**
 * Creates an organization with its first admin: made admin at once when an account has the
 * e-mail, else invited (the invitation handed to `deliver` within its transaction). Used by
 * `createOrganization` and `rulr org create`. Nothing is left behind when the invitation fails.
 */
export async function createOrganizationWithAdmin(
  repos: Pick<DevicesRepositories, 'organizations' | 'users' | 'invitations'>,
  actor: string,
  input: { slug: string; name: string; adminEmail: string; inviteTtlMs: number },
  deliver: (token: string, invitation: InvitationRow, org: OrganizationRow) => Promise<void>,
): Promise<{ organization: OrganizationRow; invitation: InvitationRow | null; adminUserId: string | null }> {
  const existing = await repos.users.findUserByEmail(input.adminEmail);
  const organization = await repos.organizations.create(actor, { slug: input.slug, name: input.name, adminUserId: existing?.id });
  if (existing) return { organization, invitation: null, adminUserId: existing.id };
  try {
    const invitation = await repos.invitations.create(
      organization.id,
      actor,
      { email: input.adminEmail, role: 'admin', ttlMs: input.inviteTtlMs },
      (token, row) => deliver(token, row, organization),
    );
    return { organization, invitation, adminUserId: null };
  } catch (e) {
    await repos.organizations.remove(actor, organization.id);
    throw e;
  }
}

/** The resolvers of people and sessions (the `# --- people and sessions` block of the SDL), and `login`. */
export function peopleResolvers(config: PeopleConfig) {
  const jwt = { secret: config.RULR_SECRET, issuer: config.JWT_ISSUER, ttlSeconds: config.JWT_TTL_SECONDS };
  const inviteTtlMs = config.INVITE_TTL_S * 1000;
  const resetTtlMs = config.RESET_TOKEN_TTL_S * 1000;
  // Unknown e-mails still pay for one argon2 verification, so timing does not reveal which exist.
  let dummyHash: Promise<string> | undefined;
  const dummy = () => {
    dummyHash ??= hashPassword('rulr-timing-equaliser');
    return dummyHash;
  };

  /** A new session for a member, signed in: the access token and what the console keeps. */
  async function signIn(ctx: PeopleContext, user: Pick<UserRow, 'id' | 'platform_operator'>, org: OrganizationRow, role: Role) {
    const issued = await ctx.people.sessions.create({ userId: user.id, orgId: org.id, role, platform: user.platform_operator });
    await ctx.repos.users.recordLogin(org.id, user.id);
    return payload(issued, org);
  }

  async function payload(issued: IssuedSession, org: OrganizationRow) {
    const s = issued.session;
    const now = Math.floor(Date.now() / 1000);
    const token = await issueToken({ userId: s.userId, orgId: s.orgId, role: s.role, sessionId: s.id, platform: s.platform }, jwt, now);
    return {
      token,
      expiresAt: new Date((now + jwt.ttlSeconds) * 1000),
      role: s.role,
      organization: org,
      refreshToken: issued.refreshToken,
      refreshExpiresAt: new Date(issued.refreshExpiresAt),
      sessionId: s.id,
    };
  }

  /**
   * Verifies a password for `email`, counting failures towards the lockout (an unknown address
   * too, with the same answer and about the same time); the account on success.
   */
  async function checkPassword(ctx: PeopleContext, email: string, password: string): Promise<UserRow> {
    const locked = await ctx.people.throttles.lockedFor(email);
    if (locked > 0) throw lockedMessage(locked);
    const user = await ctx.repos.users.findUserForLogin(email);
    const ok = user ? await verifyPassword(user.password_hash, password) : await verifyPassword(await dummy(), password).then(() => false);
    if (!user || !ok) {
      const lockedNow = await ctx.people.throttles.failed(email);
      if (lockedNow > 0 && user)
        await ctx.repos.users.audit(user.id, 'system:login', 'user.lock', { forSeconds: Math.round(lockedNow / 1000) });
      throw new UnauthenticatedError('invalid email or password');
    }
    await ctx.people.throttles.succeeded(email);
    return user;
  }

  /** A member of the asking admin's organization (NOT_FOUND for anyone else). */
  const memberOf = (ctx: PeopleContext, id: Identity, userId: unknown) => ctx.repos.users.member(id.orgId, checkId(userId, 'userId'));

  /** Ends a member's sessions in this organization (a role change, a removal, an admin's revocation). */
  const endSessionsIn = (ctx: PeopleContext, orgId: string, userId: string) =>
    ctx.people.sessions.revokeUser(userId, (s) => s.orgId === orgId);

  /** The password-reset mail, after the answer: the same answer and timing whether or not an account exists. */
  async function sendReset(ctx: PeopleContext, email: string): Promise<void> {
    if (!(await ctx.people.throttles.resetAllowed(email))) {
      ctx.people.logger.warn('password reset not sent: hourly limit of this address reached');
      return;
    }
    const user = await ctx.repos.users.findUserForLogin(email);
    if (!user) return;
    const token = await ctx.repos.passwordResets.create(user.id, resetTtlMs);
    await ctx.people.mail.send(passwordResetMail({ to: user.email, consoleUrl: config.MAIL_CONSOLE_URL, token, ttlMs: resetTtlMs }));
    await ctx.repos.users.audit(user.id, 'system:reset', 'user.password_reset_request');
  }

  const deliverInvitation = (ctx: PeopleContext, orgName: string) => async (token: string, row: InvitationRow) => {
    await ctx.people.mail.send(
      invitationMail({
        to: row.email,
        organization: orgName,
        role: row.role,
        consoleUrl: config.MAIL_CONSOLE_URL,
        token,
        expiresAt: new Date(row.expires_at),
      }),
    );
  };

  const Query: Record<string, Resolver> = {
    async users(_p, _a, ctx) {
      const id = authorize(ctx.identity, MEMBERS);
      return ctx.repos.users.listMembers(id.orgId);
    },
    invitations(_p, _a, ctx) {
      const id = authorize(ctx.identity, ADMIN);
      return ctx.repos.invitations.list(id.orgId);
    },
    async memberships(_p, _a, ctx) {
      const id = person(ctx);
      const rows = await ctx.repos.users.memberships(id.subject);
      return rows.map((m) => ({ organization: orgOf(m), role: m.role, current: m.id === id.orgId }));
    },
    async sessions(_p, _a, ctx) {
      const id = person(ctx);
      const [sessions, memberships] = await Promise.all([
        ctx.people.sessions.listUser(id.subject),
        ctx.repos.users.memberships(id.subject),
      ]);
      const orgs = new Map(memberships.map((m) => [m.id, orgOf(m)]));
      return sessions.map((s) => ({
        id: s.id,
        organization: orgs.get(s.orgId) ?? null,
        createdAt: new Date(s.createdAt),
        lastRefreshedAt: new Date(s.refreshedAt),
        expiresAt: new Date(s.expiresAt),
        current: s.id === id.sessionId,
      }));
    },
    async invitation(_p, args, ctx) {
      const { token } = check(tokenSchema, args, '');
      const found = await ctx.repos.invitations.findOpen(token);
      if (!found) return null;
      const i = found.invitation;
      return { email: i.email, role: i.role, organization: found.org, expiresAt: i.expires_at, accountExists: found.accountExists };
    },
  };

  const Mutation: Record<string, Resolver> = {
    async login(_p, args, ctx) {
      const a = check(loginSchema, args, '');
      const user = await checkPassword(ctx, a.email, a.password);
      const memberships = await ctx.repos.users.memberships(user.id);
      const m = a.organization ? memberships.find((x) => x.slug === a.organization) : memberships[0];
      if (!m) {
        throw new UnauthenticatedError(
          a.organization ? `you are not a member of organization "${a.organization}"` : 'your account belongs to no organization',
        );
      }
      return signIn(ctx, user, orgOf(m), m.role as Role);
    },
    async refreshSession(_p, args, ctx) {
      const { refreshToken } = check(refreshSchema, args, '');
      const r = await ctx.people.sessions.rotate(refreshToken);
      if (r.kind === 'reused') {
        // A refresh token used twice was copied: the session ends for whoever holds it.
        const s = await ctx.people.sessions.get(r.sessionId);
        if (s) {
          await ctx.people.sessions.revoke([s]);
          await ctx.repos.users.audit(s.userId, 'system:refresh', 'session.reuse_detected', { sessionId: s.id });
        }
        throw new UnauthenticatedError('this refresh token was already used: the session has ended, sign in again');
      }
      if (r.kind !== 'ok') throw new UnauthenticatedError('invalid or expired refresh token: sign in again');
      const s = r.issued.session;
      // The membership is read again: a session cannot outlive it, and its role follows the database.
      const role = await ctx.repos.users.roleIn(s.userId, s.orgId);
      const org = (await ctx.repos.users.memberships(s.userId)).find((m) => m.id === s.orgId);
      if (!role || !org || role !== s.role) {
        await ctx.people.sessions.revoke([s]);
        throw new UnauthenticatedError('your membership changed: sign in again');
      }
      return payload(r.issued, orgOf(org));
    },
    async logout(_p, args, ctx) {
      const { refreshToken } = check(logoutSchema, args, '');
      const id = ctx.identity;
      const s = refreshToken ? await ctx.people.sessions.ownerOf(refreshToken) : undefined;
      if (!refreshToken && id.kind === 'anonymous') throw new UnauthenticatedError('logout needs a session token or a refresh token');
      const ending = s ?? (id.sessionId && !refreshToken ? { id: id.sessionId, userId: id.subject } : undefined);
      if (ending) {
        await ctx.people.sessions.revoke([ending]);
        await ctx.repos.users.audit(ending.userId, `user:${ending.userId}`, 'session.logout', { sessionId: ending.id });
      }
      return true;
    },
    async revokeSession(_p, args, ctx) {
      const id = person(ctx);
      const sid = typeof args.id === 'string' ? args.id : '';
      const ended = await ctx.people.sessions.revokeUser(id.subject, (s) => s.id === sid);
      if (!ended.length) throw new NotFoundError(`session ${sid}`);
      await ctx.repos.users.audit(id.subject, actorOf(id), 'session.revoke', { sessionId: sid });
      return true;
    },
    async switchOrganization(_p, args, ctx) {
      const id = person(ctx);
      const { organization } = check(switchSchema, args, '');
      const m = (await ctx.repos.users.memberships(id.subject)).find((x) => x.slug === organization || x.id === organization);
      if (!m) throw new ForbiddenError(`you are not a member of organization "${organization}"`);
      const user = await ctx.repos.users.findUser(id.subject);
      if (!user || user.disabled_at) throw new UnauthenticatedError('your account is disabled');
      const next = await signIn(ctx, user, orgOf(m), m.role as Role);
      if (id.sessionId) await ctx.people.sessions.revoke([{ id: id.sessionId, userId: id.subject }]);
      return next;
    },
    async changePassword(_p, args, ctx) {
      const id = person(ctx);
      const a = check(changePasswordSchema, args, '');
      const user = await ctx.repos.users.findUser(id.subject);
      if (!user) throw new UnauthenticatedError('your account no longer exists');
      await checkPassword(ctx, user.email, a.currentPassword);
      await ctx.repos.users.setPassword(user.id, await hashPassword(a.newPassword), actorOf(id), 'user.password_change');
      await ctx.people.sessions.revokeUser(user.id, (s) => s.id !== id.sessionId);
      return true;
    },
    async requestPasswordReset(_p, args, ctx) {
      const { email } = check(requestResetSchema, args, '');
      void sendReset(ctx, email).catch((e: unknown) => ctx.people.logger.warn({ err: e }, 'password reset mail not sent'));
      return true;
    },
    async resetPassword(_p, args, ctx) {
      const a = check(resetPasswordSchema, args, '');
      const userId = await ctx.repos.passwordResets.consume(a.token);
      const user = userId ? await ctx.repos.users.findUser(userId) : undefined;
      if (!user || user.disabled_at) throw new BadInputError('this reset link is invalid, expired or already used', { field: 'token' });
      await ctx.repos.users.setPassword(user.id, await hashPassword(a.newPassword), `user:${user.id}`, 'user.password_reset');
      await ctx.people.throttles.unlock(user.email);
      await ctx.people.sessions.revokeUser(user.id);
      return true;
    },
    async inviteUser(_p, args, ctx) {
      const id = authorize(ctx.identity, ADMIN);
      const a = check(inviteSchema, args, '');
      const { org } = await ctx.repos.organizations.whoami(id.orgId, null);
      if (!org) throw new UnauthenticatedError('your organization no longer exists');
      return ctx.repos.invitations.create(id.orgId, actorOf(id), { ...a, ttlMs: inviteTtlMs }, deliverInvitation(ctx, org.name));
    },
    revokeInvitation(_p, args, ctx) {
      const id = authorize(ctx.identity, ADMIN);
      return ctx.repos.invitations.revoke(id.orgId, actorOf(id), checkId(args.id));
    },
    async acceptInvitation(_p, args, ctx) {
      const a = check(acceptInvitationSchema, args, '');
      const found = await ctx.repos.invitations.findOpen(a.token);
      if (!found) throw new BadInputError('this invitation link is invalid, expired, revoked or already used', { field: 'token' });
      const email = found.invitation.email;
      let accepted: Awaited<ReturnType<DevicesRepositories['invitations']['accept']>>;
      if (found.accountExists) {
        // An existing account proves itself with its own password (lockout applies).
        const user = await checkPassword(ctx, email, a.password);
        accepted = await ctx.repos.invitations.accept(a.token, { existing: user.id });
      } else {
        check(newPasswordSchema, a.password, 'password');
        accepted = await ctx.repos.invitations.accept(a.token, {
          create: { name: a.name ?? '', passwordHash: await hashPassword(a.password) },
        });
      }
      const user = await ctx.repos.users.findUser(accepted.userId);
      const role = user ? await ctx.repos.users.roleIn(user.id, accepted.org.id) : undefined;
      if (!user || !role) throw new UnauthenticatedError('your account is disabled');
      return signIn(ctx, user, accepted.org, role);
    },
    async changeRole(_p, args, ctx) {
      const id = authorize(ctx.identity, ADMIN);
      const { role } = check(changeRoleSchema, args, '');
      const { before, after } = await ctx.repos.users.changeRole(id, checkId(args.userId, 'userId'), role);
      if (before.role !== after.role) await endSessionsIn(ctx, id.orgId, after.id);
      return after;
    },
    async removeMember(_p, args, ctx) {
      const id = authorize(ctx.identity, ADMIN);
      const removed = await ctx.repos.users.removeMember(id, checkId(args.userId, 'userId'));
      await endSessionsIn(ctx, id.orgId, removed.id);
      return true;
    },
    async unlockUser(_p, args, ctx) {
      const id = authorize(ctx.identity, ADMIN);
      const member = await memberOf(ctx, id, args.userId);
      if (await ctx.people.throttles.unlock(member.email)) await ctx.repos.users.audit(member.id, actorOf(id), 'user.unlock');
      return member;
    },
    async revokeUserSessions(_p, args, ctx) {
      const id = authorize(ctx.identity, ADMIN);
      const member = await memberOf(ctx, id, args.userId);
      const ended = await endSessionsIn(ctx, id.orgId, member.id);
      if (ended.length) await ctx.repos.users.audit(member.id, actorOf(id), 'session.revoke', { sessions: ended.length, orgId: id.orgId });
      return ended.length;
    },
    async createOrganization(_p, args, ctx) {
      const id = ctx.identity;
      if (id.kind === 'anonymous') throw new UnauthenticatedError();
      if (!(id.kind === 'system' || (id.kind === 'user' && id.platform === true))) {
        throw new ForbiddenError('only platform operators can create organizations');
      }
      const input = check(createOrganizationSchema, args.input, 'input');
      const r = await createOrganizationWithAdmin(ctx.repos, actorOf(id), { ...input, inviteTtlMs }, (token, row, org) =>
        deliverInvitation(ctx, org.name)(token, row),
      );
      return { organization: r.organization, invitation: r.invitation };
    },
  };

  const User: Record<string, Resolver<MemberRow>> = {
    createdAt: (u) => u.created_at,
    joinedAt: (u) => u.joined_at,
    lastLoginAt: (u) => u.last_login_at,
    disabled: (u) => u.disabled_at !== null,
    async lockedUntil(u, _a, ctx) {
      const ms = await ctx.people.throttles.lockedFor(u.email);
      return ms > 0 ? new Date(Date.now() + ms) : null;
    },
  };

  const Invitation: Record<string, Resolver<InvitationRow>> = {
    invitedBy: (i) => i.invited_by,
    createdAt: (i) => i.created_at,
    expiresAt: (i) => i.expires_at,
    acceptedAt: (i) => i.accepted_at,
    revokedAt: (i) => i.revoked_at,
    status: (i) =>
      i.accepted_at ? 'accepted' : i.revoked_at ? 'revoked' : new Date(i.expires_at).getTime() <= Date.now() ? 'expired' : 'pending',
  };

  const Me: Record<string, Resolver<{ name?: string | null }>> = {
    name: (m) => m.name ?? null,
    platformOperator: (_m, _a, ctx) => ctx.identity.kind === 'user' && ctx.identity.platform === true,
  };

  return {
    Query,
    Mutation,
    User,
    Invitation,
    Me,
    InvitationStatus: { PENDING: 'pending', ACCEPTED: 'accepted', REVOKED: 'revoked', EXPIRED: 'expired' },
  };
}
