import { type SqlBool, sql } from 'kysely';
import { audit } from '../../../lib/audit.js';
import { generateSecretToken, hashToken } from '../../../lib/auth.js';
import { type Db, isUniqueViolation, type Tx, withTenant } from '../../../lib/db.js';
import { BadInputError, ConflictError, NotFoundError } from '../../../lib/errors.js';
import type { Role } from '../../../lib/identity.js';
import type { OrganizationRow } from './shared.js';

export interface InvitationRow {
  id: string;
  org_id: string;
  email: string;
  role: Role;
  invited_by: string;
  created_at: Date;
  expires_at: Date;
  accepted_at: Date | null;
  revoked_at: Date | null;
}

const columns = ['id', 'org_id', 'email', 'role', 'invited_by', 'created_at', 'expires_at', 'accepted_at', 'revoked_at'] as const;

/** What accepting an invitation made: the person (new or existing) and their membership. */
export interface Accepted {
  invitation: InvitationRow;
  userId: string;
  created: boolean;
  org: OrganizationRow;
}

/** The invitation a token names, with its organization's slug and name (no tenant: the token is all the caller has). */
const byToken = (db: Db | Tx, token: string) =>
  db
    .selectFrom('invitations as i')
    .innerJoin('organizations as o', 'o.id', 'i.org_id')
    .select([...columns.map((c) => `i.${c}` as const), 'o.slug', 'o.name'])
    .where('i.token_hash', '=', hashToken(token));

/** The invitation's link was wrong, used, revoked or expired: one answer for all, so a guess learns nothing. */
const unusable = () => new BadInputError('this invitation link is invalid, expired, revoked or already used', { field: 'token' });

/**
 * Invitations into an organization: a single-use token (stored as its SHA-256) mailed to the
 * address; accepting it makes a membership with the invited role, for a new account or an
 * existing one. One open invitation per address and organization (inviting again replaces it).
 */
export class InvitationRepository {
  constructor(readonly db: Db) {}

  /**
   * Creates an invitation (revoking an open one for the same address) and runs `deliver` with its
   * token inside the transaction: when delivery fails, no invitation exists.
   */
  create(
    orgId: string,
    actor: string,
    input: { email: string; role: Role; ttlMs: number },
    deliver: (token: string, row: InvitationRow, tx: Tx) => Promise<void>,
  ): Promise<InvitationRow> {
    return withTenant(this.db, orgId, async (tx) => {
      const member = await tx
        .selectFrom('memberships as m')
        .innerJoin('users as u', 'u.id', 'm.user_id')
        .select('u.id')
        .where('m.org_id', '=', orgId)
        .where(sql<SqlBool>`lower(u.email) = lower(${input.email})`)
        .executeTakeFirst();
      if (member) throw new ConflictError(`${input.email} is already a member of this organization`);
      const replaced = await tx
        .updateTable('invitations')
        .set({ revoked_at: sql`now()` })
        .where('org_id', '=', orgId)
        .where(sql<SqlBool>`lower(email) = lower(${input.email})`)
        .where('accepted_at', 'is', null)
        .where('revoked_at', 'is', null)
        .returning(columns)
        .execute();
      for (const r of replaced)
        await audit(tx, orgId, actor, 'invitation.revoke', 'invitation', r.id, { email: r.email }, { replaced: true });
      const { token, hash } = generateSecretToken('inv');
      let row: InvitationRow;
      try {
        row = (await tx
          .insertInto('invitations')
          .values({
            org_id: orgId,
            email: input.email,
            role: input.role,
            token_hash: hash,
            invited_by: actor,
            expires_at: new Date(Date.now() + input.ttlMs),
          })
          .returning(columns)
          .executeTakeFirstOrThrow()) as InvitationRow;
      } catch (e) {
        if (isUniqueViolation(e)) throw new ConflictError(`an invitation for ${input.email} is being created right now`);
        throw e;
      }
      await audit(tx, orgId, actor, 'invitation.create', 'invitation', row.id, null, { email: row.email, role: row.role });
      await deliver(token, row, tx);
      return row;
    });
  }

