import { audit } from '../../../lib/audit.js';
import { type Db, isUniqueViolation, withTenant } from '../../../lib/db.js';
import { ConflictError } from '../../../lib/errors.js';
import type { OrganizationRow } from './shared.js';

/** Organizations, and who is asking (`Query.me`). */
export class OrganizationRepository {
  constructor(readonly db: Db) {}

  /** The organization and, for people, their email, for `Query.me`. */
  whoami(orgId: string, userId: string | null): Promise<{ org: OrganizationRow | undefined; email: string | null; name: string | null }> {
    return withTenant(this.db, orgId, async (tx) => {
      const org = await tx.selectFrom('organizations').select(['id', 'slug', 'name']).where('id', '=', orgId).executeTakeFirst();
      if (!userId || !org) return { org, email: null, name: null };
      // users carry no org_id; a membership row (under RLS) proves the user belongs to this tenant.
      const u = await tx
        .selectFrom('users')
        .innerJoin('memberships as m', 'm.user_id', 'users.id')
        .select(['users.email', 'users.name'])
        .where('users.id', '=', userId)
        .where('m.org_id', '=', orgId)
        .executeTakeFirst();
      return { org, email: u?.email ?? null, name: u?.name ?? null };
    });
  }

  /**
   * A new organization (platform operators and `rulr org create`), with `admin` as its first
   * admin when that person has an account already (else the caller invites them).
   */
  async create(actor: string, input: { slug: string; name: string; adminUserId?: string | undefined }): Promise<OrganizationRow> {
    try {
      return await this.db.transaction().execute(async (tx) => {
        const org = await tx
          .insertInto('organizations')
          .values({ slug: input.slug, name: input.name })
          .returning(['id', 'slug', 'name'])
          .executeTakeFirstOrThrow();
        await audit(tx, org.id, actor, 'organization.create', 'organization', org.id, null, { slug: org.slug, name: org.name });
        if (input.adminUserId) {
          await tx.insertInto('memberships').values({ org_id: org.id, user_id: input.adminUserId, role: 'admin' }).execute();
          await audit(tx, org.id, actor, 'membership.create', 'user', input.adminUserId, null, { role: 'admin' });
        }
        return org;
      });
    } catch (e) {
      if (isUniqueViolation(e)) throw new ConflictError(`an organization with slug "${input.slug}" already exists`);
      throw e;
    }
  }

  /** Deletes an organization made a moment ago whose first admin could not be invited (nothing else refers to it yet). */
  async remove(actor: string, id: string): Promise<void> {
    await this.db.transaction().execute(async (tx) => {
      await tx.deleteFrom('organizations').where('id', '=', id).execute();
      await audit(tx, id, actor, 'organization.delete', 'organization', id, null, { reason: 'first admin not invited' });
    });
  }
}
