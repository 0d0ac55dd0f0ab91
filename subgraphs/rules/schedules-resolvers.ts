import { z } from 'zod';
import { isUuid, type Tx } from '../../lib/db.js';
import { BadInputError } from '../../lib/errors.js';
import { upperCaseEnum } from '../../lib/graphql-scalars.js';
import { authorize, type Identity, type Requirement } from '../../lib/identity.js';
import { SCHEDULE_ACTION_KINDS, type ScheduleAction } from '../../lib/schedule-actions.js';
import { parseCron, ScheduleError } from '../../lib/schedules.js';
import type { ScheduleDefinition, ScheduleRow, SchedulesRepository } from './repositories/schedules.js';
import { check, checkFirst, checkId } from './validation.js';

/**
 * Resolvers of the schedules part of the rules subgraph (`# --- schedules` in schema.graphql): cron
 * schedules in a time zone and their runs. Merged into the subgraph's resolver map by resolvers.ts.
 */

const READ: Requirement = { role: 'viewer', scope: 'rules:read' };
const WRITE: Requirement = { role: 'operator', scope: 'rules:write' };
const MAX_SCHEDULES = 500;
const MAX_RUNS = 100;

interface Ctx {
  identity: Identity;
  repos: { schedules: SchedulesRepository };
}
type Args = Record<string, unknown>;

const name = z.string().trim().min(1, 'must not be empty').max(200, 'must be at most 200 characters');
const actionInput = z.object({
  kind: z.enum(SCHEDULE_ACTION_KINDS),
  ruleId: z.string().nullish(),
  siteId: z.string().nullish(),
});
const createSchema = z.object({
  name,
  description: z.string().max(2000, 'must be at most 2000 characters').nullish(),
  enabled: z.boolean().nullish(),
  cron: z.string(),
  timeZone: z.string(),
  action: actionInput,
});
const updateSchema = z.object({
  name: name.optional(),
  description: z.string().max(2000, 'must be at most 2000 characters').optional(),
  enabled: z.boolean().optional(),
  cron: z.string().optional(),
  timeZone: z.string().optional(),
  action: actionInput.optional(),
});

/** An action input as stored; BAD_USER_INPUT naming `input.action.<field>` when it does not fit its kind. */
function parseAction(a: z.infer<typeof actionInput>): ScheduleAction {
  const field = (f: string, why: string) => new BadInputError(`input.action.${f}: ${why}`, { field: `input.action.${f}` });
  if (a.kind === 'alarm_report') {
    if (a.ruleId) throw field('ruleId', 'not allowed for ALARM_REPORT');
    if (a.siteId && !isUuid(a.siteId)) throw field('siteId', 'must be a uuid');
    return { kind: 'alarm_report', siteId: a.siteId ?? null };
  }
  if (a.siteId) throw field('siteId', `not allowed for ${a.kind.toUpperCase()}`);
  if (!a.ruleId) throw field('ruleId', `required for ${a.kind.toUpperCase()}`);
  if (!isUuid(a.ruleId)) throw field('ruleId', 'must be a uuid');
  return { kind: a.kind, ruleId: a.ruleId };
}

/** Cron and time zone checked together; BAD_USER_INPUT naming `input.cron` or `input.timeZone`. */
function parseSpec(cron: string, timeZone: string): { cron: string; timeZone: string } {
  try {
    return parseCron(cron, timeZone);
  } catch (e) {
    if (e instanceof ScheduleError) throw new BadInputError(`input.${e.field}: ${e.reason}`, { field: `input.${e.field}` });
    throw e;
  }
}

