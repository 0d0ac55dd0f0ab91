import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { ApolloGateway, executeQueryPlan, type GraphQLDataSource, IntrospectAndCompose } from '@apollo/gateway';
import { ApolloServer, HeaderMap } from '@apollo/server';
import { ApolloServerPluginLandingPageDisabled } from '@apollo/server/plugin/disabled';
import { type DocumentNode, type ExecutionResult, GraphQLError, type GraphQLFormattedError, getVariableValues, print } from 'graphql';
import { TokenVerifier } from '../lib/auth.js';
import { subgraphUrls } from '../lib/config.js';
import { pingDb } from '../lib/db.js';
import { ErrorCode, RulrError } from '../lib/errors.js';
import { BodyTooLargeError, readBody, ServiceServer, sendJson } from '../lib/http.js';
import { IDENTITY_HEADER, type Identity } from '../lib/identity.js';
import { counter, histogram } from '../lib/metrics.js';
import type { RoleContext, RoleHandle } from '../lib/role.js';
import { executeSubgraph, type SubgraphModule } from '../lib/subgraph.js';
import { SUBGRAPH_NAMES } from '../lib/subgraphs.js';
import { Authenticator } from './authenticate.js';
import {
  type GatewayContext,
  IdentitySigner,
  LocalDataSource,
  localIdentity,
  SignedRemoteDataSource,
  SubgraphHttpClient,
} from './data-sources.js';
import { checkLimits } from './limits.js';
import { OperationRouter, type Route } from './operations.js';
import { GatewayRateLimiter, rateLimitKey } from './rate-limit.js';
import { attachRealtime, type GatewayCapabilities } from './realtime/attach.js';
import type { RealtimeServer } from './realtime/server.js';
import { installShaping, shapedVariables } from './result-shaping.js';
import { loadSupergraph, readSubgraphSdls } from './supergraph.js';

export interface GatewayOptions {
  /** Subgraphs running in this process, called without HTTP. */
  local?: Record<string, SubgraphModule>;
  /** Port override (tests use 0). */
  port?: number;
  /** Supergraph SDL to serve instead of `schema/supergraph.graphql` (tests, benchmarks). */
  supergraphSdl?: string;
  /** Subgraph URL overrides by name (default: `subgraphUrls(cfg)`). */
  urls?: Record<string, string>;
  /**
   * Answer single-subgraph operations directly instead of through Apollo's pipeline; off, every
   * operation goes through ApolloGateway (tests compare the two). @default true
   */
  fastPath?: boolean;
  /** Serve graphql-ws subscriptions on the same port and path. @default true */
  realtime?: boolean;
  /**
   * Serve HTTP GraphQL requests; false makes the WebSocket-only role (`rulr start realtime`) that
   * scales apart from the HTTP gateway. @default true
   */
  http?: boolean;
}

const requests = counter('rulr_gateway_requests_total', 'GraphQL requests by route (direct, apollo, refused)', ['route']);
const durations = histogram(
  'rulr_gateway_request_duration_seconds',
  'GraphQL request duration by route',
  ['route'],
  [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15],
);

type Reply = { status: number; body: string | Buffer; headers?: Record<string, string> };

const gqlError = (message: string, code: ErrorCode, extra: Record<string, unknown> = {}) => ({
  errors: [{ message, extensions: { code, ...extra } }],
});
const replyJson = (status: number, body: unknown, headers?: Record<string, string>): Reply => ({
  status,
  body: JSON.stringify(body),
  ...(headers ? { headers } : {}),
});

class TimeoutSignal {}

/**
 * The federated gateway: ApolloGateway behind Apollo Server (executed inside RULR's ServiceServer so
 * /healthz, /readyz and /metrics share the port), with authentication, limits and rate limiting in
 * front, and a direct route for operations that a single subgraph answers (see `operations.ts`).
 */
/**
 * What the running gateway offers beside its port: the HTTP server (graphql-ws attaches to its
 * `upgrade` event) and the same identity, limits and execution HTTP requests get.
 */
export interface GatewayHandle extends RoleHandle, GatewayCapabilities {
  /** Credentials from headers (`authorization`, `x-api-key`) → Identity; throws UNAUTHENTICATED. */
  identify(headers: IncomingHttpHeaders): Promise<Identity>;
  /** The graphql-ws server, when `realtime` is on. */
  realtime?: RealtimeServer;
  /** Registers a cleanup run first on `close()` (e.g. the WebSocket server). */
  onClose(fn: () => Promise<void>): void;
}

