/**
 * Sites form an `ltree` hierarchy whose labels are the site ids with `_` for `-` (ltree labels allow
 * no hyphen): `<city>.<district>.<street>`. The one place that knows the encoding.
 */

/** The ltree label of a site id. */
export const siteLabel = (id: string) => id.replaceAll('-', '_');

/** The site ids of an ltree path, root first; none for a device without a site. */
export function sitePathIds(path: string | null): string[] {
  return path ? path.split('.').map((l) => l.replaceAll('_', '-')) : [];
}
