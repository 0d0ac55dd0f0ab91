/**
 * A rule's device actions (docs/alarms-rules.md, "Actions"): send a command or set desired state on
 * the device whose alarm the rule raised (or, with `trigger: 'clear'`, cleared). Stored as JSON in
 * `rules.actions`, written by the rules subgraph (checked with {@link parseRuleActions}, and against
 * the rule's profile's command specs with {@link checkActionsAgainstSpecs}) and executed by the
 * workers with {@link runRuleActions} in the transaction that changes the alarm, so an action happens
 * exactly when the alarm change commits, once.
 */
import { sql } from 'kysely';
import { z } from 'zod';
import {
  COMMAND_NAME,
  type CommandSpec,
  checkCommand,
  type DesiredPatch,
  historyEntry,
  MAX_PARAMS_BYTES,
  setDesiredPatches,
  storedSpecs,
} from './commands.js';
import { SET_STATE_COMMAND } from './contracts/commands.js';
import type { Tx } from './db.js';
import { BadInputError } from './errors.js';
import { counter } from './metrics.js';
import { check } from './validation.js';

export const RULE_ACTION_KINDS = ['command', 'setDesiredState'] as const;
export type RuleActionKind = (typeof RULE_ACTION_KINDS)[number];
export const RULE_ACTION_TRIGGERS = ['raise', 'clear'] as const;
export type RuleActionTrigger = (typeof RULE_ACTION_TRIGGERS)[number];

/** Most actions one rule may have. */
export const MAX_RULE_ACTIONS = 5;

export type RuleAction =
  | { kind: 'command'; trigger: RuleActionTrigger; name: string; params: Record<string, unknown> }
  | { kind: 'setDesiredState'; trigger: RuleActionTrigger; patch: Record<string, unknown> };

const object = z.record(z.string(), z.unknown(), { error: 'must be a JSON object' });
const actionSchema = z.object({
  kind: z.enum(RULE_ACTION_KINDS, { error: 'must be command or setDesiredState' }),
  trigger: z.enum(RULE_ACTION_TRIGGERS).nullish(),
  name: z.string().nullish(),
  params: object.nullish(),
  patch: object.nullish(),
});

const bad = (field: string, why: string): never => {
  throw new BadInputError(`${field}: ${why}`, { field });
};

/**
 * Checks a rule's actions (input or stored), with their defaults (`trigger` raise, `params` {});
 * BAD_USER_INPUT naming the field (`input.actions[0].name`). Null or an empty list: no actions.
 */
export function parseRuleActions(raw: unknown, field = 'input.actions'): RuleAction[] {
  if (raw === null || raw === undefined) return [];
  const list: unknown = typeof raw === 'string' ? JSON.parse(raw) : raw;
  if (!Array.isArray(list)) return bad(field, 'must be a list');
  if (list.length > MAX_RULE_ACTIONS) bad(field, `at most ${MAX_RULE_ACTIONS} actions`);
  return list.map((item, i): RuleAction => {
    const f = `${field}[${i}]`;
    const a = check(actionSchema, item, f);
    const trigger = a.trigger ?? 'raise';
    if (a.kind === 'command') {
      if (a.patch != null) bad(`${f}.patch`, 'only for setDesiredState actions');
      if (typeof a.name !== 'string' || !COMMAND_NAME.test(a.name))
        bad(`${f}.name`, 'required: a letter then up to 63 letters, digits, _ . -');
      if (a.name === SET_STATE_COMMAND) bad(`${f}.name`, `${SET_STATE_COMMAND} is the platform's; use a setDesiredState action`);
      const params = a.params ?? {};
      if (JSON.stringify(params).length > MAX_PARAMS_BYTES) bad(`${f}.params`, `at most ${MAX_PARAMS_BYTES} bytes`);
      return { kind: 'command', trigger, name: a.name as string, params };
    }
    if (a.name != null) bad(`${f}.name`, 'only for command actions');
    if (a.params != null) bad(`${f}.params`, 'only for command actions');
    const patch = a.patch;
    if (!patch || !Object.keys(patch).length) return bad(`${f}.patch`, 'required: a non-empty JSON object');
    if (JSON.stringify(patch).length > MAX_PARAMS_BYTES) bad(`${f}.patch`, `at most ${MAX_PARAMS_BYTES} bytes`);
    return { kind: 'setDesiredState', trigger, patch };
  });
}

