import { AssignmentIndex, inheritance, inSubtree, plan } from '../../lib/programs-assign.js';
import { type Conflict, overrideConflicts, scheduleConflicts } from '../../lib/programs-preview.js';
import {
  expand,
  type OverrideWindow,
  type Place,
  type Schedule,
  SolarDays,
  scheduleFor,
  type TimelineEvent,
  timeline,
} from '../../lib/programs-schedule.js';
import { localDateOf, wallClock } from '../../lib/time-zones.js';
import type { AssignmentRow, OverrideRow, PreviewScope } from './repositories/program-assignments.js';
import type { CalendarRow, ProgramRow } from './repositories/programs.js';

/**
 * `programPreview`: a scope's devices grouped into locations (assignment, time zone, location cell,
 * and the overrides that reach them), each with its timeline and conflicts, all from the same pure
 * functions the scheduler uses (lib/programs-*.ts).
 */

export interface PreviewEvent extends TimelineEvent {
  localTime: string;
}

export interface PreviewLocation {
  lat: number;
  lng: number;
  timeZone: string;
  devices: number;
  deviceIds: string[];
  assignment: AssignmentRow;
  events: PreviewEvent[];
  conflicts: Conflict[];
}

export interface Preview {
  from: Date;
  to: Date;
  devices: number;
  unassignedDevices: number;
  noTimeZoneDevices: number;
  noLocationDevices: number;
  locationCount: number;
  locations: PreviewLocation[];
  conflicts: Conflict[];
}

/** Device ids a preview location lists. */
const DEVICE_IDS_SHOWN = 100;

const pad = (n: number) => String(n).padStart(2, '0');
function localTime(t: number, timeZone: string): string {
  const w = wallClock(t, timeZone);
  return `${w.year}-${pad(w.month)}-${pad(w.day)} ${pad(w.hour)}:${pad(w.minute)}`;
}

const asWindow = (o: OverrideRow): OverrideWindow => ({
  id: o.id,
  level: o.level,
  startsAt: o.startsAt.getTime(),
  // a canceled override ends when it was canceled
  expiresAt: Math.min(o.expiresAt.getTime(), o.canceledAt?.getTime() ?? Number.POSITIVE_INFINITY),
  createdAt: o.createdAt.getTime(),
});

/** Builds the preview of `scope` over `[from, to)`; `firstLocations` locations carry their events. */
export function buildPreview(
  scope: PreviewScope,
  programs: ReadonlyMap<string, ProgramRow>,
  calendars: ReadonlyMap<string, CalendarRow>,
  o: { from: Date; to: Date; firstLocations: number; cellDegrees: number },
): Preview {
  const from = o.from.getTime();
  const to = o.to.getTime();
  const assignments = new Map(scope.assignments.map((a) => [a.id, a]));
  const p = plan(new AssignmentIndex(scope.assignments), inheritance(scope.sites), scope.devices, o.cellDegrees);
  const devices = new Map(scope.devices.map((d) => [d.id, d]));
  const solar = new SolarDays();
  const schedules = new Map<string, Schedule | null>();
  const conflictsByCluster = new Map<string, Conflict[]>();
  const locations: PreviewLocation[] = [];
  const all: Conflict[] = [];
  const seen = new Set<string>();
  let locationCount = 0;

  for (const cluster of p.clusters.values()) {
    const assignment = assignments.get(cluster.assignmentId) as AssignmentRow;
    if (!schedules.has(assignment.id)) schedules.set(assignment.id, scheduleFor(assignment, calendars, programs));
    const schedule = schedules.get(assignment.id);
    if (!schedule) continue;
    const place: Place = { lat: cluster.cellLat, lng: cluster.cellLng, timeZone: cluster.timeZone };
    const expansion = expand(schedule, place, from, to, solar);
    // devices of one cluster reached by different overrides are different locations
    const byOverrides = new Map<string, { overrides: OverrideRow[]; deviceIds: string[] }>();
    for (const id of cluster.deviceIds) {
      const d = devices.get(id);
      const reaching = scope.overrides.filter(
        (v) => v.deviceId === id || (v.sitePath !== null && inSubtree(d?.sitePath ?? null, v.sitePath)),
      );
      const key = reaching.map((v) => v.id).join(',');
      const g = byOverrides.get(key) ?? { overrides: reaching, deviceIds: [] };
      g.deviceIds.push(id);
      byOverrides.set(key, g);
    }
    let own = conflictsByCluster.get(cluster.key);
    if (!own) {
      own = scheduleConflicts(schedule, place, localDateOf(from, place.timeZone), localDateOf(to - 1, place.timeZone), solar);
      conflictsByCluster.set(cluster.key, own);
    }
    locationCount += byOverrides.size;
    for (const g of byOverrides.values()) {
      const windows = g.overrides.map(asWindow);
      const conflicts = [...own, ...overrideConflicts(windows, place.timeZone)];
      for (const c of conflicts) {
        const key = `${c.kind}|${c.programId}|${c.switchPoints.join(',')}|${c.overrideIds.join(',')}|${c.from}`;
        if (!seen.has(key)) {
          seen.add(key);
          all.push(c);
        }
      }
      if (locations.length >= o.firstLocations) continue;
      locations.push({
        lat: cluster.cellLat,
        lng: cluster.cellLng,
        timeZone: cluster.timeZone,
        devices: g.deviceIds.length,
        deviceIds: g.deviceIds.slice(0, DEVICE_IDS_SHOWN),
        assignment,
        events: timeline(expansion, windows, from, to).map((e) => ({ ...e, localTime: localTime(e.at, place.timeZone) })),
        conflicts,
      });
    }
  }
  return {
    from: o.from,
    to: o.to,
    devices: scope.devices.length,
    unassignedDevices: p.unassigned,
    noTimeZoneDevices: p.noTimeZone.length,
    noLocationDevices: p.noLocation.length,
    locationCount,
    locations,
    conflicts: all,
  };
}
