import { sitePathIds } from './sites.js';

/**
 * Which assignment runs a device, and where: the specificity rule, the time zone and location a
 * device inherits from its sites, and the grouping of devices into location clusters (one solar
 * computation per cluster, not per lamp). Used by the program preview (rules subgraph) and the
 * scheduler (workers). Pure, no I/O.
 *
 * The most specific assignment wins:
 * 1. the device's own assignment;
 * 2. a site + profile assignment (the device's profile in that site's subtree), the deepest site first;
 * 3. a profile assignment (every device of that profile);
 * 4. a site assignment (the site's subtree), the deepest site first.
 * A profile says what a luminaire is (a decorative lamp, a tunnel light), a site only where it
 * stands, so a profile's program beats an area's default; one assignment per scope, so no ties.
 */

export interface AssignmentScope {
  id: string;
  siteId: string | null;
  profileId: string | null;
  deviceId: string | null;
}

/** A device as the rule sees it: its site's ltree path (site ids as labels, `_` for `-`). */
export interface DeviceScope {
  id: string;
  profileId: string | null;
  /** the ltree path of its site, root first; null when it has no site */
  sitePath: string | null;
}

/** Assignments indexed for {@link assignmentFor}. */
export class AssignmentIndex {
  private readonly byDevice = new Map<string, AssignmentScope>();
  private readonly bySiteProfile = new Map<string, AssignmentScope>();
  private readonly byProfile = new Map<string, AssignmentScope>();
  private readonly bySite = new Map<string, AssignmentScope>();

  constructor(assignments: readonly AssignmentScope[]) {
    for (const a of assignments) {
      if (a.deviceId) this.byDevice.set(a.deviceId, a);
      else if (a.siteId && a.profileId) this.bySiteProfile.set(`${a.siteId}/${a.profileId}`, a);
      else if (a.profileId) this.byProfile.set(a.profileId, a);
      else if (a.siteId) this.bySite.set(a.siteId, a);
    }
  }

  /** The assignment that runs `device`, by the rule above, or null. */
  assignmentFor(device: DeviceScope): AssignmentScope | null {
    const own = this.byDevice.get(device.id);
    if (own) return own;
    const sites = sitePathIds(device.sitePath).reverse();
    if (device.profileId) {
      for (const s of sites) {
        const a = this.bySiteProfile.get(`${s}/${device.profileId}`);
        if (a) return a;
      }
      const a = this.byProfile.get(device.profileId);
      if (a) return a;
    }
    for (const s of sites) {
      const a = this.bySite.get(s);
      if (a) return a;
    }
    return null;
  }
}

/** A site with what it may pass on to its subtree. */
export interface SiteInfo {
  id: string;
  path: string;
  timeZone: string | null;
  lat: number | null;
  lng: number | null;
}

/** What a site's devices inherit: the nearest time zone and the nearest location, walking up from the site. */
export interface Inherited {
  timeZone: string | null;
  location: { lat: number; lng: number } | null;
}

/** Each site's inherited time zone and location (nearest ancestor-or-self that has one). */
export function inheritance(sites: readonly SiteInfo[]): Map<string, Inherited> {
  const byId = new Map(sites.map((s) => [s.id, s]));
  const out = new Map<string, Inherited>();
  for (const s of sites) {
    const chain = sitePathIds(s.path).reverse();
    let timeZone: string | null = null;
    let location: Inherited['location'] = null;
    for (const id of chain) {
      const a = byId.get(id);
      if (!a) continue;
      timeZone ??= a.timeZone;
      if (!location && a.lat !== null && a.lng !== null) location = { lat: a.lat, lng: a.lng };
      if (timeZone && location) break;
    }
    out.set(s.id, { timeZone, location });
  }
  return out;
}

/**
 * Size of a location cell, in degrees: devices whose location rounds to the same cell share one
 * solar computation. 0.1° is at most 24 s of solar time east-west, and a few tens of seconds
 * north-south at 60° latitude.
 * @default 0.1
 */
export const DEFAULT_CELL_DEGREES = 0.1;

/** The centre of the cell a coordinate falls in (rounded to 6 decimals, so keys compare as numbers). */
export function cellOf(v: number, cellDegrees: number): number {
  return Math.round(Math.round(v / cellDegrees) * cellDegrees * 1e6) / 1e6;
}

/** One device's place in the plan. */
export interface PlacedDevice extends DeviceScope {
  siteId: string | null;
  lat: number | null;
  lng: number | null;
}

export interface Cluster {
  key: string;
  assignmentId: string;
  timeZone: string;
  cellLat: number;
  cellLng: number;
  deviceIds: string[];
}

export interface Plan {
  clusters: Map<string, Cluster>;
  /** device id → its cluster key */
  clusterOf: Map<string, string>;
  /** devices no assignment covers */
  unassigned: number;
  /** assigned devices without a time zone (their sites' chain has none): not scheduled */
  noTimeZone: string[];
  /** assigned devices without a location (none of their own, none on their sites' chain): not scheduled */
  noLocation: string[];
}

export const clusterKey = (assignmentId: string, timeZone: string, cellLat: number, cellLng: number) =>
  `${assignmentId}|${timeZone}|${cellLat}|${cellLng}`;

/**
 * Groups devices by (assignment, time zone, location cell). A device is scheduled at its own
 * location, else its site's (inherited); devices without a time zone or a location are listed,
 * never guessed (UTC or the organization's centre would switch lamps hours wrong).
 */
export function plan(
  assignments: AssignmentIndex,
  sites: ReadonlyMap<string, Inherited>,
  devices: Iterable<PlacedDevice>,
  cellDegrees = DEFAULT_CELL_DEGREES,
): Plan {
  const out: Plan = { clusters: new Map(), clusterOf: new Map(), unassigned: 0, noTimeZone: [], noLocation: [] };
  for (const d of devices) {
    const a = assignments.assignmentFor(d);
    if (!a) {
      out.unassigned++;
      continue;
    }
    const site = d.siteId ? sites.get(d.siteId) : undefined;
    const timeZone = site?.timeZone ?? null;
    if (!timeZone) {
      out.noTimeZone.push(d.id);
      continue;
    }
    const location = d.lat !== null && d.lng !== null ? { lat: d.lat, lng: d.lng } : (site?.location ?? null);
    if (!location) {
      out.noLocation.push(d.id);
      continue;
    }
    const cellLat = cellOf(location.lat, cellDegrees);
    const cellLng = cellOf(location.lng, cellDegrees);
    const key = clusterKey(a.id, timeZone, cellLat, cellLng);
    let c = out.clusters.get(key);
    if (!c) {
      c = { key, assignmentId: a.id, timeZone, cellLat, cellLng, deviceIds: [] };
      out.clusters.set(key, c);
    }
    c.deviceIds.push(d.id);
    out.clusterOf.set(d.id, key);
  }
  return out;
}

/** Is a device (its site's ltree path) inside the subtree of the site whose path is `sitePath`? */
export const inSubtree = (devicePath: string | null, sitePath: string) =>
  devicePath !== null && (devicePath === sitePath || devicePath.startsWith(`${sitePath}.`));
