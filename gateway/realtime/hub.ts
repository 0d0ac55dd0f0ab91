import type { DocumentNode, ExecutionResult, GraphQLFormattedError, GraphQLSchema } from 'graphql';
import { eventsChannel, parseEvents, type RealtimeEvent } from '../../lib/contracts/events.js';
import type { Identity } from '../../lib/identity.js';
import type { Logger } from '../../lib/logger.js';
import { counter, histogram } from '../../lib/metrics.js';
import type { Redis } from '../../lib/redis.js';
import { eventKeys, matches, subscriberKeys } from './events.js';
import { type FollowUpErrors, followUpErrors, indexFollowUp, project, type SubscriptionPlan } from './selection.js';

/** Where a subscriber's frames go (one WebSocket connection). */
export interface FrameSink {
  /** `payload`: the JSON of the `next` message's payload, UTF-8, shared by every subscriber of the group */
  next(id: string, payload: Buffer, coalesceKey: string | undefined): void;
}

export interface Subscriber {
  id: string;
  sink: FrameSink;
  identity: Identity;
  document: DocumentNode;
  variables: Record<string, unknown>;
  plan: SubscriptionPlan;
  /** the last event that visited this subscriber during fan-out */
  mark?: number;
}

let visitMark = 0;

/** A group's follow-up results: entities and errors by the response key of the event field they fill. */
interface FollowedUp {
  entities: Map<string, Map<string, unknown>>;
  errors: Map<string, FollowUpErrors>;
}

/** A batch grouped by subscriber group, with each group's follow-up results. */
type Prepared = ({ g: Group; events: RealtimeEvent[] } & FollowedUp)[];

/** Subscribers that share a payload: same organisation, permissions and selection. */
interface Group {
  key: string;
  orgId: string;
  field: string;
  identity: Identity;
  first: Subscriber;
  subs: Set<Subscriber>;
  byKey: Map<string, Set<Subscriber>>;
  unindexed: Set<Subscriber>;
}

export type FollowUpExecutor = (document: DocumentNode, variables: Record<string, unknown>, identity: Identity) => Promise<ExecutionResult>;

