import { type SqlBool, sql } from 'kysely';
import { actorOf, audit } from '../../../lib/audit.js';
import { type Db, type Tx, withTenant } from '../../../lib/db.js';
import { ConflictError, NotFoundError } from '../../../lib/errors.js';
import type { Identity, Role } from '../../../lib/identity.js';

/** A person as a member of one organization. */
export interface MemberRow {
  id: string;
  email: string;
  name: string;
  role: Role;
  created_at: Date;
  last_login_at: Date | null;
  disabled_at: Date | null;
  platform_operator: boolean;
  /** when the membership was made */
  joined_at: Date;
}

/** What sign-in and password changes read about a person (no tenant: a person is in several). */
export interface UserRow {
  id: string;
  email: string;
  name: string;
  password_hash: string;
  platform_operator: boolean;
  disabled_at: Date | null;
}

const userColumns = ['id', 'email', 'name', 'password_hash', 'platform_operator', 'disabled_at'] as const;

const memberColumns = [
  'u.id',
  'u.email',
  'u.name',
  'm.role',
  'u.created_at',
  'u.last_login_at',
  'u.disabled_at',
  'u.platform_operator',
  'm.created_at as joined_at',
] as const;

/** The organization's admins, locked for the transaction, so that two demotions cannot both pass the last-admin check. */
async function lockedAdmins(tx: Tx, orgId: string): Promise<string[]> {
  const rows = await tx
    .selectFrom('memberships')
    .select('user_id')
    .where('org_id', '=', orgId)
    .where('role', '=', 'admin')
    .forUpdate()
    .execute();
  return rows.map((r) => r.user_id);
}

/**
 * People and their memberships. Users carry no `org_id` (one person, several organizations):
 * membership changes run in the organization's tenant transaction (RLS on `memberships`); what is
 * the person's own (sign-in, password) runs without a tenant.
 */
export class UserRepository {
  constructor(readonly db: Db) {}

  findUserForLogin(email: string): Promise<UserRow | undefined> {
    return this.db
      .selectFrom('users')
      .select(userColumns)
      .where(sql<SqlBool>`lower(email) = lower(${email})`)
      .where('disabled_at', 'is', null)
      .executeTakeFirst();
  }

  findUser(id: string): Promise<UserRow | undefined> {
    return this.db.selectFrom('users').select(userColumns).where('id', '=', id).executeTakeFirst();
  }

  findUserByEmail(email: string): Promise<UserRow | undefined> {
    return this.db.selectFrom('users').select(userColumns).where(sql<SqlBool>`lower(email) = lower(${email})`).executeTakeFirst();
  }

  memberships(userId: string) {
    return this.db
      .selectFrom('memberships as m')
      .innerJoin('organizations as o', 'o.id', 'm.org_id')
      .select(['m.role', 'o.id', 'o.slug', 'o.name'])
      .where('m.user_id', '=', userId)
      .orderBy('m.created_at')
      .orderBy('o.slug')
      .execute();
  }

  /** The person's role in the organization, or undefined (no tenant: sign-in and refresh ask before they have one). */
  async roleIn(userId: string, orgId: string): Promise<Role | undefined> {
    const r = await this.db
      .selectFrom('memberships as m')
      .innerJoin('users as u', 'u.id', 'm.user_id')
      .select('m.role')
      .where('m.user_id', '=', userId)
      .where('m.org_id', '=', orgId)
      .where('u.disabled_at', 'is', null)
      .executeTakeFirst();
    return r?.role as Role | undefined;
  }

  async recordLogin(orgId: string, userId: string): Promise<void> {
    await withTenant(this.db, orgId, async (tx) => {
      await tx.updateTable('users').set({ last_login_at: sql`now()` }).where('id', '=', userId).execute();
      await audit(tx, orgId, `user:${userId}`, 'login', 'user', userId, null, null);
    });
  }

  listMembers(orgId: string): Promise<MemberRow[]> {
    return withTenant(
      this.db,
      orgId,
      (tx) =>
        tx
          .selectFrom('memberships as m')
          .innerJoin('users as u', 'u.id', 'm.user_id')
          .select(memberColumns)
          .where('m.org_id', '=', orgId)
          .orderBy(sql`lower(u.email)`)
          .execute() as Promise<MemberRow[]>,
    );
  }

