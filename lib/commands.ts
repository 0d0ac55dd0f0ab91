import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { sql } from 'kysely';
import { SET_STATE_COMMAND } from './contracts/commands.js';
import { commandUpdatedEvent, eventsChannel } from './contracts/events.js';
import type { Tx } from './db.js';
import { BadInputError } from './errors.js';

/**
 * Commands as every role that writes them shares them (docs/commands.md): the commands a profile
 * declares and how parameters are checked (JSON Schema through Ajv), desired-state deltas, and the
 * set-based writes that queue commands (`insertCommand`, {@link setDesiredLevels}). Dispatch and
 * status transitions belong to the workers (workers/commands.ts).
 */

/** One command a profile's devices accept (`device_profiles.commands`). */
export interface CommandSpec {
  name: string;
  /** JSON Schema of `params` */
  params: Record<string, unknown>;
  timeoutSeconds: number;
  description?: string;
}

export const COMMAND_NAME = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;
export const MAX_COMMAND_SPECS = 50;
export const MAX_TIMEOUT_S = 86_400;
/** `expiresAt` at most this far ahead */
export const MAX_EXPIRY_MS = 30 * 86_400_000;
/** params, desired-state patches: at most this much JSON */
export const MAX_PARAMS_BYTES = 8192;

const ajv = new Ajv({ allErrors: false, strict: true });
const compiled = new Map<string, ValidateFunction>();

/** A compiled params schema, cached by its text (profiles share a few). Throws Ajv's error for an invalid schema. */
function validatorOf(schema: Record<string, unknown>): ValidateFunction {
  const key = JSON.stringify(schema);
  let v = compiled.get(key);
  if (!v) {
    v = ajv.compile(schema);
    if (compiled.size > 1000) compiled.clear();
    compiled.set(key, v);
  }
  return v;
}

/** The field an Ajv error names, under `field` (`input.params.level`). */
function fieldOf(field: string, e: ErrorObject): string {
  const path = e.instancePath
    .split('/')
    .filter(Boolean)
    .map((p) => p.replaceAll('~1', '/').replaceAll('~0', '~'));
  const extra = (e.params as { missingProperty?: string; additionalProperty?: string }) ?? {};
  if (extra.missingProperty) path.push(extra.missingProperty);
  if (extra.additionalProperty) path.push(extra.additionalProperty);
  return [field, ...path].join('.');
}

/**
 * Checks a profile's declarations (`setProfileCommands`): names unique and well formed, `setState`
 * reserved, each params schema compiles, timeouts 1 s – 24 h. Throws BAD_USER_INPUT naming the field.
 */
export function checkCommandSpecs(input: unknown, field: string, defaultTimeoutS: number): CommandSpec[] {
  const bad = (f: string, why: string): never => {
    throw new BadInputError(`${f}: ${why}`, { field: f });
  };
  if (!Array.isArray(input)) return bad(field, 'must be a list');
  if (input.length > MAX_COMMAND_SPECS) bad(field, `at most ${MAX_COMMAND_SPECS} commands`);
  const seen = new Set<string>();
  return input.map((raw, i): CommandSpec => {
    const f = `${field}[${i}]`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return bad(f, 'must be an object');
    const c = raw as Record<string, unknown>;
    if (typeof c.name !== 'string' || !COMMAND_NAME.test(c.name)) bad(`${f}.name`, 'must be a letter then up to 63 letters, digits, _ . -');
    const name = c.name as string;
    if (name === SET_STATE_COMMAND) bad(`${f}.name`, `${SET_STATE_COMMAND} is the platform's desired-state command`);
    if (seen.has(name)) bad(`${f}.name`, `${name} is declared twice`);
    seen.add(name);
    const params = c.params ?? { type: 'object' };
    if (typeof params !== 'object' || params === null || Array.isArray(params)) return bad(`${f}.params`, 'must be a JSON Schema object');
    if (JSON.stringify(params).length > MAX_PARAMS_BYTES) bad(`${f}.params`, `at most ${MAX_PARAMS_BYTES} bytes`);
    try {
      validatorOf(params as Record<string, unknown>);
    } catch (e) {
      bad(`${f}.params`, `not a valid JSON Schema (${(e as Error).message.slice(0, 200)})`);
    }
    const timeout = c.timeoutSeconds ?? defaultTimeoutS;
    if (!Number.isInteger(timeout) || (timeout as number) < 1 || (timeout as number) > MAX_TIMEOUT_S)
      bad(`${f}.timeoutSeconds`, `must be an integer from 1 to ${MAX_TIMEOUT_S}`);
    if (c.description != null && (typeof c.description !== 'string' || c.description.length > 500))
      bad(`${f}.description`, 'must be a string of at most 500 characters');
    return {
      name,
      params: params as Record<string, unknown>,
      timeoutSeconds: timeout as number,
      ...(typeof c.description === 'string' ? { description: c.description } : {}),
    };
  });
}

