import DataLoader from 'dataloader';
import type { Config } from '../../lib/config.js';
import { UnauthenticatedError } from '../../lib/errors.js';
import { authorize, type Identity, type Requirement } from '../../lib/identity.js';
import type { CalendarRule } from '../../lib/programs.js';
import { programsOf } from '../../lib/programs.js';
import { CONFLICT_KINDS, type Conflict } from '../../lib/programs-preview.js';
import { solarDay } from '../../lib/solar.js';
import { buildPreview, type PreviewEvent } from './program-preview.js';
import {
  CALENDAR_RULE_KIND_ENUM,
  MAX_OVERRIDES,
  parseAssign,
  parseCalendarInput,
  parseOverrideInput,
  parsePreviewArgs,
  parseProgramInput,
  parseSolarArgs,
  SWITCH_ANCHOR_ENUM,
} from './programs-validation.js';
import type { AssignmentRow, OverrideRow, ProgramAssignmentsRepository } from './repositories/program-assignments.js';
import type { CalendarRow, ProgramRow, ProgramsRepository } from './repositories/programs.js';
import { checkFirst, checkId } from './validation.js';

/**
 * Resolvers of the programs part of the rules subgraph (`# --- programs` in schema.graphql):
 * programs, calendars, assignments, overrides, `solarEvents` and `programPreview`. Merged into the
 * subgraph's resolver map by resolvers.ts.
 */

/** Per-request loaders of the programs part, bound to the caller's organization (one round trip per batch). */
export interface ProgramLoaders {
  program: DataLoader<string, ProgramRow | null>;
  calendar: DataLoader<string, CalendarRow | null>;
  assignment: DataLoader<string, AssignmentRow | null>;
  override: DataLoader<string, OverrideRow | null>;
}

export function createProgramLoaders(
  repos: { programs: ProgramsRepository; programAssignments: ProgramAssignmentsRepository },
  orgId: string,
): ProgramLoaders {
  const byId =
    <T extends { id: string }>(load: (ids: readonly string[]) => Promise<T[]>) =>
    async (ids: readonly string[]) => {
      const rows = new Map((await load(ids)).map((r) => [r.id, r]));
      return ids.map((id) => rows.get(id) ?? null);
    };
  const opts = { maxBatchSize: 1000 };
  return {
    program: new DataLoader(
      byId((ids) => repos.programs.programsByIds(orgId, ids)),
      opts,
    ),
    calendar: new DataLoader(
      byId((ids) => repos.programs.calendarsByIds(orgId, ids)),
      opts,
    ),
    assignment: new DataLoader(
      byId((ids) => repos.programAssignments.assignmentsByIds(orgId, ids)),
      opts,
    ),
    override: new DataLoader(
      byId((ids) => repos.programAssignments.overridesByIds(orgId, ids)),
      opts,
    ),
  };
}

/** What these resolvers need of the subgraph's context. */
export interface ProgramsContext {
  identity: Identity;
  repos: { programs: ProgramsRepository; programAssignments: ProgramAssignmentsRepository };
  programLoaders: ProgramLoaders;
}

const READ: Requirement = { role: 'viewer', scope: 'rules:read' };
const WRITE: Requirement = { role: 'operator', scope: 'rules:write' };

type Args = Record<string, unknown>;

const overrideStatus = (o: OverrideRow, now = Date.now()) =>
  o.canceledAt ? 'CANCELED' : o.expiresAt.getTime() <= now ? 'ENDED' : o.startsAt.getTime() <= now ? 'ACTIVE' : 'SCHEDULED';

