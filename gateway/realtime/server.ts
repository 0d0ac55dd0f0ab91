import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import {
  type DocumentNode,
  type ExecutionResult,
  GraphQLError,
  type GraphQLFormattedError,
  type GraphQLSchema,
  getNamedType,
  getOperationAST,
  getVariableValues,
  parse,
  specifiedRules,
  validate,
} from 'graphql';
import { GRAPHQL_TRANSPORT_WS_PROTOCOL, MessageType, parseMessage, type SubscribePayload, CloseCode as WsCloseCode } from 'graphql-ws';
import { LRUCache } from 'lru-cache';
import { type WebSocket, WebSocketServer } from 'ws';
import { CloseCode, ErrorCode, formatError, RulrError } from '../../lib/errors.js';
import { authorize, type Identity } from '../../lib/identity.js';
import type { Logger } from '../../lib/logger.js';
import { counter, gauge } from '../../lib/metrics.js';
import type { Redis } from '../../lib/redis.js';
import { subscriptionRequirement } from '../../lib/subgraphs.js';
import type { SessionEvents } from '../sessions.js';
import { type FrameSink, RealtimeHub, type Subscriber } from './hub.js';
import { entityFetchers, indexFollowUp, planSubscription } from './selection.js';

export interface RealtimeOptions {
  /** @default '/graphql' */
  path?: string;
  /** The current federated API schema (with the Subscription type composed from the subgraphs). */
  schema: () => GraphQLSchema | undefined;
  /** Verifies `connection_init` credentials; throws UNAUTHENTICATED. `expiresAt` (ms) closes the socket with 4403 then. */
  authenticate(
    payload: Record<string, unknown> | undefined,
    req: Pick<IncomingMessage, 'headers'>,
  ): Promise<{ identity: Identity; expiresAt?: number }>;
  /** Runs a query or mutation through the federated graph as `identity` (follow-ups, visibility checks, queries over WebSocket). */
  execute(
    document: DocumentNode,
    variables: Record<string, unknown>,
    operationName: string | undefined,
    identity: Identity,
  ): Promise<ExecutionResult>;
  /** Depth/alias/cost limits shared with HTTP; returns the refusal or null. */
  checkLimits?: (document: DocumentNode) => GraphQLError | null;
  /**
   * The identity's request rate limit shared with HTTP, counted once per `subscribe` message
   * (queries, mutations and subscriptions over the socket): null when allowed, else seconds to wait.
   */
  rateLimit?: (identity: Identity) => Promise<number | null>;
  /** A Redis connection used only for SUBSCRIBE. */
  redisSubscriber: Redis;
  redisPrefix: string;
  logger: Logger;
  /** Active subscriptions one connection may hold. @default 100 */
  maxSubscriptionsPerConnection?: number;
  /** @default 3000 */
  connectionInitTimeoutMs?: number;
  /** WebSocket ping interval; a peer that misses one pong is dropped. @default 30000 */
  keepAliveMs?: number;
  /** Above this many buffered bytes a connection is backlogged: telemetry is coalesced per device. @default 16384 */
  softBufferBytes?: number;
  /** Above this many queued bytes of a backlogged connection it is closed with 4008. @default 1048576 */
  hardBufferBytes?: number;
  /**
   * How often connections authenticated by an API key run `authenticate` again with their
   * `connection_init` credentials: a revoked or expired key closes them with 4403. @default 30000
   */
  credentialRecheckMs?: number;
  /**
   * Ended sign-in sessions: their connections close with 4403 at once; after the revocation
   * channel was lost, every connection's credentials are checked again.
   */
  sessions?: SessionEvents;
  /** Mask internal error messages. */
  mask: boolean;
}

/** A visibility check that a subgraph could not answer proves nothing: refuse with its error, not FORBIDDEN. */
function throwIfUnavailable(r: ExecutionResult): void {
  const e = (r.errors as readonly GraphQLFormattedError[] | undefined)?.find((x) => x.extensions?.code === ErrorCode.SubgraphUnavailable);
  if (e) throw new RulrError(ErrorCode.SubgraphUnavailable, e.message, { subgraph: e.extensions?.subgraph });
}

