/**
 * Redis state about lighting programs shared by the rules subgraph and the program scheduler
 * (workers): `<prefix>programs:ver:<orgId>`, a counter the rules subgraph increments (INCR) after
 * every committed change to an organization's programs, calendars, assignments or overrides, and
 * sites' time zones or locations (devices subgraph). The scheduler compares it with the version of
 * its cached plan and replans at once; without it, it replans on its own interval
 * (`PROGRAMS_REPLAN_S`), so a missed bump costs freshness, never correctness of what was planned.
 */

export const programsVersionKey = (prefix: string, orgId: string) => `${prefix}programs:ver:${orgId}`;

/** A version counter as read (`GET`): a missing key is version 0; anything unreadable is treated as changed (-1). */
export function parseProgramsVersion(raw: string | null | undefined): number {
  if (raw === null || raw === undefined) return 0;
  const n = Number(raw);
  return Number.isSafeInteger(n) && n >= 0 ? n : -1;
}

/** Bumps an organization's programs version; a failure is the caller's to log (the change is committed). */
export async function bumpProgramsVersion(redis: { incr(key: string): Promise<number> }, prefix: string, orgId: string): Promise<void> {
  await redis.incr(programsVersionKey(prefix, orgId));
}