/** The programs part's resolvers; `config` gives the location cell size (`SOLAR_CLUSTER_DEGREES`). */
export function programResolvers(config: Pick<Config, 'SOLAR_CLUSTER_DEGREES'>) {
  return {
    SwitchAnchor: SWITCH_ANCHOR_ENUM,
    CalendarRuleKind: CALENDAR_RULE_KIND_ENUM,
    ProgramConflictKind: Object.fromEntries(CONFLICT_KINDS.map((k) => [k, k])),
    ProgramEventKind: { PROGRAM: 'program', OVERRIDE: 'override', RESUME: 'resume' },
    Query: {
      programs(_: unknown, _a: Args, ctx: ProgramsContext) {
        const { orgId } = authorize(ctx.identity, READ);
        return ctx.repos.programs.listPrograms(orgId);
      },
      program(_: unknown, a: Args, ctx: ProgramsContext) {
        authorize(ctx.identity, READ);
        return ctx.programLoaders.program.load(checkId(a.id)).then((p) => (p?.deletedAt ? null : p));
      },
      programCalendars(_: unknown, _a: Args, ctx: ProgramsContext) {
        const { orgId } = authorize(ctx.identity, READ);
        return ctx.repos.programs.listCalendars(orgId);
      },
      programAssignments(_: unknown, a: Args, ctx: ProgramsContext) {
        const { orgId } = authorize(ctx.identity, READ);
        return ctx.repos.programAssignments.listAssignments(orgId, {
          siteId: a.siteId == null ? undefined : checkId(a.siteId, 'siteId'),
          deviceId: a.deviceId == null ? undefined : checkId(a.deviceId, 'deviceId'),
        });
      },
      programOverrides(_: unknown, a: Args, ctx: ProgramsContext) {
        const { orgId } = authorize(ctx.identity, READ);
        const first = checkFirst((a.first as number | null | undefined) ?? 100, MAX_OVERRIDES);
        return ctx.repos.programAssignments.listOverrides(orgId, { active: a.active === true, first });
      },
      /** Anyone signed in may ask: it reads nothing of the organization. */
      solarEvents(_: unknown, a: Args, ctx: ProgramsContext) {
        if (!ctx.identity || ctx.identity.kind === 'anonymous') throw new UnauthenticatedError();
        const { lat, lng, date, timeZone } = parseSolarArgs(a as Parameters<typeof parseSolarArgs>[0]);
        const d = solarDay(lat, lng, date, timeZone);
        const at = (t: number | null) => (t === null ? null : new Date(t));
        return {
          date,
          timeZone,
          sunrise: at(d.sunrise),
          sunset: at(d.sunset),
          civilDawn: at(d.civilDawn),
          civilDusk: at(d.civilDusk),
          solarNoon: new Date(d.solarNoon),
          polarDay: d.polar === 'day',
          polarNight: d.polar === 'night',
        };
      },
      async programPreview(_: unknown, a: Args, ctx: ProgramsContext) {
        const { orgId } = authorize(ctx.identity, READ);
        const args = parsePreviewArgs(a);
        const scope = await ctx.repos.programAssignments.previewScope(orgId, args.scope, args.from, args.to);
        const calendarIds = [...new Set(scope.assignments.map((x) => x.calendarId).filter((x): x is string => x !== null))];
        const calendars = new Map(
          (await ctx.programLoaders.calendar.loadMany(calendarIds))
            .filter((c): c is CalendarRow => c !== null && !(c instanceof Error))
            .map((c) => [c.id, c]),
        );
        const programIds = new Set(scope.assignments.map((x) => x.programId).filter((x): x is string => x !== null));
        for (const c of calendars.values()) for (const id of programsOf(c)) programIds.add(id);
        const programs = new Map(
          (await ctx.programLoaders.program.loadMany([...programIds]))
            .filter((p): p is ProgramRow => p !== null && !(p instanceof Error) && p.deletedAt === null)
            .map((p) => [p.id, p]),
        );
        return buildPreview(scope, programs, calendars, { ...args, cellDegrees: config.SOLAR_CLUSTER_DEGREES });
      },
    },
    Mutation: {
      createProgram(_: unknown, a: Args, ctx: ProgramsContext) {
        const identity = authorize(ctx.identity, WRITE);
        return ctx.repos.programs.createProgram(identity, parseProgramInput(a.input));
      },
      updateProgram(_: unknown, a: Args, ctx: ProgramsContext) {
        const identity = authorize(ctx.identity, WRITE);
        return ctx.repos.programs.updateProgram(identity, checkId(a.id), parseProgramInput(a.input));
      },
      async deleteProgram(_: unknown, a: Args, ctx: ProgramsContext) {
        const identity = authorize(ctx.identity, WRITE);
        await ctx.repos.programs.deleteProgram(identity, checkId(a.id));
        return true;
      },
      createProgramCalendar(_: unknown, a: Args, ctx: ProgramsContext) {
        const identity = authorize(ctx.identity, WRITE);
        return ctx.repos.programs.createCalendar(identity, parseCalendarInput(a.input));
      },
      updateProgramCalendar(_: unknown, a: Args, ctx: ProgramsContext) {
        const identity = authorize(ctx.identity, WRITE);
        return ctx.repos.programs.updateCalendar(identity, checkId(a.id), parseCalendarInput(a.input));
      },
      async deleteProgramCalendar(_: unknown, a: Args, ctx: ProgramsContext) {
        const identity = authorize(ctx.identity, WRITE);
        await ctx.repos.programs.deleteCalendar(identity, checkId(a.id));
        return true;
      },
      assignProgram(_: unknown, a: Args, ctx: ProgramsContext) {
        const identity = authorize(ctx.identity, WRITE);
        return ctx.repos.programAssignments.assign(identity, parseAssign(a.input));
      },
      async unassignProgram(_: unknown, a: Args, ctx: ProgramsContext) {
        const identity = authorize(ctx.identity, WRITE);
        await ctx.repos.programAssignments.unassign(identity, checkId(a.id));
        return true;
      },
      createProgramOverride(_: unknown, a: Args, ctx: ProgramsContext) {
        const identity = authorize(ctx.identity, WRITE);
        return ctx.repos.programAssignments.createOverride(identity, parseOverrideInput(a.input, Date.now()));
      },
      cancelProgramOverride(_: unknown, a: Args, ctx: ProgramsContext) {
        const identity = authorize(ctx.identity, WRITE);
        return ctx.repos.programAssignments.cancelOverride(identity, checkId(a.id));
      },
    },
    Program: {
      __resolveReference(ref: { id: unknown }, ctx: ProgramsContext) {
        authorize(ctx.identity, READ);
        return typeof ref.id === 'string' ? ctx.programLoaders.program.load(ref.id) : null;
      },
    },
    CalendarRule: {
      program: (r: CalendarRule, _: Args, ctx: ProgramsContext) => ctx.programLoaders.program.load(r.programId),
      from: (r: CalendarRule) => (r.kind === 'date' ? r.from : null),
      to: (r: CalendarRule) => (r.kind === 'date' ? r.to : null),
      month: (r: CalendarRule) => (r.kind === 'yearly' ? r.month : null),
      day: (r: CalendarRule) => (r.kind === 'yearly' ? r.day : null),
      weekdays: (r: CalendarRule) => (r.kind === 'weekday' ? r.weekdays : null),
      n: (r: CalendarRule) => (r.kind === 'nthWeekday' ? r.n : null),
      weekday: (r: CalendarRule) => (r.kind === 'nthWeekday' ? r.weekday : null),
      months: (r: CalendarRule) => (r.kind === 'nthWeekday' ? r.months : null),
    },
    ProgramCalendar: {
      defaultProgram: (c: CalendarRow, _: Args, ctx: ProgramsContext) => ctx.programLoaders.program.load(c.defaultProgramId),
    },
    ProgramAssignment: {
      program: (x: AssignmentRow, _: Args, ctx: ProgramsContext) => (x.programId ? ctx.programLoaders.program.load(x.programId) : null),
      calendar: (x: AssignmentRow, _: Args, ctx: ProgramsContext) => (x.calendarId ? ctx.programLoaders.calendar.load(x.calendarId) : null),
      site: (x: AssignmentRow) => (x.siteId ? { id: x.siteId } : null),
      profile: (x: AssignmentRow) => (x.profileId ? { id: x.profileId } : null),
      device: (x: AssignmentRow) => (x.deviceId ? { id: x.deviceId } : null),
    },
    ProgramOverride: {
      site: (o: OverrideRow) => (o.siteId ? { id: o.siteId } : null),
      device: (o: OverrideRow) => (o.deviceId ? { id: o.deviceId } : null),
      status: (o: OverrideRow) => overrideStatus(o),
    },
    ProgramEvent: {
      at: (e: PreviewEvent) => new Date(e.at),
      program: (e: PreviewEvent, _: Args, ctx: ProgramsContext) => (e.programId ? ctx.programLoaders.program.load(e.programId) : null),
      switchPoint: (e: PreviewEvent) => e.index,
      override: (e: PreviewEvent, _: Args, ctx: ProgramsContext) => (e.overrideId ? ctx.programLoaders.override.load(e.overrideId) : null),
    },
    ProgramConflict: {
      program: (c: Conflict, _: Args, ctx: ProgramsContext) => (c.programId ? ctx.programLoaders.program.load(c.programId) : null),
      overrides: async (c: Conflict, _: Args, ctx: ProgramsContext) =>
        (await ctx.programLoaders.override.loadMany(c.overrideIds)).filter((o): o is OverrideRow => o !== null && !(o instanceof Error)),
    },
  };
}
