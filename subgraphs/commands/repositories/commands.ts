import { type RawBuilder, sql } from 'kysely';
import { actorOf, audit } from '../../../lib/audit.js';
import {
  type CommandChange,
  type CommandSpec,
  checkCommand,
  deltaOf,
  historyEntry,
  mergePatch,
  storedSpecs,
} from '../../../lib/commands.js';
import { SET_STATE_COMMAND } from '../../../lib/contracts/commands.js';
import { type Db, isUniqueViolation, type Tx, tenantReadRows, withTenant } from '../../../lib/db.js';
import { BadInputError, ConflictError, NotFoundError } from '../../../lib/errors.js';
import type { Identity } from '../../../lib/identity.js';
import type { CommandCursor, CommandFilterInput, SendCommandInput } from '../validation.js';

/** One `commands` row as the resolvers read it. */
export interface CommandRow {
  id: string;
  org_id: string;
  device_id: string;
  job_id: string | null;
  name: string;
  params: Record<string, unknown>;
  status: string;
  attempts: number;
  timeout_s: number;
  idempotency_key: string | null;
  created_by: string;
  created_at: Date;
  expires_at: Date;
  sent_at: Date | null;
  delivered_at: Date | null;
  completed_at: Date | null;
  result: unknown;
  error: string | null;
  history: { status: string; at: string; evidence: unknown }[];
  /** `created_at` as text at full precision (the page cursor) */
  created_at_text: string;
}

export interface DeviceStateRow {
  device_id: string;
  desired: Record<string, unknown>;
  reported: Record<string, unknown>;
  version: number;
  in_sync: boolean;
  desired_at: Date | null;
  reported_at: Date | null;
  updated_at: Date | null;
}

export interface ProfileSpecsRow {
  id: string;
  commands: CommandSpec[];
}

/** What a mutation did: the row, and the change to announce after commit (null: nothing changed). */
export interface CommandWrite {
  row: CommandRow;
  change: CommandChange | null;
}

export interface CommandDefaults {
  /** `COMMANDS_DEFAULT_TIMEOUT_S` */
  timeoutS: number;
  /** `COMMANDS_DEFAULT_EXPIRY_S` */
  expiryS: number;
  /** how far ahead `expiresAt` may be (ms) */
  maxExpiryMs: number;
}

const COMMAND = sql.raw(
  [
    'id',
    'org_id',
    'device_id',
    'job_id',
    'name',
    'params',
    'status',
    'attempts',
    'timeout_s',
    'idempotency_key',
    'created_by',
    'created_at',
    'expires_at',
    'sent_at',
    'delivered_at',
    'completed_at',
    'result',
    'error',
    'history',
  ]
    .map((c) => `c.${c}`)
    .join(', ') + ', c.created_at::text as created_at_text',
);

const STATE = sql.raw('s.device_id, s.desired, s.reported, s.version, s.in_sync, s.desired_at, s.reported_at, s.updated_at');

/** Devices of a site and its whole subtree (a site of another organization matches nothing). */
const siteSubtree = (orgId: string, siteId: string) =>
  sql`select d.id from devices d join sites s on s.id = d.site_id
      where d.org_id = ${orgId} and s.org_id = ${orgId}
        and s.path <@ (select path from sites where id = ${siteId} and org_id = ${orgId})`;

const change = (r: CommandRow): CommandChange => ({ id: r.id, orgId: r.org_id, deviceId: r.device_id, status: r.status, jobId: r.job_id });

/**
 * SQL of commands, device states and profiles' command declarations. Reads go through
 * `tenantReadRows` (one round trip, row-level security); writes through `withTenant`, each with its
 * audit row in the same transaction.
 */
export class CommandsRepository {
  constructor(private readonly db: Db) {}

  private read<T>(orgId: string, q: RawBuilder<T>): Promise<T[]> {
    return tenantReadRows<T>(this.db, orgId, q.compile(this.db));
  }

  async byIds(orgId: string, ids: readonly string[]): Promise<CommandRow[]> {
    return this.read(orgId, sql<CommandRow>`select ${COMMAND} from commands c where c.org_id = ${orgId} and c.id = any(${ids}::uuid[])`);
  }

