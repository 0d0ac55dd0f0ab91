import { z } from 'zod';
import { isUuid } from '../../lib/db.js';
import { BadInputError } from '../../lib/errors.js';
import { decodeTimeIdCursor } from '../../lib/graphql-scalars.js';
import { parseRuleActions, type RuleAction } from '../../lib/rule-actions.js';
import { ExpressionError, parseExpression } from '../../lib/rule-expr.js';
import { parseRuleNotify, type RuleNotify, ruleNotifySchema } from '../../lib/rule-notify.js';
import { type Condition, conditionProblem, OPERATORS, type Operator, SEVERITIES, type Severity } from '../../lib/rules.js';
import { RULE_KINDS, type RuleKind } from '../../lib/rules-wait.js';
import { check } from '../../lib/validation.js';

export { check, checkId, checkIds } from '../../lib/validation.js';

/**
 * Most rules one page of `rules` may return.
 * @default 500
 */
export const MAX_RULE_PAGE = 500;
/**
 * Most executions `Rule.executions` may return.
 * @default 100
 */
export const MAX_EXECUTIONS = 100;
/**
 * Most matches a dry run lists.
 * @default 1000
 */
export const MAX_DRY_RUN_MATCHES = 1000;

/** A metric name as ingest accepts it (and device profiles declare it). */
export const METRIC_NAME = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;

const name = z.string().trim().min(1, 'must not be empty').max(200, 'must be at most 200 characters');
const description = z.string().max(2000, 'must be at most 2000 characters');
const metric = z.string().regex(METRIC_NAME, 'must start with a letter: up to 64 of A-Z a-z 0-9 _ . -');
const finite = z.number({ error: 'must be a finite number' });
const uuid = z.string().refine(isUuid, 'must be a uuid');
const seconds = (min: number, max: number) =>
  z.number().int('must be a whole number of seconds').min(min, `must be at least ${min}`).max(max, `must be at most ${max}`);
/** Longest wait of a duration or repeat window: one week. */
const WAIT = seconds(1, 604_800);
const waitFields = {
  forSeconds: WAIT.nullish(),
  repeatCount: z.number().int('must be a whole number').min(2, 'must be at least 2').max(1000, 'must be at most 1000').nullish(),
  windowSeconds: WAIT.nullish(),
  noDataSeconds: seconds(60, 2_592_000).nullish(),
  expression: z.string().nullish(),
  notify: z.unknown().nullish(),
  actions: z.unknown().nullish(),
};

/** `createRule`/`dryRunRule` input after GraphQL mapped the enums to their lower-case values. */
export const createRuleSchema = z.object({
  name,
  description: description.nullish(),
  enabled: z.boolean().nullish(),
  kind: z.enum(RULE_KINDS).nullish(),
  metric: metric.nullish(),
  operator: z.enum(OPERATORS).nullish(),
  threshold: finite.nullish(),
  clearThreshold: finite.nullish(),
  severity: z.enum(SEVERITIES),
  alarmType: name.nullish(),
  autoClear: z.boolean().nullish(),
  clearOnDisable: z.boolean().nullish(),
  siteId: uuid.nullish(),
  profileId: uuid.nullish(),
  ...waitFields,
});

/** `updateRule` input: absent fields keep their value; `null` is refused except where it removes. */
export const updateRuleSchema = z.object({
  name: name.optional(),
  description: description.optional(),
  enabled: z.boolean().optional(),
  kind: z.enum(RULE_KINDS).optional(),
  metric: metric.nullish(),
  operator: z.enum(OPERATORS).nullish(),
  threshold: finite.nullish(),
  clearThreshold: finite.nullish(),
  severity: z.enum(SEVERITIES).optional(),
  alarmType: name.optional(),
  autoClear: z.boolean().optional(),
  clearOnDisable: z.boolean().optional(),
  siteId: uuid.nullish(),
  profileId: uuid.nullish(),
  ...waitFields,
});

/** The fields of `UpdateRuleInput` that `null` removes; any other field set to null is refused. */
const NULLABLE = new Set([
  'clearThreshold',
  'siteId',
  'profileId',
  'forSeconds',
  'repeatCount',
  'windowSeconds',
  'noDataSeconds',
  'expression',
  'operator',
  'threshold',
  'metric',
  'notify',
  'actions',
]);