const connectionsGauge = gauge('rulr_realtime_connections', 'Open graphql-ws connections');
const subscriptionsGauge = gauge('rulr_realtime_subscriptions', 'Active subscriptions');
const coalesced = counter('rulr_realtime_coalesced_total', 'Telemetry frames replaced by a newer one for a lagging client');
const slowClosed = counter('rulr_realtime_slow_consumer_closed_total', 'Connections closed because they fell too far behind');
const refused = counter('rulr_realtime_refused_total', 'Subscriptions refused', ['code']);

interface QueueEntry {
  key: string | undefined;
  /** a complete WebSocket frame */
  frame: Buffer;
}

/** `}` closing a `next` message around its payload. */
const CLOSE_BRACE = 0x7d;

/**
 * Connections with frames collected during this turn of the event loop: all written on the next
 * turn, one write (one syscall) per connection, whatever the number of frames.
 */
const dirty = new Set<Connection>();
let writeScheduled = false;
function writeDirty(): void {
  writeScheduled = false;
  for (const c of dirty) c.writeOut();
  dirty.clear();
}

/** One graphql-ws connection: protocol state, its subscriptions, and its outbound backlog. */
class Connection implements FrameSink {
  identity?: Identity;
  acknowledged = false;
  initReceived = false;
  readonly subs = new Map<string, Subscriber | 'pending'>();
  private queue: QueueEntry[] = [];
  private queued = new Map<string, QueueEntry>();
  private queuedBytes = 0;
  /** frames of this turn, written together on the next one */
  private out: Buffer[] = [];
  private outBytes = 0;
  /** `{"id":<id>,"type":"next","payload":` per subscription id */
  private readonly prefixes = new Map<string, Buffer>();
  alive = true;
  closed = false;
  timers: NodeJS.Timeout[] = [];
  /** re-runs the `connection_init` authentication (API keys and sessions: revocation is not in the credential) */
  recheck?: () => Promise<unknown>;
  /** the sign-in session of its token, if any */
  sessionId?: string;

  constructor(
    readonly ws: WebSocket,
    private readonly o: Required<Pick<RealtimeOptions, 'softBufferBytes' | 'hardBufferBytes'>>,
    private readonly onBacklog: (c: Connection) => void,
  ) {}

  /** A protocol message (ack, pong, error, complete): after any event frames collected before it. */
  send(message: string): void {
    if (this.closed) return;
    this.writeOut();
    this.ws.send(message);
  }

  forget(id: string): void {
    this.prefixes.delete(id);
  }

  /**
   * One `next` message as a complete WebSocket frame (a server's frames are not masked): the
   * payload is encoded once per event and subscriber group by the hub; only the prefix naming
   * the subscription differs per connection, and it is built once per subscription.
   */
  private frame(id: string, payload: Buffer): Buffer {
    let prefix = this.prefixes.get(id);
    if (!prefix) {
      prefix = Buffer.from(`{"id":${JSON.stringify(id)},"type":"next","payload":`);
      this.prefixes.set(id, prefix);
    }
    const len = prefix.length + payload.length + 1;
    const head = len < 126 ? 2 : len < 65_536 ? 4 : 10;
    const buf = Buffer.allocUnsafe(head + len);
    buf[0] = 0x81; // FIN, text frame
    if (head === 2) buf[1] = len;
    else if (head === 4) {
      buf[1] = 126;
      buf.writeUInt16BE(len, 2);
    } else {
      buf[1] = 127;
      buf.writeUInt32BE(Math.floor(len / 2 ** 32), 2);
      buf.writeUInt32BE(len >>> 0, 6);
    }
    prefix.copy(buf, head);
    payload.copy(buf, head + prefix.length);
    buf[head + len - 1] = CLOSE_BRACE;
    return buf;
  }

