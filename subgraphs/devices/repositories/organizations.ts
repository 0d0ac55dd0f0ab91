import { type Db, withTenant } from '../../../lib/db.js';
import type { OrganizationRow } from './shared.js';

/** Organizations, and who is asking (`Query.me`). */
export class OrganizationRepository {
  constructor(readonly db: Db) {}

  /** The organization and, for people, their email, for `Query.me`. */
  whoami(orgId: string, userId: string | null): Promise<{ org: OrganizationRow | undefined; email: string | null }> {
    return withTenant(this.db, orgId, async (tx) => {
      const org = await tx.selectFrom('organizations').select(['id', 'slug', 'name']).where('id', '=', orgId).executeTakeFirst();
      if (!userId || !org) return { org, email: null };
      // users carry no org_id; a membership row (under RLS) proves the user belongs to this tenant.
      const u = await tx
        .selectFrom('users')
        .innerJoin('memberships as m', 'm.user_id', 'users.id')
        .select('users.email')
        .where('users.id', '=', userId)
        .where('m.org_id', '=', orgId)
        .executeTakeFirst();
      return { org, email: u?.email ?? null };
    });
  }
}