  /** One member of the organization; NOT_FOUND for anyone else (another tenant's people included). */
  member(orgId: string, userId: string): Promise<MemberRow> {
    return withTenant(this.db, orgId, (tx) => this.memberIn(tx, orgId, userId));
  }

  private async memberIn(tx: Tx, orgId: string, userId: string): Promise<MemberRow> {
    const row = await tx
      .selectFrom('memberships as m')
      .innerJoin('users as u', 'u.id', 'm.user_id')
      .select(memberColumns)
      .where('m.org_id', '=', orgId)
      .where('m.user_id', '=', userId)
      .executeTakeFirst();
    if (!row) throw new NotFoundError(`member ${userId}`);
    return row as MemberRow;
  }

  /** Changes a member's role; the organization's last admin cannot be demoted. */
  changeRole(identity: Identity, userId: string, role: Role): Promise<{ before: MemberRow; after: MemberRow }> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const admins = await lockedAdmins(tx, orgId);
      const before = await this.memberIn(tx, orgId, userId);
      if (before.role === role) return { before, after: before };
      if (before.role === 'admin' && admins.length <= 1) {
        throw new ConflictError('the last admin of an organization cannot be demoted: make another member admin first');
      }
      await tx.updateTable('memberships').set({ role }).where('org_id', '=', orgId).where('user_id', '=', userId).execute();
      const after = { ...before, role };
      await audit(tx, orgId, actorOf(identity), 'membership.role_change', 'user', userId, { role: before.role }, { role });
      return { before, after };
    });
  }

  /** Removes a member from the organization (the account stays: it may belong to others); not the last admin. */
  removeMember(identity: Identity, userId: string): Promise<MemberRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const admins = await lockedAdmins(tx, orgId);
      const before = await this.memberIn(tx, orgId, userId);
      if (before.role === 'admin' && admins.length <= 1) {
        throw new ConflictError('the last admin of an organization cannot be removed: make another member admin first');
      }
      await tx.deleteFrom('memberships').where('org_id', '=', orgId).where('user_id', '=', userId).execute();
      await audit(tx, orgId, actorOf(identity), 'membership.remove', 'user', userId, { email: before.email, role: before.role }, null);
      return before;
    });
  }

  /**
   * Sets a person's password (change or reset), voids their open reset links, and records `action`
   * in every organization they belong to (a person's credential is every one of them's concern).
   */
  async setPassword(userId: string, passwordHash: string, actor: string, action: string): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      await tx
        .updateTable('users')
        .set({ password_hash: passwordHash, password_changed_at: sql`now()` })
        .where('id', '=', userId)
        .execute();
      await tx
        .updateTable('password_resets')
        .set({ used_at: sql`now()` })
        .where('user_id', '=', userId)
        .where('used_at', 'is', null)
        .execute();
      await auditPerson(tx, userId, actor, action);
    });
  }

  /** Records `action` about a person in every organization they belong to. */
  async audit(userId: string, actor: string, action: string, after: unknown = null): Promise<void> {
    await this.db.transaction().execute((tx) => auditPerson(tx, userId, actor, action, after));
  }

  /** Makes a person a platform operator, or not (`rulr platform grant|revoke`); undefined when no account has the e-mail. */
  async setPlatformOperator(email: string, on: boolean): Promise<UserRow | undefined> {
    return this.db.transaction().execute(async (tx) => {
      const row = await tx
        .updateTable('users')
        .set({ platform_operator: on })
        .where(sql<SqlBool>`lower(email) = lower(${email})`)
        .returning(userColumns)
        .executeTakeFirst();
      if (row) await auditPerson(tx, row.id, 'system:cli', on ? 'user.platform_grant' : 'user.platform_revoke');
      return row;
    });
  }
}

/** One audit row per organization of the person (the system path: `audit_logs` accepts any tenant here). */
async function auditPerson(tx: Tx, userId: string, actor: string, action: string, after: unknown = null): Promise<void> {
  const orgs = await tx.selectFrom('memberships').select('org_id').where('user_id', '=', userId).execute();
  for (const o of orgs) await audit(tx, o.org_id, actor, action, 'user', userId, null, after);
}