/**
 * Checks command actions against a profile's declared commands (a rule scoped to that profile):
 * BAD_USER_INPUT `input.actions[i].name` for an undeclared command, `input.actions[i].params.<path>`
 * for parameters its JSON Schema refuses.
 */
export function checkActionsAgainstSpecs(actions: readonly RuleAction[], specs: readonly CommandSpec[], field = 'input.actions'): void {
  actions.forEach((a, i) => {
    if (a.kind === 'command') checkCommand(specs, a.name, a.params, `${field}[${i}]`);
  });
}

const actionsTotal = counter('rulr_rule_actions_total', 'Device actions of rules (commands, desired states), by kind and outcome', [
  'kind',
  'outcome',
]);

/** An alarm change of a rule with actions: run the actions of this trigger on the alarm's device. */
export interface FiredActions {
  ruleId: string;
  deviceId: string;
  alarmId: string;
  trigger: RuleActionTrigger;
  actions: readonly RuleAction[];
}

export interface RuleActionOptions {
  /** `COMMANDS_DEFAULT_TIMEOUT_S`, when the spec has none */
  timeoutS: number;
  /** `COMMANDS_DEFAULT_EXPIRY_S` */
  expiryS: number;
  now?: Date;
  /** told about each refused action (the device's profile does not declare the command, bad params) */
  onRefused?: (f: FiredActions, reason: string) => void;
}

export interface ActionResult {
  /** commands queued (named commands and `setState`) */
  queued: number;
  refused: number;
  /** devices marked for dispatch (add `dispatch` jobs after commit) */
  deviceIds: string[];
}

/**
 * Runs fired actions in the caller's tenant transaction, set-based: named commands are checked
 * against each device's own profile (a rule without a profile may reach devices that do not declare
 * the command: those are refused and counted, nothing is queued) and inserted in one statement;
 * desired-state patches go through {@link setDesiredPatches} per rule (`created_by` `rule:<id>`).
 * Devices not of `orgId` or decommissioned are ignored.
 */
