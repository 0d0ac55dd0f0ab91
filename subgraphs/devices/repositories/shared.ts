import { type Compilable, sql } from 'kysely';
import { type Db, type Tx, tenantRead } from '../../../lib/db.js';
import type { Statement } from '../query-templates.js';

/** A device row as the resolvers see it (location split into lat/lng). */
export interface DeviceRow {
  id: string;
  org_id: string;
  serial: string;
  name: string;
  site_id: string | null;
  profile_id: string | null;
  parent_id: string | null;
  lat: number | null;
  lng: number | null;
  attributes: unknown;
  created_at: Date;
  updated_at: Date;
  decommissioned_at: Date | null;
}

export interface SiteRow {
  id: string;
  org_id: string;
  parent_id: string | null;
  name: string;
  path: string;
  time_zone: string | null;
  lat: number | null;
  lng: number | null;
  created_at: Date;
}

export interface MetricDefinitionRow {
  name: string;
  unit?: string | null;
  type: 'number' | 'boolean' | 'string';
  min?: number | null;
  max?: number | null;
  counter?: boolean;
}

export interface ProfileRow {
  id: string;
  org_id: string;
  name: string;
  description: string;
  metrics: MetricDefinitionRow[];
  silence_timeout_s: number;
  is_gateway: boolean;
  auto_create_children: boolean;
  created_at: Date;
}

export interface ApiKeyRow {
  id: string;
  name: string;
  prefix: string;
  scopes: string[];
  created_at: Date;
  last_used_at: Date | null;
  expires_at: Date | null;
  revoked_at: Date | null;
}

export interface OrganizationRow {
  id: string;
  slug: string;
  name: string;
}

export const siteColumns = [
  'id',
  'org_id',
  'parent_id',
  'name',
  'path',
  'time_zone',
  sql<number | null>`st_y(location::geometry)`.as('lat'),
  sql<number | null>`st_x(location::geometry)`.as('lng'),
  'created_at',
] as const;
export const profileColumns = [
  'id',
  'org_id',
  'name',
  'description',
  'metrics',
  'silence_timeout_s',
  'is_gateway',
  'auto_create_children',
  'created_at',
] as const;

/** Rows of read-only statements run in one tenant transaction, in one round trip (see `tenantRead`). */
export function readAll(db: Db, orgId: string, ...queries: (Compilable | Statement)[]): Promise<Record<string, unknown>[][]> {
  return tenantRead(
    db,
    orgId,
    queries.map((q) => ('compile' in q ? q.compile() : q)),
  );
}

/** The organization's sites (a device batch or page reads its sites through this too). */
export const sitesOf = (db: Db, orgId: string) => db.selectFrom('sites').select(siteColumns).where('org_id', '=', orgId);

/** The organization's device profiles (a device batch or page reads its profiles through this too). */
export const profilesOf = (db: Db, orgId: string) => db.selectFrom('device_profiles').select(profileColumns).where('org_id', '=', orgId);

/** The geography value of a point. */
export const point = (p: { lat: number; lng: number }) => sql<string>`st_setsrid(st_makepoint(${p.lng}, ${p.lat}), 4326)::geography`;

/** Revokes a device's MQTT credentials (rotation and decommissioning), inside their transaction. */
export async function revokeDeviceCredentials(tx: Tx, orgId: string, deviceId: string): Promise<void> {
  await tx
    .updateTable('device_credentials')
    .set({ revoked_at: sql`now()` })
    .where('org_id', '=', orgId)
    .where('device_id', '=', deviceId)
    .where('revoked_at', 'is', null)
    .execute();
}