/** The declarations stored on a profile (written by {@link checkCommandSpecs}); entries that do not look like one are ignored. */
export function storedSpecs(raw: unknown): CommandSpec[] {
  if (!Array.isArray(raw)) return [];
  return raw.filter(
    (c): c is CommandSpec =>
      typeof c === 'object' &&
      c !== null &&
      typeof c.name === 'string' &&
      typeof c.params === 'object' &&
      Number.isInteger(c.timeoutSeconds),
  );
}

/**
 * The spec `name` refers to among `specs`, with `params` checked against its schema. Throws
 * BAD_USER_INPUT naming `<field>.name` (unknown command) or `<field>.params.<path>` (bad parameter).
 */
export function checkCommand(specs: readonly CommandSpec[], name: unknown, params: unknown, field: string): CommandSpec {
  const spec = specs.find((s) => s.name === name);
  if (!spec) {
    const known = specs.map((s) => s.name).join(', ') || 'none';
    throw new BadInputError(`${field}.name: the device's profile declares no command ${String(name).slice(0, 64)} (declared: ${known})`, {
      field: `${field}.name`,
    });
  }
  const v = validatorOf(spec.params);
  if (!v(params)) {
    const e = v.errors?.[0] as ErrorObject;
    const f = fieldOf(`${field}.params`, e);
    throw new BadInputError(`${f}: ${e.message ?? 'invalid'}`, { field: f });
  }
  return spec;
}

/** What a desired state still asks of the reported one: the desired keys whose reported value differs (compared as JSON). */
export function deltaOf(desired: Record<string, unknown>, reported: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(desired)) if (!jsonEqual(v, reported[k])) out[k] = v;
  return out;
}

function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => jsonEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/** `desired` with `patch` merged in; a null value removes its key. */
export function mergePatch(desired: Record<string, unknown>, patch: Record<string, unknown>): Record<string, unknown> {
  const out = { ...desired };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = v;
  }
  return out;
}

/** One history entry, as `commands.history` stores it. */
export const historyEntry = (status: string, at: Date, evidence: Record<string, unknown>) => ({ status, at: at.toISOString(), evidence });

/** The SQL of a desired-state delta of `device_states` row `s` (same rule as {@link deltaOf}). */
export const SQL_DELTA = sql`(select coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb) from jsonb_each(s.desired) e where (s.reported -> e.key) is distinct from e.value)`;

/** One device's level (lighting programs: workers/programs.ts's `LevelItem`). */
export interface DesiredLevel {
  deviceId: string;
  level: number;
  rampSeconds: number;
}

export interface DesiredLevelsOptions {
  timeoutS: number;
  expiryS: number;
  now?: Date;
}

/** One device's desired-state patch (a null value removes its key), with an optional ramp passed to the device. */
export interface DesiredPatch {
  deviceId: string;
  patch: Record<string, unknown>;
  rampSeconds: number | null;
}

/**
 * The cancel of the superseded `setState` commands of `ids` not yet handed to the broker: a statement
 * of its own or a CTE of a larger one.
 */
const cancelSupersededSetState = (orgId: string, ids: readonly string[], now: Date, actor: string) => sql`
  update commands set status = 'CANCELED', completed_at = ${now}, due_at = null, updated_at = ${now},
    error = 'superseded by a newer desired state',
    history = history || ${JSON.stringify([historyEntry('CANCELED', now, { supersededBy: 'desired state', by: actor })])}::jsonb
  where org_id = ${orgId}::uuid and device_id = any(${[...ids]}::uuid[]) and name = ${SET_STATE_COMMAND}
    and status = 'QUEUED' and lease_until is null`;

