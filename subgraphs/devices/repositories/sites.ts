import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { actorOf, audit } from '../../../lib/audit.js';
import { type Db, withTenant } from '../../../lib/db.js';
import { NotFoundError } from '../../../lib/errors.js';
import type { Identity } from '../../../lib/identity.js';
import { siteLabel } from '../../../lib/sites.js';
import { QueryTemplates } from '../query-templates.js';
import { point, readAll, type SiteRow, siteColumns, sitesOf } from './shared.js';

/** Sites: the ltree hierarchy, its batched reads and device counts per subtree. */
export class SiteRepository {
  private readonly templates = new QueryTemplates();

  constructor(readonly db: Db) {}

  async sitesByIds(orgId: string, ids: readonly string[]): Promise<SiteRow[]> {
    const statements = this.templates.statements(
      `sitesByIds:${ids.length}`,
      (bind) => ({ orgId: bind(orgId), ids: ids.map(bind) }),
      (a) => [sitesOf(this.db, a.orgId).where('id', 'in', a.ids)],
    );
    const [rows] = await readAll(this.db, orgId, ...statements);
    return rows as unknown as SiteRow[];
  }

  async siteChildren(orgId: string, parentIds: readonly string[]): Promise<SiteRow[]> {
    const [rows] = await readAll(
      this.db,
      orgId,
      sitesOf(this.db, orgId)
        .where('parent_id', 'in', [...parentIds])
        .orderBy('name'),
    );
    return rows as unknown as SiteRow[];
  }

  /** In-service devices per site, subtree included. */
  async siteDeviceCounts(orgId: string, siteIds: readonly string[]): Promise<{ id: string; n: number }[]> {
    const [rows] = await readAll(
      this.db,
      orgId,
      sql<{ id: string; n: number }>`
        select s.id, count(d.id)::int as n
        from sites s
        join sites sub on sub.org_id = ${orgId} and sub.path <@ s.path
        join devices d on d.org_id = ${orgId} and d.site_id = sub.id and d.decommissioned_at is null
        where s.org_id = ${orgId} and s.id = any(${[...siteIds]}::uuid[])
        group by s.id`.compile(this.db),
    );
    return rows as unknown as { id: string; n: number }[];
  }

  /**
   * The outline of each site: the convex hull (PostGIS) of its subtree's located devices in service,
   * as a ring of points without the closing repeat (one or two points for degenerate hulls).
   */
  async siteOutlines(orgId: string, siteIds: readonly string[]): Promise<{ id: string; outline: { lat: number; lng: number }[] }[]> {
    const [rows] = await readAll(
      this.db,
      orgId,
      sql<{ id: string; hull: string }>`
        select s.id, st_asgeojson(st_convexhull(st_collect(d.location::geometry)), 6) as hull
        from sites s
        join sites sub on sub.org_id = ${orgId} and sub.path <@ s.path
        join devices d on d.org_id = ${orgId} and d.site_id = sub.id and d.decommissioned_at is null and d.location is not null
        where s.org_id = ${orgId} and s.id = any(${[...siteIds]}::uuid[])
        group by s.id`.compile(this.db),
    );
    return (rows as unknown as { id: string; hull: string }[]).map((r) => ({ id: r.id, outline: ringOf(r.hull) }));
  }

  listSites(orgId: string): Promise<SiteRow[]> {
    return withTenant(this.db, orgId, (tx) =>
      tx.selectFrom('sites').select(siteColumns).where('org_id', '=', orgId).orderBy(sql`nlevel(path)`).orderBy('name').execute(),
    );
  }

  createSite(
    identity: Identity,
    input: {
      name: string;
      parentId?: string | null | undefined;
      timeZone?: string | null | undefined;
      location?: { lat: number; lng: number } | null | undefined;
    },
  ): Promise<SiteRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const id = randomUUID();
      let path = siteLabel(id);
      if (input.parentId) {
        const parent = await tx
          .selectFrom('sites')
          .select('path')
          .where('org_id', '=', orgId)
          .where('id', '=', input.parentId)
          .executeTakeFirst();
        if (!parent) throw new NotFoundError(`parent site ${input.parentId}`);
        path = `${parent.path}.${path}`;
      }
      const row = await tx
        .insertInto('sites')
        .values({
          id,
          org_id: orgId,
          parent_id: input.parentId ?? null,
          name: input.name,
          path,
          time_zone: input.timeZone ?? null,
          location: input.location ? point(input.location) : null,
        })
        .returning(siteColumns)
        .executeTakeFirstOrThrow();
      await audit(tx, orgId, actorOf(identity), 'site.create', 'site', id, null, row);
      return row;
    });
  }

  /** Renames a site or sets (null: clears) its time zone or location; audited. NOT_FOUND when not the organization's. */
  updateSite(
    identity: Identity,
    id: string,
    patch: { name?: string | undefined; timeZone?: string | null | undefined; location?: { lat: number; lng: number } | null | undefined },
  ): Promise<SiteRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const before = await tx
        .selectFrom('sites')
        .select(siteColumns)
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .forUpdate()
        .executeTakeFirst();
      if (!before) throw new NotFoundError('site');
      const row = await tx
        .updateTable('sites')
        .set({
          ...(patch.name !== undefined ? { name: patch.name } : {}),
          ...(patch.timeZone !== undefined ? { time_zone: patch.timeZone } : {}),
          ...(patch.location !== undefined ? { location: patch.location ? point(patch.location) : null } : {}),
          updated_at: sql`now()`,
        })
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .returning(siteColumns)
        .executeTakeFirstOrThrow();
      await audit(tx, orgId, actorOf(identity), 'site.update', 'site', id, before, row);
      return row;
    });
  }
}

/** The points of a hull in GeoJSON (Polygon, LineString or Point) as a ring without the closing repeat. */
export function ringOf(geojson: string): { lat: number; lng: number }[] {
  const g = JSON.parse(geojson) as { type: string; coordinates: unknown };
  const pts =
    g.type === 'Polygon'
      ? ((g.coordinates as number[][][])[0] ?? []).slice(0, -1)
      : g.type === 'LineString' || g.type === 'MultiPoint'
        ? (g.coordinates as number[][])
        : g.type === 'Point'
          ? [g.coordinates as number[]]
          : [];
  return pts.map(([lng = 0, lat = 0]) => ({ lat, lng }));
}
