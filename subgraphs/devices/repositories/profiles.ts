import { randomBytes } from 'node:crypto';
import { actorOf, audit } from '../../../lib/audit.js';
import { type Db, isUniqueViolation, withTenant } from '../../../lib/db.js';
import { generateDeviceSecret, hashDeviceSecret } from '../../../lib/device-credentials.js';
import { ConflictError, NotFoundError } from '../../../lib/errors.js';
import type { Identity } from '../../../lib/identity.js';
import { QueryTemplates } from '../query-templates.js';
import { type MetricDefinitionRow, type ProfileRow, profileColumns, profilesOf, readAll } from './shared.js';

export interface NewProfile {
  name: string;
  description: string;
  metrics: MetricDefinitionRow[];
  silenceTimeoutSeconds: number;
  isGateway: boolean;
  autoCreateChildren: boolean;
}

/** Device profiles: what a kind of device reports and how it behaves. */
export class ProfileRepository {
  private readonly templates = new QueryTemplates();

  constructor(readonly db: Db) {}

  async profilesByIds(orgId: string, ids: readonly string[]): Promise<ProfileRow[]> {
    const statements = this.templates.statements(
      `profilesByIds:${ids.length}`,
      (bind) => ({ orgId: bind(orgId), ids: ids.map(bind) }),
      (a) => [profilesOf(this.db, a.orgId).where('id', 'in', a.ids)],
    );
    const [rows] = await readAll(this.db, orgId, ...statements);
    return rows as unknown as ProfileRow[];
  }

  listProfiles(orgId: string): Promise<ProfileRow[]> {
    return withTenant(
      this.db,
      orgId,
      (tx) =>
        tx.selectFrom('device_profiles').select(profileColumns).where('org_id', '=', orgId).orderBy('name').execute() as unknown as Promise<
          ProfileRow[]
        >,
    );
  }

  createProfile(identity: Identity, p: NewProfile): Promise<ProfileRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      try {
        const row = (await tx
          .insertInto('device_profiles')
          .values({
            org_id: orgId,
            name: p.name,
            description: p.description,
            metrics: JSON.stringify(p.metrics),
            silence_timeout_s: p.silenceTimeoutSeconds,
            is_gateway: p.isGateway,
            auto_create_children: p.autoCreateChildren,
          })
          .returning(profileColumns)
          .executeTakeFirstOrThrow()) as unknown as ProfileRow;
        await audit(tx, orgId, actorOf(identity), 'device_profile.create', 'device_profile', row.id, null, row);
        return row;
      } catch (e) {
        if (isUniqueViolation(e)) throw new ConflictError(`a device profile named "${p.name}" already exists`);
        throw e;
      }
    });
  }

  /** Applies the fields present in `patch`; NOT_FOUND when the profile is not this tenant's. */
  updateProfile(identity: Identity, id: string, patch: Partial<NewProfile>): Promise<ProfileRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const before = (await tx
        .selectFrom('device_profiles')
        .select(profileColumns)
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .forUpdate()
        .executeTakeFirst()) as unknown as ProfileRow | undefined;
      if (!before) throw new NotFoundError(`device profile ${id}`);
      const set: Record<string, unknown> = {};
      if (patch.name !== undefined) set.name = patch.name;
      if (patch.description !== undefined) set.description = patch.description;
      if (patch.metrics !== undefined) set.metrics = JSON.stringify(patch.metrics);
      if (patch.silenceTimeoutSeconds !== undefined) set.silence_timeout_s = patch.silenceTimeoutSeconds;
      if (patch.isGateway !== undefined) set.is_gateway = patch.isGateway;
      if (patch.autoCreateChildren !== undefined) set.auto_create_children = patch.autoCreateChildren;
      if (!Object.keys(set).length) return before;
      try {
        const after = (await tx
          .updateTable('device_profiles')
          .set(set)
          .where('org_id', '=', orgId)
          .where('id', '=', id)
          .returning(profileColumns)
          .executeTakeFirstOrThrow()) as unknown as ProfileRow;
        await audit(tx, orgId, actorOf(identity), 'device_profile.update', 'device_profile', id, before, after);
        return after;
      } catch (e) {
        if (isUniqueViolation(e)) throw new ConflictError(`a device profile named "${patch.name}" already exists`);
        throw e;
      }
    });
  }

  /**
   * Sets a profile's provisioning mode; makes the key on first use and a new secret when there is
   * none yet (or `newSecret`), returning the secret only then. Audited without the secret.
   */
  setProvisioning(
    identity: Identity,
    id: string,
    mode: ProfileRow['provision_mode'],
    newSecret: boolean,
  ): Promise<{ mode: ProfileRow['provision_mode']; key: string | null; secret: string | null }> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const before = await tx
        .selectFrom('device_profiles')
        .select(['provision_mode', 'provision_key', 'provision_secret_hash'])
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .forUpdate()
        .executeTakeFirst();
      if (!before) throw new NotFoundError(`device profile ${id}`);
      const enabling = mode !== 'disabled';
      const key = before.provision_key ?? (enabling ? `pk-${randomBytes(16).toString('base64url')}` : null);
      const secret = enabling && (newSecret || !before.provision_secret_hash) ? generateDeviceSecret() : null;
      await tx
        .updateTable('device_profiles')
        .set({
          provision_mode: mode,
          provision_key: key,
          ...(secret ? { provision_secret_hash: await hashDeviceSecret(secret) } : {}),
        })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .execute();
      await audit(
        tx,
        orgId,
        actorOf(identity),
        'device_profile.provisioning',
        'device_profile',
        id,
        { mode: before.provision_mode, key: before.provision_key },
        { mode, key, newSecret: secret !== null },
      );
      return { mode, key, secret };
    });
  }
}
