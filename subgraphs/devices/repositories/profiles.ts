import { actorOf, audit } from '../../../lib/audit.js';
import { type Db, isUniqueViolation, withTenant } from '../../../lib/db.js';
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
}