const redisReconnects = counter(
  'rulr_realtime_redis_reconnects_total',
  'Times the real-time Redis subscription dropped (events published meanwhile are missed)',
);
const eventsReceived = counter('rulr_realtime_events_total', 'Real-time events received from Redis', ['field']);
const eventsInvalid = counter('rulr_realtime_events_invalid_total', 'Malformed real-time events dropped');
const followUps = counter('rulr_realtime_followups_total', 'Follow-up queries for entity fields of events');
const deliveries = counter('rulr_realtime_deliveries_total', 'Event payloads handed to subscribers');
const backlogCoalesced = counter('rulr_realtime_backlog_coalesced_total', 'Telemetry events merged because the gateway itself fell behind');
/** Most events fanned out before yielding to I/O. */
const SLICE = 256;
/** Batches whose follow-up queries may be in flight at once (delivered in order). */
const PIPELINE = 4;
/** Pending events above which queued telemetry is merged per device. */
const BACKLOG_COALESCE = 5000;
const batchSeconds = histogram(
  'rulr_realtime_batch_seconds',
  'Time to fan out one batch of events',
  [],
  [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
);

/**
 * Fans events from Redis out to this process's subscribers: one Redis subscription per
 * organisation channel however many clients listen, one follow-up query per subscriber group per
 * batch, one serialisation per group per event.
 */
export class RealtimeHub {
  private readonly orgs = new Map<string, Map<string, Map<string, Group>>>();
  private readonly orgRefs = new Map<string, number>();
  private queue: RealtimeEvent[] = [];
  private readonly subscribing = new Set<Promise<unknown>>();
  private running = false;

  constructor(
    private readonly redisSub: Redis,
    private readonly prefix: string,
    private readonly schema: () => GraphQLSchema,
    private readonly execute: FollowUpExecutor,
    private readonly logger: Logger,
  ) {
    redisSub.on('message', (_channel: string, message: string) => this.receive(message));
    // ioredis resubscribes by itself after a reconnect; events published in between are lost, so say so.
    redisSub.on('reconnecting', () => {
      redisReconnects.inc();
      logger.warn('real-time Redis subscription lost; reconnecting (events published meanwhile are missed)');
    });
  }

  add(sub: Subscriber): void {
    const orgId = sub.identity.orgId;
    const key = JSON.stringify([orgId, sub.identity.role, [...sub.identity.scopes].sort(), sub.plan.selectionKey]);
    let fields = this.orgs.get(orgId);
    if (!fields) {
      fields = new Map();
      this.orgs.set(orgId, fields);
    }
    let groups = fields.get(sub.plan.rootFieldName);
    if (!groups) {
      groups = new Map();
      fields.set(sub.plan.rootFieldName, groups);
    }
    let g = groups.get(key);
    if (!g) {
      g = {
        key,
        orgId,
        field: sub.plan.rootFieldName,
        identity: sub.identity,
        first: sub,
        subs: new Set(),
        byKey: new Map(),
        unindexed: new Set(),
      };
      groups.set(key, g);
    }
    g.subs.add(sub);
    const keys = subscriberKeys(sub.plan.args);
    if (!keys) g.unindexed.add(sub);
    else
      for (const k of keys) {
        let s = g.byKey.get(k);
        if (!s) {
          s = new Set();
          g.byKey.set(k, s);
        }
        s.add(sub);
      }
    const refs = (this.orgRefs.get(orgId) ?? 0) + 1;
    this.orgRefs.set(orgId, refs);
    if (refs === 1) {
      // SUBSCRIBE only once the connection is ready: sent earlier, it races ioredis's own
      // connect-time commands (CLIENT SETINFO, INFO) and the connection later drops.
      const p = this.whenReady()
        .then(() => this.redisSub.subscribe(eventsChannel(this.prefix, orgId)))
        .catch((e) => this.logger.error({ err: e }, 'redis subscribe failed'))
        .finally(() => this.subscribing.delete(p));
      this.subscribing.add(p);
    }
  }

  private whenReady(): Promise<void> {
    if (this.redisSub.status === 'ready') return Promise.resolve();
    return new Promise((resolve) => this.redisSub.once('ready', () => resolve()));
  }

  /** Resolves once every Redis SUBSCRIBE issued so far has been confirmed. */
  async settled(): Promise<void> {
    await Promise.all([...this.subscribing]);
  }

  remove(sub: Subscriber): void {
    const orgId = sub.identity.orgId;
    const groups = this.orgs.get(orgId)?.get(sub.plan.rootFieldName);
    if (!groups) return;
    for (const [key, g] of groups) {
      if (!g.subs.delete(sub)) continue;
      g.unindexed.delete(sub);
      for (const [k, s] of g.byKey) {
        s.delete(sub);
        if (s.size === 0) g.byKey.delete(k);
      }
      if (g.subs.size === 0) groups.delete(key);
      else if (g.first === sub) g.first = g.subs.values().next().value as Subscriber;
      const refs = (this.orgRefs.get(orgId) ?? 1) - 1;
      if (refs <= 0) {
        this.orgRefs.delete(orgId);
        this.orgs.delete(orgId);
        this.redisSub.unsubscribe(eventsChannel(this.prefix, orgId)).catch(() => undefined);
      } else this.orgRefs.set(orgId, refs);
      return;
    }
  }

  get subscriberCount(): number {
    let n = 0;
    for (const f of this.orgs.values()) for (const gs of f.values()) for (const g of gs.values()) n += g.subs.size;
    return n;
  }

  private receive(message: string): void {
    const { events, invalid } = parseEvents(message);
    if (invalid) eventsInvalid.inc(invalid);
    if (!events.length) return;
    for (const e of events) {
      eventsReceived.inc({ field: e.field });
      this.queue.push(e);
    }
    if (!this.running) {
      this.running = true;
      setImmediate(() => void this.drain());
    }
  }

  /**
   * Batches are delivered one after another so each subscriber sees events in publish order. A
   * batch is at most `SLICE` events and the loop yields to I/O between batches, so under overload
   * sockets keep draining and Redis keeps being read instead of the event loop blocking for seconds.
   * The follow-up queries of up to `PIPELINE` batches run while earlier ones are fanned out, so
   * their round trips overlap the fan-out instead of adding to it.
   */
  private async drain(): Promise<void> {
    try {
      const inflight: Promise<Prepared>[] = [];
      for (;;) {
        while (inflight.length < PIPELINE && this.queue.length) inflight.push(this.prepare(this.take()));
        const current = inflight.shift();
        if (!current) break;
        const t = process.hrtime.bigint();
        try {
          this.fanOut(await current);
        } catch (e) {
          this.logger.error({ err: e }, 'real-time fan-out failed');
        }
        batchSeconds.observe(Number(process.hrtime.bigint() - t) / 1e9);
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } finally {
      this.running = false;
    }
  }

  /** The next batch (at most `SLICE` events), coalescing the backlog first when the process is behind. */
  private take(): RealtimeEvent[] {
    if (this.queue.length > BACKLOG_COALESCE) this.coalesceBacklog();
    return this.queue.length > SLICE ? this.queue.splice(0, SLICE) : this.queue.splice(0);
  }

  /**
   * The process itself is behind (more than BACKLOG_COALESCE events waiting): keep only the newest
   * event per coalesce key (telemetry of one device), as lagging clients get anyway. Events without
   * a key (status, alarms, commands) are all kept.
   */
  private coalesceBacklog(): void {
    const newest = new Map<string, number>();
    this.queue.forEach((e, i) => {
      if (e.coalesce !== undefined) newest.set(`${e.orgId}\u0000${e.field}\u0000${e.coalesce}`, i);
    });
    const before = this.queue.length;
    this.queue = this.queue.filter((e, i) => e.coalesce === undefined || newest.get(`${e.orgId}\u0000${e.field}\u0000${e.coalesce}`) === i);
    backlogCoalesced.inc(before - this.queue.length);
  }

  /** Groups a batch's events by subscriber group and starts each group's follow-up queries. */
  private async prepare(batch: RealtimeEvent[]): Promise<Prepared> {
    const work = new Map<Group, RealtimeEvent[]>();
    for (const e of batch) {
      const groups = this.orgs.get(e.orgId)?.get(e.field);
      if (!groups) continue;
      for (const g of groups.values()) {
        let list = work.get(g);
        if (!list) {
          list = [];
          work.set(g, list);
        }
        list.push(e);
      }
    }
    return Promise.all([...work].map(async ([g, events]) => ({ g, events, ...(await this.followUp(g, events)) })));
  }

  private fanOut(prepared: Prepared): void {
    for (const { g, events, entities, errors } of prepared) this.deliver(g, events, entities, errors);
  }

  /**
   * One follow-up query per entity field of the group's selection, for all the batch's entities.
   * Its errors (a subgraph that could not answer) go to the events they concern, as in a query.
   */
  private async followUp(g: Group, events: RealtimeEvent[]): Promise<FollowedUp> {
    const rep = g.first;
    const entities = new Map<string, Map<string, unknown>>();
    const errors = new Map<string, FollowUpErrors>();
    await Promise.all(
      rep.plan.followUps.map(async (fu) => {
        const ids = [
          ...new Set(
            events
              .map((e) => (e.data as Record<string, { id?: string } | undefined> | null)?.[fu.fieldName]?.id)
              .filter((x): x is string => !!x),
          ),
        ];
        if (!ids.length) return;
        followUps.inc();
        try {
          const result = await this.execute(fu.document, { ...fu.variables, _rulrIds: ids }, g.identity);
          entities.set(fu.responseKey, indexFollowUp(result));
          const errs = followUpErrors(result, ids, rep.plan.rootResponseKey, fu.responseKey);
          if (errs) errors.set(fu.responseKey, errs);
        } catch (err) {
          this.logger.warn({ err, field: g.field }, 'follow-up query failed');
          entities.set(fu.responseKey, new Map());
        }
      }),
    );
    return { entities, errors };
  }

  /** The follow-up errors that concern one event (none: `undefined`). */
  private eventErrors(g: Group, e: RealtimeEvent, errors: Map<string, FollowUpErrors>): GraphQLFormattedError[] | undefined {
    let out: GraphQLFormattedError[] | undefined;
    for (const fu of g.first.plan.followUps) {
      const errs = errors.get(fu.responseKey);
      if (!errs) continue;
      const id = (e.data as Record<string, { id?: string } | undefined> | null)?.[fu.fieldName]?.id;
      const mine = id === undefined ? undefined : errs.byId.get(id);
      if (!errs.all.length && !mine) continue;
      out ??= [];
      out.push(...errs.all, ...(mine ?? []));
    }
    return out;
  }

  /** The `next` payload of one event: the subscriber's selection over it, with the follow-up errors that concern it. */
  private payload(
    g: Group,
    e: RealtimeEvent,
    schema: GraphQLSchema,
    entities: Map<string, Map<string, unknown>>,
    errors: Map<string, FollowUpErrors>,
  ): ExecutionResult | { data?: unknown; errors: readonly unknown[] } {
    const rep = g.first;
    const result = project(schema, rep.document, rep.plan, rep.variables, e.data, entities);
    const extra = errors.size ? this.eventErrors(g, e, errors) : undefined;
    return extra ? { ...result, errors: [...(result.errors ?? []), ...extra] } : result;
  }

  private deliver(
    g: Group,
    events: RealtimeEvent[],
    entities: Map<string, Map<string, unknown>>,
    errors: Map<string, FollowUpErrors>,
  ): void {
    const schema = this.schema();
    for (const e of events) {
      // A subscriber may sit under several of the event's keys: the mark visits it once per event
      // (no candidate set built per event). Sets tolerate a subscriber removed while iterating.
      const mark = ++visitMark;
      let payload: Buffer | undefined;
      let sent = 0;
      // subscribers with the same query and variables share their plan's args: match once per run of them
      let lastArgs: Record<string, unknown> | undefined;
      let lastMatch = false;
      const visit = (s: Subscriber) => {
        if (s.mark === mark) return;
        s.mark = mark;
        if (!g.subs.has(s)) return;
        if (s.plan.args !== lastArgs) {
          lastArgs = s.plan.args;
          lastMatch = matches(lastArgs, e.filter);
        }
        if (!lastMatch) return;
        payload ??= Buffer.from(JSON.stringify(this.payload(g, e, schema, entities, errors)));
        s.sink.next(s.id, payload, e.coalesce);
        sent++;
      };
      for (const s of g.unindexed) visit(s);
      for (const k of eventKeys(e.filter)) {
        const set = g.byKey.get(k);
        if (set) for (const s of set) visit(s);
      }
      if (sent) deliveries.inc(sent);
    }
  }
}
