import { sql } from 'kysely';
import { handoffKeys, openHandoff } from '../../lib/contracts/broker-handoff.js';
import { ContractError } from '../../lib/contracts/contract.js';
import type { DeviceChange } from '../../lib/contracts/device-changes.js';
import type { Db } from '../../lib/db.js';
import type { Logger } from '../../lib/logger.js';
import { counter, gauge } from '../../lib/metrics.js';
import { DYNSEC_DEFAULT_ACCESS, DYNSEC_ROLES, type DynsecAcl, dynsecRoles } from '../../lib/mqtt-policy.js';
import type { DynsecClient, DynsecResponse } from './dynsec-client.js';
import {
  type BrokerClient,
  defaultBatch,
  isManaged,
  type PlannedCommand,
  planClients,
  planRoles,
  type WantedClient,
} from './dynsec-plan.js';

export interface DynsecSyncOptions {
  db: Db;
  client: DynsecClient;
  /** ingest's shared-subscription group (its role's subscriptions) */
  group: string;
  rulrSecret: string;
  /** RULR_SECRET_PREVIOUS: hand-offs sealed before RULR_SECRET was rotated still open */
  previousSecrets?: readonly string[] | undefined;
  /** service accounts with their configured passwords (an account without one is not created) */
  services: { username: string; password: string | undefined; role: string }[];
  /** commands per control message @default {@link defaultBatch} of the broker's version (500 on 2.1+, 100 on 2.0) */
  batch?: number | undefined;
  logger: Logger;
}

const commandsTotal = counter('rulr_dynsec_commands_total', 'Dynamic-security commands the sync sent, by command and outcome', [
  'command',
  'outcome',
]);
const unsyncableGauge = gauge(
  'rulr_dynsec_unsyncable_credentials',
  'Valid device credentials missing at the broker whose secret the platform no longer holds (rotate them)',
);

interface CredentialState {
  id: string;
  username: string;
  device_id: string;
  broker_handoff: Buffer | null;
  is_gateway: boolean | null;
  valid: boolean;
}

/**
 * Keeps Mosquitto's dynamic security what the platform says (lib/mqtt-policy.ts): the policy's
 * roles and default access, a client per valid device secret (pinned to the device id, in the
 * device or concentrator role), the service accounts; and nothing else under the device-credential
 * usernames. Deleting a client kicks its connection, so a revoked, expired or decommissioned
 * device is off the broker as soon as the sync hears of it.
 *
 * Driven by device-change notices (`syncDevices`), a timer at the next end of a grace period, and
 * `reconcile()` at start and every DYNSEC_RECONCILE_S for what a lost notice missed. One change at
 * a time; commands go in batches of `batch` per control message. Mosquitto 2.0 still rewrites its
 * whole file once per command, so the sync sends only the commands a difference needs.
 */
export class DynsecSync {
  private readonly keys: Buffer[];
  private chain: Promise<unknown> = Promise.resolve();
  private expiryTimer?: NodeJS.Timeout;
  private lastExpirySweep = new Date();
  private closed = false;

  /** commands per control message */
  readonly batch: number;

  constructor(private readonly o: DynsecSyncOptions) {
    this.keys = handoffKeys([o.rulrSecret, ...(o.previousSecrets ?? [])]);
    this.batch = o.batch ?? defaultBatch(o.client.brokerVersion);
  }

  /** Runs `fn` after every sync step queued before it. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn, fn);
    this.chain = p.catch((e) => this.o.logger.warn({ err: (e as Error).message }, 'dynsec: sync step failed (next reconcile retries)'));
    return p;
  }

  /** Everything: default access, roles, service accounts, every device client. */
  reconcile(first = false): Promise<{ created: number; deleted: number; unsyncable: number }> {
    return this.serial(async () => {
      await this.defaultsAndRoles();
      const present = await this.listClients();
      const devices = await this.credentials();
      const services = this.o.services
        .filter((s) => s.password !== undefined)
        .map((s): WantedClient => ({ username: s.username, role: s.role, ...(s.password ? { password: s.password } : {}) }));
      const serviceScope = new Set(services.map((s) => s.username));
      const svc = planClients(services, present, serviceScope, first);
      const dev = planClients(devices.wanted, present, 'all');
      await this.run([...svc.commands, ...dev.commands]);
      await this.clearHandoffs(dev.taken);
      await this.o.db
        .updateTable('device_credentials')
        .set({ broker_handoff: null })
        .where('broker_handoff', 'is not', null)
        .where((eb) => eb.or([eb('revoked_at', 'is not', null), eb('expires_at', '<=', sql<Date>`now()`)]))
        .execute();
      unsyncableGauge.set(dev.unsyncable.length);
      if (dev.unsyncable.length) {
        this.o.logger.warn(
          { count: dev.unsyncable.length, usernames: dev.unsyncable.slice(0, 10).map((u) => u.username) },
          'dynsec: valid credentials missing at the broker whose secret is gone (issued before dynamic security was on, or the broker lost its file): rotate them',
        );
      }
      await this.armExpiry();
      const created = dev.commands.filter((c) => c.cmd.command === 'createClient').length;
      const deleted = dev.commands.filter((c) => c.cmd.command === 'deleteClient').length;
      return { created, deleted, unsyncable: dev.unsyncable.length };
    });
  }

