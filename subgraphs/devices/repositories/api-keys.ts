import { sql } from 'kysely';
import { actorOf, audit } from '../../../lib/audit.js';
import { generateApiKey } from '../../../lib/auth.js';
import { type Db, isUuid, withTenant } from '../../../lib/db.js';
import { NotFoundError } from '../../../lib/errors.js';
import type { Identity } from '../../../lib/identity.js';
import type { ApiKeyRow } from './shared.js';

const apiKeyColumns = ['id', 'name', 'prefix', 'scopes', 'created_at', 'last_used_at', 'expires_at', 'revoked_at'] as const;

/** API keys: created (shown once, stored hashed), listed and revoked by admins. */
export class ApiKeyRepository {
  constructor(readonly db: Db) {}

  listApiKeys(orgId: string): Promise<ApiKeyRow[]> {
    return withTenant(this.db, orgId, (tx) =>
      tx.selectFrom('api_keys').select(apiKeyColumns).where('org_id', '=', orgId).orderBy('created_at', 'desc').execute(),
    );
  }

  createApiKey(
    identity: Identity,
    input: { name: string; scopes: string[]; expiresAt?: Date | null | undefined },
  ): Promise<{ row: ApiKeyRow; key: string }> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const { key, prefix, hash } = generateApiKey();
      const row = await tx
        .insertInto('api_keys')
        .values({
          org_id: orgId,
          name: input.name,
          prefix,
          key_hash: hash,
          scopes: input.scopes,
          // Tokens from an external issuer or the CLI may name no local user.
          created_by:
            identity.kind === 'user' && isUuid(identity.subject)
              ? sql<string | null>`(select id from users where id = ${identity.subject}::uuid)`
              : null,
          expires_at: input.expiresAt ?? null,
        })
        .returning(apiKeyColumns)
        .executeTakeFirstOrThrow();
      await audit(tx, orgId, actorOf(identity), 'api_key.create', 'api_key', row.id, null, row);
      return { row, key };
    });
  }

  revokeApiKey(identity: Identity, id: string): Promise<ApiKeyRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const before = await tx
        .selectFrom('api_keys')
        .select(apiKeyColumns)
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .executeTakeFirst();
      if (!before) throw new NotFoundError(`API key ${id}`);
      if (before.revoked_at) return before;
      const after = await tx
        .updateTable('api_keys')
        .set({ revoked_at: sql`now()` })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .returning(apiKeyColumns)
        .executeTakeFirstOrThrow();
      await audit(tx, orgId, actorOf(identity), 'api_key.revoke', 'api_key', id, before, after);
      return after;
    });
  }
}