  list(orgId: string): Promise<InvitationRow[]> {
    return withTenant(
      this.db,
      orgId,
      (tx) =>
        tx
          .selectFrom('invitations')
          .select(columns)
          .where('org_id', '=', orgId)
          .orderBy('created_at', 'desc')
          .limit(500)
          .execute() as Promise<InvitationRow[]>,
    );
  }

  revoke(orgId: string, actor: string, id: string): Promise<InvitationRow> {
    return withTenant(this.db, orgId, async (tx) => {
      const before = (await tx
        .selectFrom('invitations')
        .select(columns)
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .executeTakeFirst()) as InvitationRow | undefined;
      if (!before) throw new NotFoundError(`invitation ${id}`);
      if (before.revoked_at || before.accepted_at) return before;
      const after = (await tx
        .updateTable('invitations')
        .set({ revoked_at: sql`now()` })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .returning(columns)
        .executeTakeFirstOrThrow()) as InvitationRow;
      await audit(tx, orgId, actor, 'invitation.revoke', 'invitation', id, { email: before.email }, null);
      return after;
    });
  }

  /**
   * The open invitation a token names, with its organization (no tenant: the token is all the
   * caller has), or undefined when it is unknown, used, revoked or expired.
   */
  async findOpen(token: string): Promise<{ invitation: InvitationRow; org: OrganizationRow; accountExists: boolean } | undefined> {
    if (!/^inv_[A-Za-z0-9_-]{43}$/.test(token)) return undefined;
    const row = await byToken(this.db, token)
      .select((eb) =>
        eb.exists(eb.selectFrom('users as u').select('u.id').where(sql<SqlBool>`lower(u.email) = lower(i.email)`)).as('account_exists'),
      )
      .where('i.accepted_at', 'is', null)
      .where('i.revoked_at', 'is', null)
      .where('i.expires_at', '>', sql<Date>`now()`)
      .executeTakeFirst();
    if (!row) return undefined;
    const { slug, name, account_exists, ...invitation } = row;
    return { invitation: invitation as InvitationRow, org: { id: row.org_id, slug, name }, accountExists: Boolean(account_exists) };
  }

  /**
   * Accepts an open invitation, once: marks it accepted and makes the membership, for the account
   * with its e-mail when one exists (`existing`, whose password the caller verified), or a new
   * account (`create`). Two accepts at once: one wins, the other finds the invitation used.
   */
  accept(token: string, person: { existing: string } | { create: { name: string; passwordHash: string } }): Promise<Accepted> {
    return this.db.transaction().execute(async (sys) => {
      const found = await byToken(sys, token).forUpdate('i').executeTakeFirst();
      if (!found || found.accepted_at || found.revoked_at || new Date(found.expires_at).getTime() <= Date.now()) throw unusable();
      let userId: string;
      let created = false;
      if ('existing' in person) userId = person.existing;
      else {
        const u = await sys
          .insertInto('users')
          .values({
            email: found.email,
            name: person.create.name,
            password_hash: person.create.passwordHash,
            password_changed_at: sql`now()`,
          })
          .returning('id')
          .executeTakeFirstOrThrow()
          .catch((e: unknown) => {
            if (isUniqueViolation(e))
              throw new ConflictError('an account with this e-mail was created meanwhile: accept with its password');
            throw e;
          });
        userId = u.id;
        created = true;
      }
      const invitation = (await sys
        .updateTable('invitations')
        .set({ accepted_at: sql`now()`, accepted_by: userId })
        .where('id', '=', found.id)
        .returning(columns)
        .executeTakeFirstOrThrow()) as InvitationRow;
      const orgId = invitation.org_id;
      const had = await sys
        .selectFrom('memberships')
        .select('role')
        .where('org_id', '=', orgId)
        .where('user_id', '=', userId)
        .executeTakeFirst();
      if (!had) await sys.insertInto('memberships').values({ org_id: orgId, user_id: userId, role: invitation.role }).execute();
      const actor = `user:${userId}`;
      await audit(sys, orgId, actor, 'invitation.accept', 'invitation', invitation.id, null, { email: invitation.email, created });
      if (!had) await audit(sys, orgId, actor, 'membership.create', 'user', userId, null, { role: invitation.role, via: 'invitation' });
      return { invitation, userId, created, org: { id: orgId, slug: found.slug, name: found.name } };
    });
  }
}