/**
 * `insert into commands … select …` of one queued `setState` command `{desired: <delta>, version,
 * rampSeconds?}` per row of `s` (the device's `device_states` row) and `i` (its `ramp`); the caller
 * adds the `from`, the `where not s.in_sync` and the `returning`.
 */
function insertSetState(actor: string, o: DesiredLevelsOptions & { now: Date }) {
  const expires = new Date(o.now.getTime() + o.expiryS * 1000);
  const queued = JSON.stringify([historyEntry('QUEUED', o.now, { by: actor, source: 'desired state' })]);
  return sql`
    insert into commands (org_id, device_id, name, params, timeout_s, created_by, created_at, updated_at, expires_at, due_at, history)
    select s.org_id, s.device_id, ${SET_STATE_COMMAND},
           jsonb_build_object('desired', ${SQL_DELTA}, 'version', s.version)
             || case when i.ramp is null then '{}'::jsonb else jsonb_build_object('rampSeconds', i.ramp) end,
           ${o.timeoutS}, ${actor}, ${o.now}, ${o.now}, ${expires}, ${expires}, ${queued}::jsonb`;
}

/**
 * Sets `desired.level` of many devices in `tx` (the programs scheduler's push) in one statement,
 * whatever the number of devices: the desired state and its version (rows created where missing;
 * `pending_dispatch` set on the devices that get a command, in the same row write), the superseded
 * `setState` commands not yet handed to the broker CANCELED, and one `setState` command `{desired:
 * <delta>, version, rampSeconds}` queued per device whose reported state differs, for the workers'
 * dispatch sweep. One write of each `device_states` row instead of two, and one round trip: the push
 * of 100,000 lamps was dominated by these statements (docs/programs.md, "To the devices"). Pass the
 * items in device-id order (the dispatcher locks `device_states` rows in that order). Devices of
 * another organization are ignored. Returns how many commands were queued.
 */
export async function setDesiredLevels(
  tx: Tx,
  orgId: string,
  items: readonly DesiredLevel[],
  actor: string,
  o: DesiredLevelsOptions,
): Promise<number> {
  if (!items.length) return 0;
  const now = o.now ?? new Date();
  const ids = items.map((i) => i.deviceId);
  // Data-modifying CTEs all run on the statement's snapshot: the cancel never sees the commands queued here.
  const { rows } = await sql<{ queued: number }>`
    with i as (
      select * from unnest(${ids}::uuid[], ${items.map((i) => i.level)}::float8[], ${items.map((i) => i.rampSeconds)}::int[])
        as i(device_id, level, ramp)
    ), s as (
      insert into device_states as s (device_id, org_id, desired, version, desired_at, updated_at, pending_dispatch)
      select i.device_id, ${orgId}::uuid, jsonb_build_object('level', i.level), 1, ${now}, ${now}, true
      -- a probe per device (offset 0 keeps it one): a hash join read the whole devices table for every batch
      from i cross join lateral (select 1 from devices d where d.id = i.device_id and d.org_id = ${orgId}::uuid offset 0) d
      on conflict (device_id) do update
        set desired = s.desired || excluded.desired, version = s.version + 1, desired_at = excluded.desired_at,
            updated_at = excluded.updated_at, pending_dispatch = s.pending_dispatch or not ((s.desired || excluded.desired) <@ s.reported)
      returning s.device_id, s.org_id, s.desired, s.reported, s.version, s.in_sync
    ), canceled as (${cancelSupersededSetState(orgId, ids, now, actor)}
    ), queued as (
      ${insertSetState(actor, { ...o, now })}
      from s join i on i.device_id = s.device_id
      where not s.in_sync
      returning 1
    )
    select count(*)::int as queued from queued`.execute(tx);
  return rows[0]?.queued ?? 0;
}

/**
 * Merges patches into many devices' desired states in `tx` (rule actions) with four set-based
 * statements: missing `device_states` rows, the merge and version (a null removes its key, as
 * {@link mergePatch}), then {@link queueSetState}. Devices of another organization are ignored.
 * Returns the commands queued and their devices.
 */