/** A complete rule definition, ready to store or to dry-run. */
export interface RuleDefinition {
  name: string;
  description: string;
  enabled: boolean;
  kind: RuleKind;
  /** THRESHOLD / NO_DATA: the metric; EXPRESSION: the expression's first metric */
  metric: string;
  operator: Operator | null;
  threshold: number | null;
  clearThreshold: number | null;
  expression: string | null;
  forSeconds: number | null;
  repeatCount: number | null;
  windowSeconds: number | null;
  noDataSeconds: number | null;
  clearOnDisable: boolean;
  /** the notify action, null: none */
  notify: RuleNotify | null;
  /** device actions (lib/rule-actions.ts) */
  actions: RuleAction[];
  severity: Severity;
  alarmType: string;
  autoClear: boolean;
  siteId: string | null;
  profileId: string | null;
}

/** The fields an update changes; `undefined` keeps, `null` removes (nullable fields only). */
export type RulePatch = Partial<RuleDefinition>;

/** Throws BAD_USER_INPUT with {@link conditionProblem}'s reason when the condition cannot be used. */
export function assertCondition(c: Condition): void {
  const problem = conditionProblem(c);
  if (problem) throw new BadInputError(problem, { field: 'input' });
}

const bad = (field: string, reason: string) => new BadInputError(`input.${field}: ${reason}`, { field: `input.${field}` });

/** The metrics a definition reads (the expression's, or the one metric). */
export function ruleMetrics(def: Pick<RuleDefinition, 'kind' | 'metric' | 'expression'>): string[] {
  return def.kind === 'expression' && def.expression ? parseExpression(def.expression).metrics : [def.metric];
}

/**
 * Checks that the fields of a complete definition fit its kind, and fills the metric of an
 * EXPRESSION rule; BAD_USER_INPUT naming the field otherwise (an expression error gives its position).
 */
export function assertDefinition(def: RuleDefinition): RuleDefinition {
  const absent = (field: keyof RuleDefinition, why: string) => {
    if (def[field] !== null && def[field] !== undefined) throw bad(field, `not allowed ${why}`);
  };
  const out = { ...def };
  if (def.kind === 'threshold') {
    if (!def.metric) throw bad('metric', 'required for THRESHOLD rules');
    if (!def.operator) throw bad('operator', 'required for THRESHOLD rules');
    if (def.threshold === null) throw bad('threshold', 'required for THRESHOLD rules');
    absent('expression', 'for THRESHOLD rules');
    absent('noDataSeconds', 'for THRESHOLD rules');
    assertCondition({ operator: def.operator, threshold: def.threshold, clearThreshold: def.clearThreshold });
  } else if (def.kind === 'expression') {
    if (!def.expression) throw bad('expression', 'required for EXPRESSION rules');
    let metrics: string[];
    try {
      metrics = parseExpression(def.expression).metrics;
    } catch (e) {
      if (e instanceof ExpressionError) throw bad('expression', e.message);
      throw e;
    }
    for (const f of ['operator', 'threshold', 'clearThreshold', 'noDataSeconds'] as const)
      absent(f, 'for EXPRESSION rules (write the condition in expression)');
    if (def.metric && !metrics.includes(def.metric)) throw bad('metric', `"${def.metric}" is not read by the expression (leave it out)`);
    out.metric = metrics[0] as string;
  } else {
    if (!def.metric) throw bad('metric', 'required for NO_DATA rules');
    if (def.noDataSeconds === null) throw bad('noDataSeconds', 'required for NO_DATA rules');
    for (const f of ['operator', 'threshold', 'clearThreshold', 'expression', 'forSeconds', 'repeatCount', 'windowSeconds'] as const)
      absent(f, 'for NO_DATA rules');
  }
  if ((def.repeatCount === null) !== (def.windowSeconds === null))
    throw bad(def.repeatCount === null ? 'repeatCount' : 'windowSeconds', 'repeatCount and windowSeconds go together');
  if (def.forSeconds !== null && def.repeatCount !== null) throw bad('forSeconds', 'a rule waits for a duration or for repeats, not both');
  return out;
}