export async function startGateway(ctx: RoleContext, o: GatewayOptions = {}): Promise<GatewayHandle> {
  const closers: (() => Promise<void>)[] = [];
  const cfg = ctx.config;
  const logger = ctx.logger.child({ role: 'gateway' });
  const production = cfg.NODE_ENV === 'production';
  const introspection = cfg.GATEWAY_INTROSPECTION === 'auto' ? !production : cfg.GATEWAY_INTROSPECTION === 'true';
  const local = o.local ?? {};
  const urls: Record<string, string> = { ...subgraphUrls(cfg), ...o.urls };
  const signer = new IdentitySigner(cfg.RULR_SECRET);
  const client = new SubgraphHttpClient(cfg.GATEWAY_TIMEOUT_MS);
  const authenticator = new Authenticator(
    ctx.db,
    new TokenVerifier({ secret: cfg.RULR_SECRET, issuer: cfg.JWT_ISSUER, ttlSeconds: cfg.JWT_TTL_SECONDS, jwksUrl: cfg.JWKS_URL }),
    logger,
    { apiKeyCacheMs: cfg.GATEWAY_CREDENTIAL_RECHECK_MS },
  );
  const limiter = new GatewayRateLimiter(
    ctx.redis,
    { points: cfg.GATEWAY_RATE_LIMIT, windowSeconds: cfg.GATEWAY_RATE_WINDOW_S, keyPrefix: `${cfg.REDIS_PREFIX}ratelimit` },
    logger,
  );
  const limits = { maxDepth: cfg.GATEWAY_MAX_DEPTH, maxAliases: cfg.GATEWAY_MAX_ALIASES, maxCost: cfg.GATEWAY_MAX_COST };
  const fastPath = o.fastPath ?? true;
  // compiled response shaping for multi-subgraph plans (patches @apollo/gateway's computeResponse once per process)
  if (fastPath) installShaping();

  const finalizeError = (e: GraphQLFormattedError): GraphQLFormattedError => {
    if (!production) return e;
    const { serviceName: _s, stacktrace: _t, exception: _x, ...extensions } = e.extensions ?? {};
    const internal = extensions.code === ErrorCode.Internal || extensions.code === undefined;
    return { ...e, message: internal ? 'internal error' : e.message, extensions };
  };

  const buildService = (name: string, url: string | undefined): GraphQLDataSource<GatewayContext> => {
    const mod = local[name];
    if (mod) return new LocalDataSource(mod, signer, cfg.RULR_SECRET, production);
    return new SignedRemoteDataSource(urls[name] ?? (url as string), signer, client);
  };

  const gateway = new ApolloGateway({
    logger,
    ...(cfg.GATEWAY_DEV_INTROSPECT
      ? {
          supergraphSdl: new IntrospectAndCompose({
            // Development only: every subgraph that has an SDL in this tree is expected to be running.
            subgraphs: readSubgraphSdls().map(({ name }) => ({ name, url: urls[name] as string })),
          }),
        }
      : { supergraphSdl: o.supergraphSdl ?? loadSupergraph() }),
    buildService: ({ name, url }) => buildService(name, url),
  });

  let router: OperationRouter | undefined;
  let serviceMap: Record<string, GraphQLDataSource<GatewayContext>> = {};
  gateway.onSchemaLoadOrUpdate(({ coreSupergraphSdl }) => {
    const direct = new Map<string, import('graphql').GraphQLSchema | null>();
    if (fastPath) {
      for (const name of SUBGRAPH_NAMES) {
        const mod = local[name];
        direct.set(name, mod ? mod.schema : null);
      }
    }
    const next = new OperationRouter(coreSupergraphSdl, { limits, introspection, direct, planned: fastPath });
    serviceMap = Object.fromEntries(next.supergraph.subgraphsMetadata().map((s) => [s.name, buildService(s.name, s.url)]));
    router = next;
  });

  const apollo = new ApolloServer<GatewayContext>({
    gateway,
    introspection,
    includeStacktraceInErrorResponses: false,
    formatError: (formatted) => finalizeError(formatted),
    plugins: [ApolloServerPluginLandingPageDisabled()],
  });
  await apollo.start();

  const viaApollo = async (body: Record<string, unknown>, identity: Identity): Promise<Reply> => {
    const response = await apollo.executeHTTPGraphQLRequest({
      httpGraphQLRequest: { method: 'POST', headers: new HeaderMap([['content-type', 'application/json']]), search: '', body },
      context: async () => ({ identity }),
    });
    const headers: Record<string, string> = {};
    for (const [k, v] of response.headers) headers[k] = v;
    if (response.body.kind === 'complete') return { status: response.status ?? 200, body: response.body.string, headers };
    let s = '';
    for await (const chunk of response.body.asyncIterator) s += chunk;
    return { status: response.status ?? 200, body: s, headers };
  };

  /** Shapes a subgraph result the way ApolloGateway + Apollo Server would. */
  const asGateway = (result: ExecutionResult | { data?: unknown; errors?: GraphQLFormattedError[] }, service: string): string => {
    const errors = result.errors?.map((e) => {
      const f = typeof (e as GraphQLError).toJSON === 'function' ? (e as GraphQLError).toJSON() : (e as GraphQLFormattedError);
      const extensions: Record<string, unknown> = { ...f.extensions, serviceName: service };
      if (extensions.code === undefined) extensions.code = 'DOWNSTREAM_SERVICE_ERROR';
      return finalizeError({ message: f.message, ...(f.path ? { path: f.path } : {}), extensions });
    });
    return JSON.stringify(errors ? { errors, data: result.data ?? null } : { data: result.data ?? null });
  };

  const direct = async (
    route: Extract<Route, { kind: 'direct' }>,
    r: OperationRouter,
    body: Record<string, unknown>,
    identity: Identity,
  ): Promise<Reply | null> => {
    const variables = (body.variables ?? undefined) as Record<string, unknown> | undefined;
    const operationName = (body.operationName ?? undefined) as string | undefined;
    if (route.operation.variableDefinitions?.length) {
      // Coercion failures are answered by Apollo, so their shape and status are Apollo's.
      if (getVariableValues(r.apiSchema, route.operation.variableDefinitions, variables ?? {}).errors) return null;
    }
    const mod = local[route.service];
    if (mod) {
      const result = await executeSubgraph(
        mod,
        route.document,
        variables,
        operationName,
        localIdentity(signer, cfg.RULR_SECRET, identity),
        production,
      );
      return { status: 200, body: asGateway(result, route.service) };
    }
    const url = urls[route.service];
    if (!url) return null;
    let res: Awaited<ReturnType<SubgraphHttpClient['post']>>;
    try {
      res = await client.post(url, JSON.stringify({ query: body.query, variables, operationName }), {
        [IDENTITY_HEADER]: signer.sign(identity),
      });
    } catch (e) {
      // Nothing was answered: a query is retried through Apollo (which reports the failure its way).
      if (route.operation.operation === 'query') return null;
      logger.error({ err: e, service: route.service }, 'subgraph request failed');
      return replyJson(200, gqlError(production ? 'internal error' : `subgraph ${route.service} failed`, ErrorCode.Internal));
    }
    if (res.status !== 200) return route.operation.operation === 'query' ? null : replyJson(200, JSON.parse(res.body.toString('utf8')));
    // The common case, no errors: the subgraph's bytes are the answer.
    if (res.body.indexOf('"errors"') < 0) return { status: 200, body: res.body };
    return { status: 200, body: asGateway(JSON.parse(res.body.toString('utf8')), route.service) };
  };

  /** Answers Apollo's way (errors enriched and formatted as Apollo Server does), skipping its pipeline. */
  const planned = async (
    route: Extract<Route, { kind: 'planned' }>,
    r: OperationRouter,
    body: Record<string, unknown>,
    identity: Identity,
  ): Promise<Reply | null> => {
    const variables = (body.variables ?? undefined) as Record<string, unknown> | undefined;
    if (route.operation.variableDefinitions?.length) {
      if (getVariableValues(r.apiSchema, route.operation.variableDefinitions, variables ?? {}).errors) return null;
    }
    const requestContext = {
      request: {
        query: body.query as string,
        // carries the route's compiled response shaping to the patched computeResponse (result-shaping.ts)
        variables: shapedVariables(variables, route.shaper),
        operationName: (body.operationName ?? undefined) as string | undefined,
      },
      context: { identity },
      logger,
      metrics: {},
    };
    const result = await executeQueryPlan(
      route.plan,
      serviceMap,
      // biome-ignore lint/suspicious/noExplicitAny: executeQueryPlan reads only request, context, logger and metrics.
      requestContext as any,
      route.operationContext,
      r.supergraphSchema,
      r.fedApiSchema,
    );
    const errors = result.errors?.map((raw) => {
      // executeQueryPlan also collects plain Errors (a subgraph that cannot be reached); Apollo Server wraps them so.
      const e: unknown = raw;
      // Duck-typed: a GraphQLError from another copy of graphql (CJS vs ESM) must not be re-wrapped.
      const g =
        e instanceof GraphQLError || (e instanceof Error && e.name === 'GraphQLError' && 'extensions' in e)
          ? (e as GraphQLError)
          : new GraphQLError(e instanceof Error ? e.message : `Unexpected error value: ${String(e)}`);
      return finalizeError({ ...g.toJSON(), extensions: { ...g.extensions, code: g.extensions.code ?? ErrorCode.Internal } });
    });
    return { status: 200, body: JSON.stringify({ errors, data: result.data, extensions: result.extensions }) };
  };

  const withTimeout = async <T>(p: Promise<T>): Promise<T | TimeoutSignal> => {
    let timer: NodeJS.Timeout | undefined;
    const t = new Promise<TimeoutSignal>((resolve) => {
      timer = setTimeout(() => resolve(new TimeoutSignal()), cfg.GATEWAY_TIMEOUT_MS);
    });
    try {
      return await Promise.race([p, t]);
    } finally {
      clearTimeout(timer);
    }
  };

  /** Routes and runs one operation for an already authenticated, rate-limited identity. */
  const run = async (b: Record<string, unknown>, identity: Identity): Promise<{ reply: Reply; route: string }> => {
    const r = router;
    if (!r) return { route: 'refused', reply: replyJson(503, gqlError('gateway is starting', ErrorCode.Internal)) };
    const route = r.route(b.query as string, (b.operationName ?? undefined) as string | undefined);
    if (route.kind === 'refuse') return { route: 'refused', reply: replyJson(route.status, { errors: [route.error.toJSON()] }) };
    const work = (async () => {
      if (route.kind === 'direct') {
        const reply = await direct(route, r, b, identity);
        if (reply) return { route: 'direct', reply };
      } else if (route.kind === 'planned') {
        const reply = await planned(route, r, b, identity);
        if (reply) return { route: 'planned', reply };
      }
      return { route: 'apollo', reply: await viaApollo(b, identity) };
    })();
    const out = await withTimeout(work);
    if (out instanceof TimeoutSignal) {
      work.catch(() => undefined);
      return {
        route: 'timeout',
        reply: replyJson(504, gqlError(`request timed out after ${cfg.GATEWAY_TIMEOUT_MS} ms`, ErrorCode.Timeout)),
      };
    }
    return out;
  };

  const answer = async (req: IncomingMessage): Promise<{ reply: Reply; route: string }> => {
    let raw: Buffer;
    try {
      raw = await readBody(req, cfg.GATEWAY_MAX_BODY_BYTES);
    } catch (e) {
      if (e instanceof BodyTooLargeError)
        return { route: 'refused', reply: replyJson(413, gqlError(e.message, ErrorCode.PayloadTooLarge)) };
      throw e;
    }
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      return { route: 'refused', reply: replyJson(400, gqlError('body is not valid JSON', ErrorCode.BadUserInput)) };
    }
    if (Array.isArray(body)) {
      return {
        route: 'refused',
        reply: replyJson(400, gqlError('batched requests are disabled: send one operation per request', ErrorCode.BatchingDisabled)),
      };
    }
    const b = (body ?? {}) as Record<string, unknown>;
    if (typeof body !== 'object' || body === null || typeof b.query !== 'string' || b.query.length === 0) {
      return { route: 'refused', reply: replyJson(400, gqlError('"query" must be a non-empty string', ErrorCode.BadUserInput)) };
    }
    if (b.variables != null && (typeof b.variables !== 'object' || Array.isArray(b.variables))) {
      return { route: 'refused', reply: replyJson(400, gqlError('"variables" must be an object', ErrorCode.BadUserInput)) };
    }
    if (b.operationName != null && typeof b.operationName !== 'string') {
      return { route: 'refused', reply: replyJson(400, gqlError('"operationName" must be a string', ErrorCode.BadUserInput)) };
    }
    let identity: Identity;
    try {
      identity = await authenticator.identify(req.headers);
    } catch (e) {
      if (e instanceof RulrError) return { route: 'refused', reply: replyJson(e.httpStatus, { errors: [e.toGraphQL().toJSON()] }) };
      throw e;
    }
    const wait = await limiter.consume(rateLimitKey(identity, req.socket.remoteAddress));
    if (wait !== null) {
      return {
        route: 'refused',
        reply: replyJson(429, gqlError(`rate limit exceeded: retry in ${wait} s`, ErrorCode.RateLimited, { retryAfter: wait }), {
          'retry-after': String(wait),
        }),
      };
    }
    return run(b, identity);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<boolean> => {
    if ((req.url ?? '').split('?')[0] !== '/graphql') return false;
    if (o.http === false) {
      req.resume();
      sendJson(res, 404, gqlError('this gateway serves subscriptions only: connect with graphql-ws', ErrorCode.BadUserInput));
      return true;
    }
    if (req.method !== 'POST') {
      req.resume();
      sendJson(res, 405, gqlError('use POST /graphql', ErrorCode.BadUserInput), { allow: 'POST' });
      return true;
    }
    const started = performance.now();
    let route = 'error';
    try {
      const out = await answer(req);
      route = out.route;
      const { reply } = out;
      res.writeHead(reply.status, {
        ...reply.headers,
        'x-rulr-route': route,
        'content-type': 'application/json; charset=utf-8',
        'content-length': String(Buffer.byteLength(reply.body)),
      });
      res.end(reply.body);
    } catch (e) {
      logger.error({ err: e }, 'gateway request failed');
      if (!res.headersSent) sendJson(res, 500, gqlError(production ? 'internal error' : (e as Error).message, ErrorCode.Internal));
    }
    requests.inc({ route });
    durations.observe({ route }, (performance.now() - started) / 1000);
    return true;
  };

  const server = new ServiceServer({
    name: 'gateway',
    port: o.port ?? cfg.GATEWAY_PORT,
    checks: {
      postgres: () => pingDb(ctx.db),
      redis: async () => {
        await ctx.redis.ping();
      },
    },
    handle,
  });
  let port: number;
  try {
    port = await server.listen();
  } catch (e) {
    await apollo.stop();
    client.close();
    throw e;
  }
  logger.info({ port, local: Object.keys(local), fastPath }, 'gateway listening');
  const printed = new WeakMap<DocumentNode, string>();
  const gw: GatewayHandle = {
    name: o.http === false ? 'realtime' : 'gateway',
    port,
    httpServer: server.server,
    apiSchema: () => router?.apiSchema,
    identify: (headers) => authenticator.identify(headers),
    identifyWithExpiry: (headers) => authenticator.identifyWithExpiry(headers),
    checkLimits: (document) => checkLimits(document, { ...limits, ...(router ? { schema: router.apiSchema } : {}) }),
    // WebSocket operations are authenticated identities (anonymous sockets are closed at connection_init)
    rateLimit: (identity) => limiter.consume(rateLimitKey(identity, undefined)),
    async execute(document, variables, operationName, identity) {
      let query = printed.get(document);
      if (!query) {
        query = print(document);
        printed.set(document, query);
      }
      const { reply } = await run({ query, variables, operationName }, identity);
      return JSON.parse(reply.body.toString()) as ExecutionResult;
    },
    onClose(fn) {
      closers.push(fn);
    },
    async close() {
      for (const fn of closers.splice(0).reverse())
        await fn().catch((e: unknown) => logger.warn({ err: e }, 'gateway add-on failed to close'));
      await server.close();
      await apollo.stop();
      client.close();
    },
  };
  if (o.realtime !== false) {
    const rt = attachRealtime(gw, cfg, logger);
    gw.realtime = rt;
    gw.onClose(() => rt.close());
  }
  return gw;
}