  next(id: string, payload: Buffer, coalesceKey: string | undefined): void {
    if (this.closed) return;
    const frame = this.frame(id, payload);
    if (!this.queue.length && this.unsent() < this.o.softBufferBytes) {
      this.collect(frame);
      return;
    }
    const key = coalesceKey === undefined ? undefined : `${id}\u0000${coalesceKey}`;
    const existing = key === undefined ? undefined : this.queued.get(key);
    if (existing) {
      this.queuedBytes += frame.length - existing.frame.length;
      existing.frame = frame;
      coalesced.inc();
    } else {
      const entry = { key, frame };
      this.queue.push(entry);
      if (key !== undefined) this.queued.set(key, entry);
      this.queuedBytes += frame.length;
    }
    if (this.queuedBytes > this.o.hardBufferBytes) {
      slowClosed.inc();
      this.close(CloseCode.SlowConsumer, 'Slow consumer: events piled up; reconnect and resubscribe');
      return;
    }
    if (this.queue.length === 1) this.onBacklog(this);
  }

  /**
   * What the peer has not taken yet. This turn's collected frames are not counted: they are held
   * back by us for one write, not by a slow reader.
   */
  private unsent(): number {
    return this.ws.bufferedAmount;
  }

  private collect(frame: Buffer): void {
    this.out.push(frame);
    this.outBytes += frame.length;
    dirty.add(this);
    if (!writeScheduled) {
      writeScheduled = true;
      setImmediate(writeDirty);
    }
  }

  /**
   * Writes the collected frames straight to the socket as one buffer. `ws` frames its own
   * messages synchronously on the same socket (no compression is negotiated), so whole frames
   * never interleave; `ws.bufferedAmount` counts these bytes like its own.
   */
  writeOut(): void {
    if (!this.out.length) return;
    const data = this.out.length === 1 ? (this.out[0] as Buffer) : Buffer.concat(this.out, this.outBytes);
    this.out = [];
    this.outBytes = 0;
    const socket = (this.ws as unknown as { _socket?: Duplex })._socket;
    if (this.closed || this.ws.readyState !== this.ws.OPEN || !socket) return;
    socket.write(data);
  }

  /** Sends queued frames while the socket has room; true when the backlog is empty. */
  flush(): boolean {
    let i = 0;
    let room = this.o.softBufferBytes - this.unsent();
    while (i < this.queue.length && room > 0 && !this.closed) {
      const e = this.queue[i++] as QueueEntry;
      room -= e.frame.length;
      if (e.key !== undefined) this.queued.delete(e.key);
      this.queuedBytes -= e.frame.length;
      this.collect(e.frame);
    }
    this.queue = i ? this.queue.slice(i) : this.queue;
    return this.queue.length === 0 || this.closed;
  }

  close(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.ws.close(code, reason);
  }
}

/**
 * The graphql-ws (graphql-transport-ws) server of the gateway, on the same port and path as HTTP.
 * It applies the same authentication and limits as HTTP (WebSocket traffic bypasses Apollo
 * Server), serves subscription root fields from Redis events through `RealtimeHub`, and runs
 * queries and mutations sent over the socket through the federated graph.
 */
export class RealtimeServer {
  readonly hub: RealtimeHub;
  private readonly wss: WebSocketServer;
  private readonly conns = new Set<Connection>();
  private readonly bySession = new Map<string, Set<Connection>>();
  private readonly unlisten: (() => void)[] = [];
  private readonly backlogged = new Set<Connection>();
  /**
   * Visibility answers per (organisation, role, scopes, argument): many screens subscribe to the
   * same sites, and a site's owner does not change within the TTL.
   */
  private readonly visible = new LRUCache<string, { refusal: string | null }>({ max: 50_000, ttl: 30_000 });
  private readonly docs = new LRUCache<string, { schema: GraphQLSchema; doc?: DocumentNode; errors?: readonly GraphQLError[] }>({
    max: 2000,
  });
  private readonly plans = new LRUCache<string, { schema: GraphQLSchema; plan: ReturnType<typeof planSubscription> }>({ max: 10_000 });
  private readonly pump: NodeJS.Timeout;
  private readonly pinger: NodeJS.Timeout;
  private readonly rechecker: NodeJS.Timeout;
  private readonly o: RealtimeOptions & Required<Pick<RealtimeOptions, 'softBufferBytes' | 'hardBufferBytes'>>;