/** Validates a `CreateRuleInput` and fills its defaults (alarm type: the name; enabled and autoClear: true). */
export function parseRuleInput(input: unknown): RuleDefinition {
  const r = check(createRuleSchema, input, 'input');
  return assertDefinition({
    name: r.name,
    description: r.description ?? '',
    enabled: r.enabled ?? true,
    kind: r.kind ?? 'threshold',
    metric: r.metric ?? '',
    operator: r.operator ?? null,
    threshold: r.threshold ?? null,
    clearThreshold: r.clearThreshold ?? null,
    expression: r.expression ?? null,
    forSeconds: r.forSeconds ?? null,
    repeatCount: r.repeatCount ?? null,
    windowSeconds: r.windowSeconds ?? null,
    noDataSeconds: r.noDataSeconds ?? null,
    clearOnDisable: r.clearOnDisable ?? false,
    notify: parseNotifyInput(r.notify),
    actions: parseRuleActions(r.actions),
    severity: r.severity,
    alarmType: r.alarmType ?? r.name,
    autoClear: r.autoClear ?? true,
    siteId: r.siteId ?? null,
    profileId: r.profileId ?? null,
  });
}

/** A `RuleNotifyInput` with its defaults, BAD_USER_INPUT naming `input.notify.<field>` when it is bad. */
export function parseNotifyInput(v: unknown): RuleNotify | null {
  if (v === null || v === undefined) return null;
  return parseRuleNotify(check(ruleNotifySchema, v, 'input.notify'));
}

/** Validates an `UpdateRuleInput`; the resulting condition is checked once merged with the stored rule. */
export function parseRulePatch(input: Record<string, unknown>): RulePatch {
  for (const [k, v] of Object.entries(input)) {
    if (v === null && !NULLABLE.has(k)) throw new BadInputError(`input.${k}: must not be null`, { field: `input.${k}` });
  }
  const r = check(updateRuleSchema, input, 'input');
  const out = Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) as RulePatch;
  if ('notify' in input) out.notify = parseNotifyInput(input.notify);
  if ('actions' in input) out.actions = parseRuleActions(input.actions);
  return out;
}

/** A `first` argument within 1..max, else BAD_USER_INPUT. */
export function checkFirst(first: number, max: number): number {
  if (!Number.isInteger(first) || first < 1 || first > max) {
    throw new BadInputError(`first must be between 1 and ${max}`, { field: 'first' });
  }
  return first;
}

export const ruleFilterSchema = z
  .object({
    enabled: z.boolean().nullish(),
    metric: z.string().max(64, 'must be at most 64 characters').nullish(),
    search: z.string().trim().max(200, 'must be at most 200 characters').nullish(),
  })
  .nullish();

/** The sort key of a rule in `rules`: `created_at` as PostgreSQL prints it (microseconds kept) and the id. */
export type RuleCursor = [createdAt: string, id: string];

/** The key inside a `rules` cursor; anything else is BAD_USER_INPUT `invalid cursor`. */
export const parseRuleCursor = (cursor: string): RuleCursor => decodeTimeIdCursor(cursor);

/**
 * Longest window a dry run replays.
 * @default 31 days
 */
export const MAX_DRY_RUN_WINDOW_MS = 31 * 86_400_000;

/** A `DryRunWindow` (from before to, at most {@link MAX_DRY_RUN_WINDOW_MS}), or null when none was given. */
export function parseDryRunWindow(w: unknown): { from: Date; to: Date } | null {
  if (w === null || w === undefined) return null;
  const { from, to } = w as { from: Date; to: Date };
  if (!(from instanceof Date) || !(to instanceof Date)) throw new BadInputError('window: from and to are required', { field: 'window' });
  if (to.getTime() <= from.getTime()) throw new BadInputError('window.to: must be after window.from', { field: 'window.to' });
  if (to.getTime() - from.getTime() > MAX_DRY_RUN_WINDOW_MS) throw new BadInputError('window: at most 31 days', { field: 'window' });
  return { from, to };
}