export async function runRuleActions(tx: Tx, orgId: string, fired: readonly FiredActions[], o: RuleActionOptions): Promise<ActionResult> {
  const result: ActionResult = { queued: 0, refused: 0, deviceIds: [] };
  const mine = fired.filter((f) => f.actions.some((a) => a.trigger === f.trigger));
  if (!mine.length) return result;
  const now = o.now ?? new Date();
  const deviceIds = [...new Set(mine.map((f) => f.deviceId))];
  const { rows } = await sql<{ id: string; commands: unknown }>`
    select d.id, p.commands from devices d left join device_profiles p on p.id = d.profile_id and p.org_id = ${orgId}::uuid
    where d.org_id = ${orgId}::uuid and d.id = any(${deviceIds}::uuid[]) and d.decommissioned_at is null`.execute(tx);
  const specsOf = new Map(rows.map((r) => [r.id, storedSpecs(r.commands)]));
  const commands: { deviceId: string; name: string; params: string; timeoutS: number; actor: string; history: string }[] = [];
  const patches = new Map<string, DesiredPatch[]>();
  for (const f of mine) {
    const specs = specsOf.get(f.deviceId);
    if (!specs) continue;
    const actor = `rule:${f.ruleId}`;
    for (const a of f.actions) {
      if (a.trigger !== f.trigger) continue;
      if (a.kind === 'setDesiredState') {
        // one patch per rule and device (several actions of a rule merge in order)
        const list = patches.get(actor) ?? [];
        const same = list.find((p) => p.deviceId === f.deviceId);
        if (same) same.patch = { ...same.patch, ...a.patch };
        else list.push({ deviceId: f.deviceId, patch: { ...a.patch }, rampSeconds: null });
        patches.set(actor, list);
        continue;
      }
      try {
        const spec = checkCommand(specs, a.name, a.params, 'action');
        const evidence = { by: actor, source: `alarm ${f.trigger === 'raise' ? 'raised' : 'cleared'}`, alarmId: f.alarmId };
        commands.push({
          deviceId: f.deviceId,
          name: spec.name,
          params: JSON.stringify(a.params),
          timeoutS: spec.timeoutSeconds ?? o.timeoutS,
          actor,
          history: JSON.stringify([historyEntry('QUEUED', now, evidence)]),
        });
      } catch (e) {
        result.refused++;
        actionsTotal.inc({ kind: 'command', outcome: 'refused' });
        o.onRefused?.(f, (e as Error).message);
      }
    }
  }
  const marked = new Set<string>();
  if (commands.length) {
    const expires = new Date(now.getTime() + o.expiryS * 1000);
    const { rows: queued } = await sql<{ device_id: string }>`
      with q as (
        insert into commands (org_id, device_id, name, params, timeout_s, created_by, created_at, updated_at, expires_at, due_at, history)
        select ${orgId}::uuid, c.device_id, c.name, c.params, c.timeout_s, c.actor, ${now}, ${now}, ${expires}, ${expires}, c.history
        from unnest(${commands.map((c) => c.deviceId)}::uuid[], ${commands.map((c) => c.name)}::text[], ${commands.map((c) => c.params)}::jsonb[],
                    ${commands.map((c) => c.timeoutS)}::int[], ${commands.map((c) => c.actor)}::text[], ${commands.map((c) => c.history)}::jsonb[])
             as c(device_id, name, params, timeout_s, actor, history)
        returning device_id
      )
      insert into device_states as s (device_id, org_id, pending_dispatch)
      select distinct device_id, ${orgId}::uuid, true from q
      on conflict (device_id) do update set pending_dispatch = true
      returning device_id`.execute(tx);
    result.queued += commands.length;
    actionsTotal.inc({ kind: 'command', outcome: 'queued' }, commands.length);
    for (const r of queued) marked.add(r.device_id);
  }
  for (const [actor, items] of patches) {
    const n = await setDesiredPatches(tx, orgId, items, actor, { timeoutS: o.timeoutS, expiryS: o.expiryS, now });
    result.queued += n.queued;
    actionsTotal.inc({ kind: 'setDesiredState', outcome: 'applied' }, items.length);
    for (const id of n.deviceIds) marked.add(id);
  }
  result.deviceIds = [...marked];
  return result;
}

/** A rule as {@link firedActions} needs it. */
interface WithActions {
  id: string;
  actions?: readonly RuleAction[] | undefined;
}

/**
 * The actions a batch of written alarm changes fires: each raise by its rule's `raise` actions, each
 * clear by the clearing rule's `clear` actions (`clearedBy`: alarm id → rule). Only changes that were
 * written count, so a retried evaluation or a concurrent raise (the open-alarm unique index) fires nothing twice.
 */
export function firedActions(
  written: {
    raised: readonly { id: string; deviceId: string; ruleId: string | null }[];
    cleared: readonly { id: string; deviceId: string }[];
  },
  raisedBy: ReadonlyMap<string, WithActions>,
  clearedBy: ReadonlyMap<string | undefined, WithActions>,
): FiredActions[] {
  const out: FiredActions[] = [];
  const add = (a: { id: string; deviceId: string }, rule: WithActions | undefined, trigger: RuleActionTrigger) => {
    if (rule?.actions?.some((x) => x.trigger === trigger))
      out.push({ ruleId: rule.id, deviceId: a.deviceId, alarmId: a.id, trigger, actions: rule.actions });
  };
  for (const a of written.raised) add(a, raisedBy.get(a.ruleId ?? ''), 'raise');
  for (const a of written.cleared) add(a, clearedBy.get(a.id), 'clear');
  return out;
}