  constructor(
    private readonly server: Server,
    options: RealtimeOptions,
  ) {
    this.o = { softBufferBytes: 16_384, hardBufferBytes: 1_048_576, ...options };
    this.hub = new RealtimeHub(
      options.redisSubscriber,
      options.redisPrefix,
      () => options.schema() as GraphQLSchema,
      (doc, vars, identity) => options.execute(doc, vars, undefined, identity),
      options.logger,
    );
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: 65_536,
      perMessageDeflate: false,
      handleProtocols: (protocols) => (protocols.has(GRAPHQL_TRANSPORT_WS_PROTOCOL) ? GRAPHQL_TRANSPORT_WS_PROTOCOL : false),
    });
    server.on('upgrade', this.onUpgrade);
    this.pump = setInterval(() => {
      for (const c of this.backlogged) if (c.flush()) this.backlogged.delete(c);
    }, 20);
    this.pinger = setInterval(() => {
      for (const c of this.conns) {
        if (!c.alive) {
          c.ws.terminate();
          continue;
        }
        c.alive = false;
        c.ws.ping();
      }
    }, options.keepAliveMs ?? 30_000);
    this.rechecker = setInterval(() => this.recheckCredentials(), options.credentialRecheckMs ?? 30_000);
    if (options.sessions) {
      this.unlisten.push(
        options.sessions.onRevoked((ids) => this.closeSessions(ids)),
        options.sessions.onResync(() => this.recheckCredentials()),
      );
    }
  }

  /** Closes (4403) the connections of sessions that just ended (logout, revocation, a removed member). */
  private closeSessions(ids: readonly string[]): void {
    for (const id of ids) {
      for (const c of this.bySession.get(id) ?? []) c.close(CloseCode.Forbidden, 'Forbidden: session ended');
    }
  }

  /** Closes (4403) the connections whose API key or session was revoked or expired since they authenticated. */
  private recheckCredentials(): void {
    for (const c of this.conns) {
      if (!c.recheck || c.closed) continue;
      c.recheck().catch((e: unknown) => {
        // Only a refused credential closes the socket: a database outage must not drop every screen.
        if (e instanceof RulrError && e.code === ErrorCode.Unauthenticated) {
          c.close(CloseCode.Forbidden, `Forbidden: ${e.message}`.slice(0, 120));
        } else this.o.logger.warn({ err: e }, 'real-time: credential re-check failed; connection kept');
      });
    }
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  private readonly onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if ((req.url ?? '').split('?')[0] !== (this.o.path ?? '/graphql')) {
      socket.destroy();
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, req));
  };

  private onConnection(ws: WebSocket, req: IncomingMessage): void {
    const c = new Connection(ws, this.o, (x) => this.backlogged.add(x));
    this.conns.add(c);
    connectionsGauge.inc();
    if (ws.protocol !== GRAPHQL_TRANSPORT_WS_PROTOCOL) {
      c.close(WsCloseCode.SubprotocolNotAcceptable, 'Subprotocol not acceptable');
    }
    c.timers.push(
      setTimeout(() => {
        if (!c.acknowledged) c.close(WsCloseCode.ConnectionInitialisationTimeout, 'Connection initialisation timeout');
      }, this.o.connectionInitTimeoutMs ?? 3000),
    );
    ws.on('pong', () => {
      c.alive = true;
    });
    // keep only the headers (credentials may come in them), not the whole upgrade request, per connection
    const upgrade = { headers: req.headers };
    ws.on('message', (data) => void this.onMessage(c, data.toString(), upgrade));
    ws.on('close', () => this.onClose(c));
    ws.on('error', () => ws.terminate());
  }

  private onClose(c: Connection): void {
    c.closed = true;
    for (const t of c.timers) clearTimeout(t);
    for (const s of c.subs.values()) {
      if (s !== 'pending') {
        this.hub.remove(s);
        subscriptionsGauge.dec();
      }
    }
    c.subs.clear();
    this.backlogged.delete(c);
    if (c.sessionId) {
      const set = this.bySession.get(c.sessionId);
      set?.delete(c);
      if (set?.size === 0) this.bySession.delete(c.sessionId);
    }
    if (this.conns.delete(c)) connectionsGauge.dec();
  }

  private async onMessage(c: Connection, raw: string, req: Pick<IncomingMessage, 'headers'>): Promise<void> {
    let msg: ReturnType<typeof parseMessage>;
    try {
      msg = parseMessage(raw);
    } catch (e) {
      c.close(WsCloseCode.BadRequest, `Invalid message received: ${(e as Error).message}`.slice(0, 120));
      return;
    }
    switch (msg.type) {
      case MessageType.ConnectionInit: {
        if (c.initReceived) {
          c.close(WsCloseCode.TooManyInitialisationRequests, 'Too many initialisation requests');
          return;
        }
        c.initReceived = true;
        try {
          const initPayload = msg.payload ?? undefined;
          const { identity, expiresAt } = await this.o.authenticate(initPayload, req);
          if (identity.kind === 'anonymous') throw new RulrError(ErrorCode.Unauthenticated, 'credentials required');
          if (c.closed) return;
          c.identity = identity;
          if (identity.kind === 'apikey' || identity.sessionId) c.recheck = () => this.o.authenticate(initPayload, req);
          if (identity.sessionId) {
            c.sessionId = identity.sessionId;
            const set = this.bySession.get(identity.sessionId) ?? new Set<Connection>();
            this.bySession.set(identity.sessionId, set);
            set.add(c);
          }
          if (expiresAt !== undefined) {
            const ms = Math.max(0, expiresAt - Date.now());
            c.timers.push(setTimeout(() => c.close(CloseCode.Forbidden, 'Forbidden: token expired'), Math.min(ms, 2 ** 31 - 1)));
          }
          c.acknowledged = true;
          c.send(JSON.stringify({ type: MessageType.ConnectionAck }));
        } catch (e) {
          c.close(CloseCode.Unauthorized, `Unauthorized: ${e instanceof RulrError ? e.message : 'invalid credentials'}`.slice(0, 120));
        }
        return;
      }
      case MessageType.Ping:
        c.send(JSON.stringify({ type: MessageType.Pong, ...(msg.payload ? { payload: msg.payload } : {}) }));
        return;
      case MessageType.Pong:
        return;
      case MessageType.Subscribe: {
        if (!c.acknowledged || !c.identity) {
          c.close(WsCloseCode.Unauthorized, 'Unauthorized');
          return;
        }
        if (c.subs.has(msg.id)) {
          c.close(WsCloseCode.SubscriberAlreadyExists, `Subscriber for ${msg.id} already exists`);
          return;
        }
        c.subs.set(msg.id, 'pending');
        await this.subscribe(c, msg.id, msg.payload);
        return;
      }
      case MessageType.Complete: {
        const s = c.subs.get(msg.id);
        c.subs.delete(msg.id);
        c.forget(msg.id);
        if (s && s !== 'pending') {
          this.hub.remove(s);
          subscriptionsGauge.dec();
        }
        return;
      }
      default:
        c.close(WsCloseCode.BadRequest, `Unexpected message of type ${msg.type} received`);
    }
  }

  private sendError(c: Connection, id: string, errors: readonly GraphQLError[]): void {
    c.subs.delete(id);
    c.forget(id);
    const formatted = errors.map((e) => formatError(e, this.o.mask).toJSON());
    for (const e of formatted) refused.inc({ code: String(e.extensions?.code ?? 'UNKNOWN') });
    c.send(JSON.stringify({ id, type: MessageType.Error, payload: formatted }));
  }

  private document(schema: GraphQLSchema, query: string): { doc?: DocumentNode; errors?: readonly GraphQLError[] } {
    const hit = this.docs.get(query);
    if (hit && hit.schema === schema) return hit;
    let entry: { schema: GraphQLSchema; doc?: DocumentNode; errors?: readonly GraphQLError[] };
    try {
      const doc = parse(query, { maxTokens: 10_000 });
      const errors = validate(schema, doc, specifiedRules);
      const limit = errors.length ? null : (this.o.checkLimits?.(doc) ?? null);
      entry = errors.length ? { schema, errors } : limit ? { schema, errors: [limit] } : { schema, doc };
    } catch (e) {
      entry = { schema, errors: [e instanceof GraphQLError ? e : new GraphQLError(String(e))] };
    }
    this.docs.set(query, entry);
    return entry;
  }

  private async subscribe(c: Connection, id: string, payload: SubscribePayload): Promise<void> {
    const identity = c.identity as Identity;
    const schema = this.o.schema();
    if (!schema) return this.sendError(c, id, [new GraphQLError('gateway is starting', { extensions: { code: ErrorCode.Internal } })]);
    const wait = this.o.rateLimit ? await this.o.rateLimit(identity) : null;
    if (c.subs.get(id) !== 'pending') return; // completed by the client meanwhile
    if (wait !== null) {
      return this.sendError(c, id, [
        new RulrError(ErrorCode.RateLimited, `rate limit exceeded: retry in ${wait} s`, { retryAfter: wait }).toGraphQL(),
      ]);
    }
    const { doc, errors } = this.document(schema, payload.query);
    if (!doc) return this.sendError(c, id, errors ?? []);
    const opName = payload.operationName ?? undefined;
    const op = getOperationAST(doc, opName);
    if (!op) return this.sendError(c, id, [new RulrError(ErrorCode.BadUserInput, 'operation not found').toGraphQL()]);
    // Variables are coerced against the operation's definitions, as an HTTP request's are: a missing
    // `ID!` or a value of the wrong type is refused here, never read as "no filter".
    const coerced = getVariableValues(schema, op.variableDefinitions ?? [], (payload.variables ?? {}) as Record<string, unknown>, {
      maxErrors: 10,
    });
    if (coerced.errors) {
      return this.sendError(
        c,
        id,
        coerced.errors.map((e) => new GraphQLError(e.message, { extensions: { code: ErrorCode.BadUserInput } })),
      );
    }
    const variables = coerced.coerced;

    if (op.operation !== 'subscription') {
      // Queries and mutations over the socket run through the federated graph like HTTP ones.
      const result = await this.o
        .execute(doc, variables, opName, identity)
        .catch((e): ExecutionResult => ({ errors: [e instanceof RulrError ? e.toGraphQL() : new GraphQLError(String(e))] }));
      if (c.subs.get(id) !== 'pending') return;
      c.subs.delete(id);
      c.send(
        JSON.stringify({
          id,
          type: MessageType.Next,
          payload: { ...result, errors: result.errors?.map((e) => formatError(e as GraphQLError, this.o.mask).toJSON()) },
        }),
      );
      c.send(JSON.stringify({ id, type: MessageType.Complete }));
      return;
    }

    const active = [...c.subs.values()].filter((s) => s !== 'pending').length;
    if (active >= (this.o.maxSubscriptionsPerConnection ?? 100)) {
      return this.sendError(c, id, [
        new RulrError(
          ErrorCode.RateLimited,
          `at most ${this.o.maxSubscriptionsPerConnection ?? 100} active subscriptions per connection`,
        ).toGraphQL(),
      ]);
    }
    let plan: ReturnType<typeof planSubscription>;
    try {
      // Plans are immutable and depend only on the schema, the document and the variables: live
      // screens subscribing to the same site share one (and its parsed follow-up documents).
      const planKey = JSON.stringify([payload.query, opName ?? null, variables]);
      const cached = this.plans.get(planKey);
      if (cached?.schema === schema) plan = cached.plan;
      else {
        plan = planSubscription(schema, doc, opName, variables);
        this.plans.set(planKey, { schema, plan });
      }
      authorize(identity, subscriptionRequirement(plan.rootFieldName));
    } catch (e) {
      return this.sendError(c, id, [
        e instanceof RulrError ? e.toGraphQL() : new RulrError(ErrorCode.BadUserInput, (e as Error).message).toGraphQL(),
      ]);
    }
    const visKey = JSON.stringify([identity.orgId, identity.role, identity.scopes, plan.args]);
    let invisible = this.visible.get(visKey)?.refusal;
    if (invisible === undefined) {
      let unchecked: RulrError | undefined;
      invisible = await this.invisibleArgument(schema, plan.args, identity).catch((e: unknown) => {
        // Not cached: the next subscribe checks again (a subgraph that could not answer may be back).
        unchecked = e instanceof RulrError ? e : new RulrError(ErrorCode.Forbidden, 'a filter argument could not be checked');
        return null;
      });
      if (unchecked) return this.sendError(c, id, [unchecked.toGraphQL()]);
      this.visible.set(visKey, { refusal: invisible });
    }
    if (invisible) return this.sendError(c, id, [new RulrError(ErrorCode.Forbidden, invisible).toGraphQL()]);
    if (c.subs.get(id) !== 'pending' || c.closed) return;
    const sub: Subscriber = { id, sink: c, identity, document: doc, variables, plan };
    c.subs.set(id, sub);
    subscriptionsGauge.inc();
    this.hub.add(sub);
  }

  /**
   * A subscription may only filter on what its identity can see: an id argument `xId`/`xIds` is
   * looked up with `Query.xsByIds` (or `Query.x(id)`) as the subscriber; anything missing refuses it.
   */
  private async invisibleArgument(schema: GraphQLSchema, args: Record<string, unknown>, identity: Identity): Promise<string | null> {
    const fetchers = entityFetchers(schema);
    const queryFields = schema.getQueryType()?.getFields() ?? {};
    for (const [name, value] of Object.entries(args)) {
      const base = /^(.*)Ids?$/.exec(name)?.[1];
      if (!base || value === null || value === undefined) continue;
      const ids = [...new Set((Array.isArray(value) ? value : [value]).map(String))];
      const typeName = base.charAt(0).toUpperCase() + base.slice(1);
      const fetcher = fetchers.get(typeName);
      if (fetcher) {
        const r = await this.o.execute(
          parse(`query RulrVisible($ids: [ID!]!) { _r: ${fetcher}(ids: $ids) { _rulrId: id } }`),
          { ids },
          undefined,
          identity,
        );
        throwIfUnavailable(r);
        const seen = indexFollowUp(r);
        const missing = ids.find((x) => !seen.has(x));
        if (missing) return `${base} ${missing} is not visible to you`;
      } else {
        const single = singleLookup(queryFields, base, typeName);
        // An id filter nothing can check is refused (fail closed), not passed through unchecked.
        if (!single) return `${name} cannot be checked`;
        for (const x of ids) {
          const r = await this.o.execute(
            parse(`query RulrVisible($id: ID!) { _r: ${single}(id: $id) { id } }`),
            { id: x },
            undefined,
            identity,
          );
          throwIfUnavailable(r);
          if (!(r.data as { _r?: unknown } | undefined)?._r) return `${base} ${x} is not visible to you`;
        }
      }
    }
    return null;
  }

  /** Closes every connection (1001 going away) and stops listening for upgrades. */
  async close(): Promise<void> {
    this.server.off('upgrade', this.onUpgrade);
    clearInterval(this.pump);
    clearInterval(this.pinger);
    clearInterval(this.rechecker);
    for (const fn of this.unlisten.splice(0)) fn();
    for (const c of this.conns) c.close(1001, 'server shutting down');
    await new Promise<void>((r) => this.wss.close(() => r()));
    // QUIT waits for Redis' answer: bounded, then the socket is dropped either way.
    await Promise.race([this.o.redisSubscriber.quit().catch(() => undefined), new Promise((r) => setTimeout(r, 2000).unref())]);
    this.o.redisSubscriber.disconnect();
  }
}

/**
 * The `Query` field that fetches one `typeName` by `id` for an `xId` argument: `x(id:)` itself, or
 * the one field whose type's name ends with it (`jobId` → `commandJob(id:): CommandJob`); none or
 * several → undefined.
 */
function singleLookup(
  fields: Record<string, { args: readonly { name: string }[]; type: unknown }>,
  base: string,
  typeName: string,
): string | undefined {
  const byId = (f: { args: readonly { name: string }[] }) => f.args.length === 1 && f.args[0]?.name === 'id';
  const own = fields[base];
  if (own && byId(own)) return base;
  const candidates = Object.entries(fields).filter(
    ([, f]) => byId(f) && getNamedType(f.type as Parameters<typeof getNamedType>[0])?.name.endsWith(typeName),
  );
  return candidates.length === 1 ? candidates[0]?.[0] : undefined;
}
