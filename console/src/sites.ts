import { gql } from './api.js';

/** The organization's sites as a tree (the API answers a flat list with parent ids). */
export interface SiteNode {
  id: string;
  name: string;
  parentId: string | null;
  deviceCount: number;
  location: { lat: number; lng: number } | null;
  children: SiteNode[];
}

export function buildTree(rows: Omit<SiteNode, 'children'>[]): SiteNode[] {
  const nodes = new Map<string, SiteNode>(rows.map((r) => [r.id, { ...r, children: [] }]));
  const roots: SiteNode[] = [];
  for (const n of nodes.values()) {
    const parent = n.parentId ? nodes.get(n.parentId) : undefined;
    if (parent) parent.children.push(n);
    else roots.push(n);
  }
  const sort = (l: SiteNode[]) => {
    l.sort((x, y) => x.name.localeCompare(y.name));
    for (const n of l) sort(n.children);
  };
  sort(roots);
  return roots;
}

/** Every site with its subtree's ids (a site matches its whole subtree in the API's filters). */
export function flatten(roots: SiteNode[]): SiteNode[] {
  const out: SiteNode[] = [];
  const walk = (l: SiteNode[]) => {
    for (const n of l) {
      out.push(n);
      walk(n.children);
    }
  };
  walk(roots);
  return out;
}

let cached: Promise<SiteNode[]> | null = null;
let cachedFor = '';

/** The sites of the current organization (cached per token's organization). */
export function loadSites(orgId: string): Promise<SiteNode[]> {
  if (cached && cachedFor === orgId) return cached;
  cachedFor = orgId;
  cached = gql<{
    sites:
      | { id: string; name: string; parent: { id: string } | null; deviceCount: number; location: { lat: number; lng: number } | null }[]
      | null;
  }>('{ sites { id name parent { id } deviceCount location { lat lng } } }')
    .then((d) =>
      buildTree(
        (d.sites ?? []).map((s) => ({
          id: s.id,
          name: s.name,
          parentId: s.parent?.id ?? null,
          deviceCount: s.deviceCount,
          location: s.location,
        })),
      ),
    )
    .catch((e: unknown) => {
      cached = null;
      throw e;
    });
  return cached;
}