  /** A page of commands, newest first. */
  async list(orgId: string, o: { limit: number; after?: CommandCursor | undefined; filter: CommandFilterInput }): Promise<CommandRow[]> {
    const f = o.filter;
    const where = [sql`c.org_id = ${orgId}`];
    if (f.deviceIds) where.push(sql`c.device_id = any(${f.deviceIds}::uuid[])`);
    if (f.siteId) where.push(sql`c.device_id in (${siteSubtree(orgId, f.siteId)})`);
    if (f.status?.length) where.push(sql`c.status = any(${f.status}::text[])`);
    if (f.jobId) where.push(sql`c.job_id = ${f.jobId}`);
    if (f.from) where.push(sql`c.created_at >= ${f.from}`);
    if (f.to) where.push(sql`c.created_at < ${f.to}`);
    if (o.after) where.push(sql`(c.created_at, c.id) < (${o.after[0]}::timestamptz, ${o.after[1]}::uuid)`);
    return this.read(
      orgId,
      sql<CommandRow>`select ${COMMAND} from commands c where ${sql.join(where, sql` and `)}
        order by c.created_at desc, c.id desc limit ${o.limit}`,
    );
  }

  /** The newest `limit` commands of each device (optionally of some statuses, after a cursor). */
  async ofDevices(
    orgId: string,
    deviceIds: readonly string[],
    o: { limit: number; statuses: readonly string[] | null; after?: CommandCursor | undefined },
  ): Promise<CommandRow[]> {
    const where = [sql`c.org_id = ${orgId}`, sql`c.device_id = d.id`];
    if (o.statuses?.length) where.push(sql`c.status = any(${o.statuses}::text[])`);
    if (o.after) where.push(sql`(c.created_at, c.id) < (${o.after[0]}::timestamptz, ${o.after[1]}::uuid)`);
    return this.read(
      orgId,
      sql<CommandRow>`select x.* from unnest(${deviceIds}::uuid[]) as d(id) cross join lateral (
        select ${COMMAND} from commands c where ${sql.join(where, sql` and `)}
        order by c.created_at desc, c.id desc limit ${o.limit}) x`,
    );
  }

  async states(orgId: string, deviceIds: readonly string[]): Promise<DeviceStateRow[]> {
    return this.read(
      orgId,
      sql<DeviceStateRow>`select ${STATE} from device_states s where s.org_id = ${orgId} and s.device_id = any(${deviceIds}::uuid[])`,
    );
  }

  /** Devices whose reported state differs from the desired one, optionally of a site subtree, by device id. */
  async drift(orgId: string, o: { siteId: string | null; limit: number; after: string | null }): Promise<DeviceStateRow[]> {
    const where = [sql`s.org_id = ${orgId}`, sql`not s.in_sync`];
    if (o.siteId) where.push(sql`s.device_id in (${siteSubtree(orgId, o.siteId)})`);
    if (o.after) where.push(sql`s.device_id > ${o.after}::uuid`);
    return this.read(
      orgId,
      sql<DeviceStateRow>`select ${STATE} from device_states s where ${sql.join(where, sql` and `)} order by s.device_id limit ${o.limit}`,
    );
  }

  async profileSpecs(orgId: string, profileIds: readonly string[]): Promise<ProfileSpecsRow[]> {
    const rows = await this.read(
      orgId,
      sql<{
        id: string;
        commands: unknown;
      }>`select id, commands from device_profiles where org_id = ${orgId} and id = any(${profileIds}::uuid[])`,
    );
    return rows.map((r) => ({ id: r.id, commands: storedSpecs(r.commands) }));
  }

