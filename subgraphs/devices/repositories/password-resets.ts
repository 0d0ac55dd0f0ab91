import { sql } from 'kysely';
import { generateSecretToken, hashToken } from '../../../lib/auth.js';
import type { Db } from '../../../lib/db.js';

/**
 * Password-reset links: a single-use token (stored as its SHA-256) that expires. Not a tenant's:
 * a person's password is theirs in every organization, and `rulr_app` cannot read this table.
 */
export class PasswordResetRepository {
  constructor(readonly db: Db) {}

  /** A new reset token for the person, valid for `ttlMs`. */
  async create(userId: string, ttlMs: number): Promise<string> {
    const { token, hash } = generateSecretToken('rst');
    await this.db
      .insertInto('password_resets')
      .values({ user_id: userId, token_hash: hash, expires_at: new Date(Date.now() + ttlMs) })
      .execute();
    return token;
  }

  /** Uses a token, once: the person it was for, or undefined when it is unknown, used or expired. */
  async consume(token: string): Promise<string | undefined> {
    if (!/^rst_[A-Za-z0-9_-]{43}$/.test(token)) return undefined;
    const row = await this.db
      .updateTable('password_resets')
      .set({ used_at: sql`now()` })
      .where('token_hash', '=', hashToken(token))
      .where('used_at', 'is', null)
      .where('expires_at', '>', sql<Date>`now()`)
      .returning('user_id')
      .executeTakeFirst();
    return row?.user_id;
  }
}