/** The action's rule or site must be the organization's (others' are invisible under RLS anyway). */
async function checkRefs(tx: Tx, orgId: string, action: ScheduleAction): Promise<void> {
  if (action.kind === 'alarm_report') {
    if (!action.siteId) return;
    const site = await tx.selectFrom('sites').select('id').where('org_id', '=', orgId).where('id', '=', action.siteId).executeTakeFirst();
    if (!site) throw new BadInputError('input.action.siteId: site not found', { field: 'input.action.siteId' });
    return;
  }
  const rule = await tx
    .selectFrom('rules')
    .select('id')
    .where('org_id', '=', orgId)
    .where('id', '=', action.ruleId)
    .where('deleted_at', 'is', null)
    .executeTakeFirst();
  if (!rule) throw new BadInputError('input.action.ruleId: rule not found', { field: 'input.action.ruleId' });
}

export function scheduleResolvers() {
  return {
    ScheduleActionKind: upperCaseEnum(SCHEDULE_ACTION_KINDS),
    ScheduleRunStatus: upperCaseEnum(['succeeded', 'failed', 'skipped']),
    Query: {
      schedules(_: unknown, args: Args, ctx: Ctx) {
        const { orgId } = authorize(ctx.identity, READ);
        const first = checkFirst((args.first as number | null | undefined) ?? 100, MAX_SCHEDULES);
        return ctx.repos.schedules.list(orgId, first);
      },
      schedule(_: unknown, args: Args, ctx: Ctx) {
        const { orgId } = authorize(ctx.identity, READ);
        return ctx.repos.schedules.byId(orgId, checkId(args.id));
      },
    },
    Mutation: {
      createSchedule(_: unknown, args: Args, ctx: Ctx) {
        const identity = authorize(ctx.identity, WRITE);
        const r = check(createSchema, args.input, 'input');
        const def: ScheduleDefinition = {
          name: r.name,
          description: r.description ?? '',
          enabled: r.enabled ?? true,
          ...parseSpec(r.cron, r.timeZone),
          action: parseAction(r.action),
        };
        return ctx.repos.schedules.create(identity, def, (tx) => checkRefs(tx, identity.orgId, def.action));
      },
      updateSchedule(_: unknown, args: Args, ctx: Ctx) {
        const identity = authorize(ctx.identity, WRITE);
        const id = checkId(args.id);
        const input = (args.input ?? {}) as Args;
        for (const [k, v] of Object.entries(input)) {
          if (v === null) throw new BadInputError(`input.${k}: must not be null`, { field: `input.${k}` });
        }
        const r = check(updateSchema, input, 'input');
        const action = r.action ? parseAction(r.action) : undefined;
        return ctx.repos.schedules.update(
          identity,
          id,
          (before) => ({
            name: r.name ?? before.name,
            description: r.description ?? before.description,
            enabled: r.enabled ?? before.enabled,
            ...parseSpec(r.cron ?? before.cron, r.timeZone ?? before.timeZone),
            action: action ?? before.action,
          }),
          (tx, def) => (action ? checkRefs(tx, identity.orgId, def.action) : Promise.resolve()),
        );
      },
      async deleteSchedule(_: unknown, args: Args, ctx: Ctx) {
        const identity = authorize(ctx.identity, WRITE);
        await ctx.repos.schedules.delete(identity, checkId(args.id));
        return true;
      },
    },
    Schedule: {
      __resolveReference(ref: { id: unknown }, ctx: Ctx) {
        const { orgId } = authorize(ctx.identity, READ);
        return typeof ref.id === 'string' ? ctx.repos.schedules.byId(orgId, ref.id) : null;
      },
      action: (s: ScheduleRow) => ({
        kind: s.action.kind,
        rule: 'ruleId' in s.action ? { id: s.action.ruleId } : null,
        site: 'siteId' in s.action && s.action.siteId ? { id: s.action.siteId } : null,
      }),
      runs(s: ScheduleRow, args: Args, ctx: Ctx) {
        const { orgId } = authorize(ctx.identity, READ);
        const first = checkFirst((args.first as number | null | undefined) ?? 20, MAX_RUNS);
        return ctx.repos.schedules.runs(orgId, s.id, first);
      },
    },
    ScheduleRun: {
      result: (r: { result: unknown }) => (r.result === null || r.result === undefined ? null : JSON.stringify(r.result)),
    },
  };
}