  /**
   * Queues a command: the device must be this organization's, not decommissioned, and its profile
   * must declare `name` with params matching its schema. A known idempotency key returns its command
   * (CONFLICT when it named another device or command). Marks the device for dispatch.
   */
  async send(identity: Identity, input: SendCommandInput, d: CommandDefaults, now = new Date()): Promise<CommandWrite> {
    const orgId = identity.orgId;
    const actor = actorOf(identity);
    const existing = async (tx: Tx): Promise<CommandWrite | null> => {
      if (!input.idempotencyKey) return null;
      const { rows } = await sql<CommandRow>`select ${COMMAND} from commands c
        where c.org_id = ${orgId} and c.idempotency_key = ${input.idempotencyKey}`.execute(tx);
      const row = rows[0];
      if (!row) return null;
      if (row.device_id !== input.deviceId || row.name !== input.name)
        throw new ConflictError(`idempotency key ${input.idempotencyKey} was used for another command (${row.id})`);
      return { row, change: null };
    };
    try {
      return await withTenant(this.db, orgId, async (tx) => {
        const found = await existing(tx);
        if (found) return found;
        const { rows: devs } = await sql<{ id: string; decommissioned_at: Date | null; commands: unknown }>`
          select d.id, d.decommissioned_at, p.commands from devices d left join device_profiles p on p.id = d.profile_id
          where d.id = ${input.deviceId} and d.org_id = ${orgId}`.execute(tx);
        const dev = devs[0];
        if (!dev) throw new NotFoundError('device');
        if (dev.decommissioned_at) throw new BadInputError('input.deviceId: the device is decommissioned', { field: 'input.deviceId' });
        const spec = checkCommand(storedSpecs(dev.commands), input.name, input.params ?? {}, 'input');
        const expires = input.expiresAt ?? new Date(now.getTime() + d.expiryS * 1000);
        if (expires.getTime() <= now.getTime())
          throw new BadInputError('input.expiresAt: must be in the future', { field: 'input.expiresAt' });
        if (expires.getTime() > now.getTime() + d.maxExpiryMs)
          throw new BadInputError('input.expiresAt: at most 30 days ahead', { field: 'input.expiresAt' });
        const history = JSON.stringify([historyEntry('QUEUED', now, { by: actor })]);
        const { rows } = await sql<CommandRow>`
          insert into commands as c (org_id, device_id, name, params, timeout_s, idempotency_key, created_by, created_at, updated_at,
                                     expires_at, due_at, history)
          values (${orgId}, ${input.deviceId}, ${spec.name}, ${JSON.stringify(input.params ?? {})}::jsonb,
                  ${input.timeoutSeconds ?? spec.timeoutSeconds ?? d.timeoutS}, ${input.idempotencyKey ?? null}, ${actor}, ${now}, ${now},
                  ${expires}, ${expires}, ${history}::jsonb)
          returning ${COMMAND}`.execute(tx);
        const row = rows[0] as CommandRow;
        await sql`insert into device_states (device_id, org_id, pending_dispatch) values (${input.deviceId}, ${orgId}, true)
          on conflict (device_id) do update set pending_dispatch = true`.execute(tx);
        await audit(tx, orgId, actor, 'command.send', 'command', row.id, null, {
          deviceId: row.device_id,
          name: row.name,
          params: row.params,
          expiresAt: row.expires_at,
          idempotencyKey: row.idempotency_key,
        });
        return { row, change: change(row) };
      });
    } catch (e) {
      // two retries of one key at once: the loser returns the winner's command
      if (isUniqueViolation(e) && input.idempotencyKey) {
        const again = await withTenant(this.db, orgId, existing);
        if (again) return again;
      }
      throw e;
    }
  }

  /** Cancels a command that has not ended (repeating it on an ended one changes nothing). */
  async cancel(identity: Identity, id: string, now = new Date()): Promise<CommandWrite> {
    const orgId = identity.orgId;
    const actor = actorOf(identity);
    return withTenant(this.db, orgId, async (tx) => {
      const entry = JSON.stringify([historyEntry('CANCELED', now, { by: actor })]);
      const { rows } = await sql<CommandRow & { before: string }>`
        update commands c set status = 'CANCELED', completed_at = ${now}, updated_at = ${now}, due_at = null,
          error = 'canceled by ' || ${actor}, history = c.history || ${entry}::jsonb
        from commands b where b.id = c.id and c.id = ${id} and c.org_id = ${orgId} and c.status in ('QUEUED', 'SENT', 'DELIVERED')
        returning ${COMMAND}, b.status as before`.execute(tx);
      const row = rows[0];
      if (!row) {
        const [cur] = (await sql<CommandRow>`select ${COMMAND} from commands c where c.id = ${id} and c.org_id = ${orgId}`.execute(tx))
          .rows;
        if (!cur) throw new NotFoundError('command');
        return { row: cur, change: null };
      }
      if (row.before !== 'QUEUED')
        await sql`update device_states set pending_dispatch = true where device_id = ${row.device_id}`.execute(tx);
      await audit(tx, orgId, actor, 'command.cancel', 'command', row.id, { status: row.before }, { status: 'CANCELED' });
      const { before: _b, ...clean } = row;
      return { row: clean, change: change(clean) };
    });
  }

