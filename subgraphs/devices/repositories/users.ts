import { type SqlBool, sql } from 'kysely';
import { audit } from '../../../lib/audit.js';
import { type Db, withTenant } from '../../../lib/db.js';

/** People and their memberships, for `login` (no tenant yet: runs as the service's own role). */
export class UserRepository {
  constructor(readonly db: Db) {}

  findUserForLogin(email: string) {
    return this.db
      .selectFrom('users')
      .select(['id', 'email', 'password_hash'])
      .where(sql<SqlBool>`lower(email) = lower(${email})`)
      .where('disabled_at', 'is', null)
      .executeTakeFirst();
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

  async recordLogin(orgId: string, userId: string): Promise<void> {
    await withTenant(this.db, orgId, (tx) => audit(tx, orgId, `user:${userId}`, 'login', 'user', userId, null, null));
  }
}