export async function setDesiredPatches(
  tx: Tx,
  orgId: string,
  items: readonly DesiredPatch[],
  actor: string,
  o: DesiredLevelsOptions,
): Promise<{ queued: number; deviceIds: string[] }> {
  if (!items.length) return { queued: 0, deviceIds: [] };
  const now = o.now ?? new Date();
  const ids = items.map((i) => i.deviceId);
  const patches = items.map((i) => JSON.stringify(i.patch));
  await sql`
    insert into device_states (device_id, org_id)
    select d.id, d.org_id from devices d where d.id = any(${ids}::uuid[]) and d.org_id = ${orgId}::uuid
    on conflict (device_id) do nothing`.execute(tx);
  await sql`
    update device_states s
    set desired = (s.desired || i.patch) - coalesce((select array_agg(e.key) from jsonb_each(i.patch) e where e.value = 'null'::jsonb), '{}'::text[]),
        version = s.version + 1, desired_at = ${now}, updated_at = ${now}
    from unnest(${ids}::uuid[], ${patches}::jsonb[]) as i(device_id, patch)
    where s.device_id = i.device_id and s.org_id = ${orgId}::uuid`.execute(tx);
  const deviceIds = await queueSetState(
    tx,
    orgId,
    ids,
    items.map((i) => i.rampSeconds),
    actor,
    { ...o, now },
  );
  return { queued: deviceIds.length, deviceIds };
}

/**
 * The two statements after a desired-state change of many devices: the superseded `setState`
 * commands not yet handed to the broker are CANCELED; one `setState` command `{desired: <delta>,
 * version, rampSeconds?}` is queued per device whose reported state differs, marked for the workers'
 * dispatch sweep (`pending_dispatch`). Returns the devices that got one.
 */
async function queueSetState(
  tx: Tx,
  orgId: string,
  ids: readonly string[],
  ramps: readonly (number | null)[],
  actor: string,
  o: DesiredLevelsOptions & { now: Date },
): Promise<string[]> {
  await cancelSupersededSetState(orgId, ids, o.now, actor).execute(tx);
  const { rows } = await sql<{ device_id: string }>`
    with queued as (
      ${insertSetState(actor, o)}
      from unnest(${ids}::uuid[], ${ramps}::int[]) as i(device_id, ramp)
      join device_states s on s.device_id = i.device_id and s.org_id = ${orgId}::uuid
      where not s.in_sync
      returning device_id
    )
    update device_states set pending_dispatch = true where device_id in (select device_id from queued) returning device_id`.execute(tx);
  return rows.map((r) => r.device_id);
}

/** A command that changed status, as the dispatcher and the subgraph report it (events, fleet-job progress). */
export interface CommandChange {
  id: string;
  orgId: string;
  deviceId: string;
  status: string;
  jobId: string | null;
}

/**
 * Publishes `commandUpdated` for committed changes, only for organizations whose channel has a
 * subscriber (one `PUBSUB NUMSUB`, then one query for the devices' sites). Never throws: the change
 * is committed; a lost event is logged by the caller's `onError`.
 */
export async function publishCommandChanges(
  db: import('./db.js').Db,
  redis: import('./redis.js').Redis,
  prefix: string,
  changes: readonly CommandChange[],
  onError: (err: unknown) => void,
  now = Date.now(),
): Promise<void> {
  if (!changes.length) return;
  try {
    const orgs = [...new Set(changes.map((c) => c.orgId))];
    const numsub = (await redis.pubsub('NUMSUB', ...orgs.map((o) => eventsChannel(prefix, o)))) as (string | number)[];
    const listened = new Set(orgs.filter((_, i) => Number(numsub[2 * i + 1]) > 0));
    const wanted = changes.filter((c) => listened.has(c.orgId));
    if (!wanted.length) return;
    const { rows } = await sql<{ id: string; site_id: string | null; path: string | null }>`
      select d.id, d.site_id, s.path::text as path from devices d left join sites s on s.id = d.site_id
      where d.id = any(${[...new Set(wanted.map((c) => c.deviceId))]}::uuid[])`.execute(db);
    const site = new Map(rows.map((r) => [r.id, r]));
    const p = redis.pipeline();
    for (const c of wanted) {
      const s = site.get(c.deviceId);
      p.publish(eventsChannel(prefix, c.orgId), commandUpdatedEvent({ ...c, siteId: s?.site_id ?? null, sitePath: s?.path ?? null }, now));
    }
    await p.exec();
  } catch (err) {
    onError(err);
  }
}
