import { z } from 'zod';
import { isUuid } from '../../lib/db.js';
import { BadInputError } from '../../lib/errors.js';
import { decodeTimeIdCursor } from '../../lib/graphql-scalars.js';
import { type Condition, conditionProblem, OPERATORS, type Operator, SEVERITIES, type Severity } from '../../lib/rules.js';
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

/** `createRule`/`dryRunRule` input after GraphQL mapped the enums to their lower-case values. */
export const createRuleSchema = z.object({
  name,
  description: description.nullish(),
  enabled: z.boolean().nullish(),
  metric,
  operator: z.enum(OPERATORS),
  threshold: finite,
  clearThreshold: finite.nullish(),
  severity: z.enum(SEVERITIES),
  alarmType: name.nullish(),
  autoClear: z.boolean().nullish(),
  siteId: uuid.nullish(),
  profileId: uuid.nullish(),
});

/** `updateRule` input: absent fields keep their value; `null` is refused except where it removes. */
export const updateRuleSchema = z.object({
  name: name.optional(),
  description: description.optional(),
  enabled: z.boolean().optional(),
  metric: metric.optional(),
  operator: z.enum(OPERATORS).optional(),
  threshold: finite.optional(),
  clearThreshold: finite.nullish(),
  severity: z.enum(SEVERITIES).optional(),
  alarmType: name.optional(),
  autoClear: z.boolean().optional(),
  siteId: uuid.nullish(),
  profileId: uuid.nullish(),
});

/** The fields of `UpdateRuleInput` that `null` removes; any other field set to null is refused. */
const NULLABLE = new Set(['clearThreshold', 'siteId', 'profileId']);

/** A complete rule definition, ready to store or to dry-run. */
export interface RuleDefinition extends Condition {
  name: string;
  description: string;
  enabled: boolean;
  metric: string;
  operator: Operator;
  threshold: number;
  clearThreshold: number | null;
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

/** Validates a `CreateRuleInput` and fills its defaults (alarm type: the name; enabled and autoClear: true). */
export function parseRuleInput(input: unknown): RuleDefinition {
  const r = check(createRuleSchema, input, 'input');
  const def: RuleDefinition = {
    name: r.name,
    description: r.description ?? '',
    enabled: r.enabled ?? true,
    metric: r.metric,
    operator: r.operator,
    threshold: r.threshold,
    clearThreshold: r.clearThreshold ?? null,
    severity: r.severity,
    alarmType: r.alarmType ?? r.name,
    autoClear: r.autoClear ?? true,
    siteId: r.siteId ?? null,
    profileId: r.profileId ?? null,
  };
  assertCondition(def);
  return def;
}

/** Validates an `UpdateRuleInput`; the resulting condition is checked once merged with the stored rule. */
export function parseRulePatch(input: Record<string, unknown>): RulePatch {
  for (const [k, v] of Object.entries(input)) {
    if (v === null && !NULLABLE.has(k)) throw new BadInputError(`input.${k}: must not be null`, { field: `input.${k}` });
  }
  const r = check(updateRuleSchema, input, 'input');
  return Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) as RulePatch;
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