  /**
   * Merges `patch` into the device's desired state when its version is `expectedVersion` (CONFLICT
   * otherwise), supersedes a not-yet-sent `setState` command, and queues one with the delta.
   */
  async setDesiredState(
    identity: Identity,
    deviceId: string,
    patch: Record<string, unknown>,
    expectedVersion: number,
    d: CommandDefaults,
    now = new Date(),
  ): Promise<{ state: DeviceStateRow; change: CommandChange | null }> {
    const orgId = identity.orgId;
    const actor = actorOf(identity);
    return withTenant(this.db, orgId, async (tx) => {
      const { rows: devs } = await sql<{ id: string }>`select id from devices where id = ${deviceId} and org_id = ${orgId}`.execute(tx);
      if (!devs[0]) throw new NotFoundError('device');
      await sql`insert into device_states (device_id, org_id) values (${deviceId}, ${orgId}) on conflict (device_id) do nothing`.execute(
        tx,
      );
      const { rows } = await sql<DeviceStateRow>`select ${STATE} from device_states s where s.device_id = ${deviceId} for update`.execute(
        tx,
      );
      const cur = rows[0] as DeviceStateRow;
      if (cur.version !== expectedVersion)
        throw new ConflictError(`expectedVersion ${expectedVersion} is stale: the desired state is at version ${cur.version}`);
      const desired = mergePatch(cur.desired, patch);
      const { rows: upd } = await sql<DeviceStateRow>`
        update device_states s set desired = ${JSON.stringify(desired)}::jsonb, version = s.version + 1, desired_at = ${now}, updated_at = ${now}
        where s.device_id = ${deviceId} returning ${STATE}`.execute(tx);
      const state = upd[0] as DeviceStateRow;
      const superseded = JSON.stringify([
        historyEntry('CANCELED', now, { supersededBy: `desired state version ${state.version}`, by: actor }),
      ]);
      await sql`update commands set status = 'CANCELED', completed_at = ${now}, updated_at = ${now}, due_at = null,
          error = 'superseded by a newer desired state', history = history || ${superseded}::jsonb
        where device_id = ${deviceId} and name = ${SET_STATE_COMMAND} and status = 'QUEUED' and lease_until is null`.execute(tx);
      const delta = deltaOf(state.desired, state.reported);
      let queued: CommandRow | undefined;
      if (Object.keys(delta).length) {
        const expires = new Date(now.getTime() + d.expiryS * 1000);
        const history = JSON.stringify([historyEntry('QUEUED', now, { by: actor, source: `desired state version ${state.version}` })]);
        ({
          rows: [queued],
        } = await sql<CommandRow>`
          insert into commands as c (org_id, device_id, name, params, timeout_s, created_by, created_at, updated_at, expires_at, due_at, history)
          values (${orgId}, ${deviceId}, ${SET_STATE_COMMAND}, ${JSON.stringify({ desired: delta, version: state.version })}::jsonb,
                  ${d.timeoutS}, ${actor}, ${now}, ${now}, ${expires}, ${expires}, ${history}::jsonb)
          returning ${COMMAND}`.execute(tx));
        await sql`update device_states set pending_dispatch = true where device_id = ${deviceId}`.execute(tx);
      }
      await audit(
        tx,
        orgId,
        actor,
        'device.desired-state',
        'device',
        deviceId,
        { desired: cur.desired, version: cur.version },
        {
          desired: state.desired,
          version: state.version,
          commandId: queued?.id ?? null,
        },
      );
      return { state, change: queued ? change(queued) : null };
    });
  }

  /** Replaces a profile's command declarations (already checked). */
  async setProfileCommands(identity: Identity, profileId: string, specs: readonly CommandSpec[]): Promise<ProfileSpecsRow> {
    const orgId = identity.orgId;
    return withTenant(this.db, orgId, async (tx) => {
      const { rows } = await sql<{ id: string; before: unknown }>`
        update device_profiles p set commands = ${JSON.stringify(specs)}::jsonb
        from device_profiles b where b.id = p.id and p.id = ${profileId} and p.org_id = ${orgId}
        returning p.id, b.commands as before`.execute(tx);
      const row = rows[0];
      if (!row) throw new NotFoundError('device profile');
      await audit(tx, orgId, actorOf(identity), 'profile.commands', 'device_profile', profileId, row.before, specs);
      return { id: row.id, commands: [...specs] };
    });
  }
}
