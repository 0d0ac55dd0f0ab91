import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { Db } from '../../lib/db.js';
import { energyPartialsSql } from '../../lib/telemetry/energy.js';

/**
 * Plain-SQL fixtures for the metrics tests and benchmark: organizations, a site tree and devices
 * written directly (as the owner, bypassing RLS), so metrics tests do not depend on the devices
 * subgraph.
 */

export async function insertOrg(db: Db, slug: string): Promise<string> {
  const { rows } = await sql<{ id: string }>`insert into organizations (slug, name) values (${slug}, ${slug}) returning id`.execute(db);
  return (rows[0] as { id: string }).id;
}

export interface SiteFixture {
  id: string;
  path: string;
}

/** A site under `parent` (or a root); ltree labels are the ids without dashes. */
export async function insertSite(db: Db, orgId: string, name: string, parent?: SiteFixture): Promise<SiteFixture> {
  const id = randomUUID();
  const label = `s${id.replaceAll('-', '')}`;
  const path = parent ? `${parent.path}.${label}` : label;
  await sql`insert into sites (id, org_id, parent_id, name, path) values (${id}, ${orgId}, ${parent?.id ?? null}, ${name}, ${path}::ltree)`.execute(
    db,
  );
  return { id, path };
}

export async function insertDevice(
  db: Db,
  orgId: string,
  serial: string,
  siteId: string | null,
  o: { decommissioned?: boolean; id?: string } = {},
): Promise<string> {
  const id = o.id ?? randomUUID();
  await sql`insert into devices (id, org_id, serial, name, site_id, decommissioned_at)
            values (${id}, ${orgId}, ${serial}, ${serial}, ${siteId}, ${o.decommissioned ? new Date() : null})`.execute(db);
  return id;
}

export interface RawReading {
  time: Date;
  deviceId: string;
  metric: string;
  value: number | null;
  text?: string | null;
}

/** Inserts raw readings in chunks (one multi-row insert per 2,000 rows). */
export async function insertReadings(db: Db, orgId: string, rows: RawReading[]): Promise<void> {
  for (let i = 0; i < rows.length; i += 2000) {
    const chunk = rows.slice(i, i + 2000);
    await sql`insert into device_metrics (time, org_id, device_id, metric, value, text)
      select * from unnest(${chunk.map((r) => r.time.toISOString())}::timestamptz[], ${chunk.map(() => orgId)}::uuid[],
        ${chunk.map((r) => r.deviceId)}::uuid[], ${chunk.map((r) => r.metric)}::text[],
        ${chunk.map((r) => r.value)}::float8[], ${chunk.map((r) => r.text ?? null)}::text[])`.execute(db);
  }
}

/**
 * Inserts counter readings and, in the same statement, their energy partials (`energy_hourly_deltas`,
 * computed by the same SQL as ingest's duplicate-skipping path):
 * the energy queries read the hourly rollup, and pending partials make them use these readings.
 */
export async function insertEnergy(db: Db, orgId: string, deviceId: string, rows: { time: Date; kwh: number }[]): Promise<void> {
  if (!rows.length) return;
  await sql`with ins as (
      insert into energy_readings (time, org_id, device_id, counter_kwh)
      select t, ${orgId}::uuid, ${deviceId}::uuid, k from unnest(${rows.map((r) => r.time.toISOString())}::timestamptz[],
        ${rows.map((r) => r.kwh)}::float8[]) as u(t, k)
      returning time, org_id, device_id, counter_kwh
    )
    insert into energy_hourly_deltas (bucket, org_id, device_id, first_time, first_kwh, last_time, last_kwh, kwh, count)
    ${sql.raw(energyPartialsSql('ins'))}`.execute(db);
}