  /** The clients of some devices, after a notice about them. */
  syncDevices(deviceIds: string[]): Promise<void> {
    return this.serial(async () => {
      if (!deviceIds.length) return;
      const { wanted, all } = await this.credentials(deviceIds);
      const usernames = new Set(all.map((c) => c.username));
      const present = await this.getClients([...usernames]);
      const plan = planClients(wanted, present, usernames);
      await this.run(plan.commands);
      await this.clearHandoffs(plan.taken);
      await this.armExpiry();
    });
  }

  /** What a device-change notice means here. */
  async apply(change: DeviceChange): Promise<void> {
    if (change.kind === 'profile-updated') {
      const rows = await this.o.db
        .selectFrom('device_credentials as c')
        .innerJoin('devices as d', 'd.id', 'c.device_id')
        .select('c.device_id')
        .distinct()
        .where('d.profile_id', '=', change.profileId)
        .where('c.kind', '=', 'secret')
        .where('c.revoked_at', 'is', null)
        .execute();
      for (let i = 0; i < rows.length; i += 1000) await this.syncDevices(rows.slice(i, i + 1000).map((r) => r.device_id));
      return;
    }
    await this.syncDevices(change.deviceIds);
  }

  private async defaultsAndRoles(): Promise<void> {
    const [defaults, ...roles] = await this.o.client.send([
      { command: 'getDefaultACLAccess' },
      ...Object.values(DYNSEC_ROLES).map((rolename) => ({ command: 'getRole', rolename })),
    ]);
    const wantDefaults = DYNSEC_DEFAULT_ACCESS.map((a) => ({ acltype: a.acltype, allow: a.allow }));
    const have = (defaults?.data?.acls ?? []) as { acltype: string; allow: boolean }[];
    const differs = wantDefaults.some((w) => have.find((h) => h.acltype === w.acltype)?.allow !== w.allow);
    const present = new Map<string, DynsecAcl[] | null>(
      Object.values(DYNSEC_ROLES).map((name, i) => [
        name,
        ((roles[i]?.data?.role as { acls?: DynsecAcl[] } | undefined)?.acls ?? null) as DynsecAcl[] | null,
      ]),
    );
    const commands = planRoles(dynsecRoles(this.o.group), present).map((cmd): PlannedCommand => ({ cmd }));
    if (differs) commands.unshift({ cmd: { command: 'setDefaultACLAccess', acls: wantDefaults } });
    await this.run(commands);
  }

  /** Every client at the broker, a page at a time. */
  private async listClients(): Promise<Map<string, BrokerClient>> {
    const out = new Map<string, BrokerClient>();
    const page = 10_000;
    for (let offset = 0; ; offset += page) {
      const [r] = await this.o.client.send([{ command: 'listClients', verbose: true, count: page, offset }]);
      if (r?.error) throw new Error(`listClients: ${r.error}`);
      const clients = (r?.data?.clients ?? []) as Record<string, unknown>[];
      for (const c of clients) {
        const b = toBrokerClient(c);
        if (b) out.set(b.username, b);
      }
      if (clients.length < page) return out;
    }
  }

  private async getClients(usernames: string[]): Promise<Map<string, BrokerClient>> {
    const out = new Map<string, BrokerClient>();
    const batch = this.batch;
    for (let i = 0; i < usernames.length; i += batch) {
      const r = await this.o.client.send(usernames.slice(i, i + batch).map((username) => ({ command: 'getClient', username })));
      for (const x of r) {
        const b = toBrokerClient(x.data?.client);
        if (b) out.set(b.username, b);
      }
    }
    return out;
  }

  /** The device credentials the broker should have (of some devices, or all), with their hand-offs opened. */
  private async credentials(deviceIds?: string[]): Promise<{ wanted: WantedClient[]; all: CredentialState[] }> {
    let q = this.o.db
      .selectFrom('device_credentials as c')
      .innerJoin('devices as d', 'd.id', 'c.device_id')
      .leftJoin('device_profiles as p', 'p.id', 'd.profile_id')
      .select([
        'c.id',
        'c.username',
        'c.device_id',
        'c.broker_handoff',
        'p.is_gateway',
        sql<boolean>`c.revoked_at is null and (c.expires_at is null or c.expires_at > now()) and d.decommissioned_at is null`.as('valid'),
      ])
      .where('c.kind', '=', 'secret');
    if (deviceIds) q = q.where('c.device_id', 'in', deviceIds);
    else q = q.where('c.revoked_at', 'is', null);
    const all = (await q.execute()) as CredentialState[];
    const wanted: WantedClient[] = [];
    for (const c of all) {
      if (!c.valid || !isManaged(c.username)) continue;
      let password: string | undefined;
      if (c.broker_handoff) {
        try {
          password = openHandoff(this.keys, c.username, c.broker_handoff);
        } catch (e) {
          if (!(e instanceof ContractError)) throw e;
          this.o.logger.warn({ username: c.username, reason: e.reason }, 'dynsec: a hand-off does not open (another RULR_SECRET?)');
        }
      }
      wanted.push({
        username: c.username,
        clientid: c.device_id,
        role: c.is_gateway ? DYNSEC_ROLES.gateway : DYNSEC_ROLES.device,
        credentialId: c.id,
        ...(password !== undefined ? { password } : {}),
      });
    }
    return { wanted, all };
  }

  /** Sends planned commands in batches; clears the hand-off of each client created. */
  private async run(planned: PlannedCommand[]): Promise<void> {
    const batch = this.batch;
    for (let i = 0; i < planned.length && !this.closed; i += batch) {
      const part = planned.slice(i, i + batch);
      const responses = await this.o.client.send(part.map((p) => p.cmd));
      const taken: string[] = [];
      part.forEach((p, j) => {
        const r = responses[j] as DynsecResponse;
        const ok = !r.error || (p.harmless ?? []).includes(r.error);
        commandsTotal.inc({ command: p.cmd.command, outcome: ok ? 'ok' : 'error' });
        if (!ok) this.o.logger.warn({ command: p.cmd.command, username: p.cmd.username, error: r.error }, 'dynsec: command refused');
        if (ok && p.takes) taken.push(p.takes);
      });
      await this.clearHandoffs(taken);
    }
  }

  private async clearHandoffs(ids: string[]): Promise<void> {
    for (let i = 0; i < ids.length; i += 1000) {
      await this.o.db
        .updateTable('device_credentials')
        .set({ broker_handoff: null })
        .where('id', 'in', ids.slice(i, i + 1000))
        .execute();
    }
  }

  /** Wakes up when the next grace period ends, to delete the expired secrets' clients. */
  private async armExpiry(): Promise<void> {
    clearTimeout(this.expiryTimer);
    if (this.closed) return;
    const next = await this.o.db
      .selectFrom('device_credentials')
      .select((eb) => eb.fn.min('expires_at').as('at'))
      .where('kind', '=', 'secret')
      .where('revoked_at', 'is', null)
      .where('expires_at', '>', sql<Date>`now()`)
      .executeTakeFirst();
    const at = next?.at ? new Date(next.at as unknown as string).getTime() : undefined;
    if (at === undefined) return;
    this.expiryTimer = setTimeout(() => void this.sweepExpired(), Math.max(0, Math.min(at - Date.now() + 50, 2 ** 31 - 1)));
    this.expiryTimer.unref();
  }

  private async sweepExpired(): Promise<void> {
    const since = this.lastExpirySweep;
    this.lastExpirySweep = new Date();
    const rows = await this.o.db
      .selectFrom('device_credentials')
      .select('device_id')
      .distinct()
      .where('kind', '=', 'secret')
      .where('expires_at', '<=', sql<Date>`now()`)
      .where('expires_at', '>', new Date(since.getTime() - 60_000))
      .execute()
      .catch(() => []);
    if (rows.length) await this.syncDevices(rows.map((r) => r.device_id)).catch(() => undefined);
    else await this.armExpiry().catch(() => undefined);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.expiryTimer);
    await this.chain.catch(() => undefined);
  }
}

function toBrokerClient(c: unknown): BrokerClient | undefined {
  if (typeof c !== 'object' || c === null) return undefined;
  const r = c as Record<string, unknown>;
  if (typeof r.username !== 'string') return undefined;
  const roles = Array.isArray(r.roles)
    ? r.roles.map((x) => (x as { rolename?: unknown }).rolename).filter((x): x is string => typeof x === 'string')
    : [];
  return {
    username: r.username,
    ...(typeof r.clientid === 'string' ? { clientid: r.clientid } : {}),
    roles,
    disabled: r.disabled === true,
  };
}
