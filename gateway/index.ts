import type { IncomingHttpHeaders } from 'node:http';
import { type DocumentNode, type ExecutionResult, print } from 'graphql';
import { TokenVerifier } from '../lib/auth.js';
import { subgraphUrls } from '../lib/config.js';
import { pingDb } from '../lib/db.js';
import { ServiceServer } from '../lib/http.js';
import type { Identity } from '../lib/identity.js';
import { createRedis } from '../lib/redis.js';
import type { RoleContext, RoleHandle } from '../lib/role.js';
import type { SubgraphModule } from '../lib/subgraph.js';
import { Authenticator } from './authenticate.js';
import { IdentitySigner, SubgraphHttpClient } from './data-sources.js';
import { federatedGraph } from './graph.js';
import { graphqlHttpHandler } from './http-handler.js';
import { checkLimits } from './limits.js';
import { GatewayRateLimiter, rateLimitKey } from './rate-limit.js';
import { attachRealtime, type GatewayCapabilities } from './realtime/attach.js';
import type { RealtimeServer } from './realtime/server.js';
import { errorFinalizer } from './replies.js';
import { installShaping } from './result-shaping.js';
import { startApolloRoute } from './routes/apollo.js';
import { consoleRoute, defaultConsoleDir } from './routes/console.js';
import { directRoute } from './routes/direct.js';
import { dispatcher } from './routes/dispatch.js';
import { plannedRoute } from './routes/planned.js';
import { SessionGuard } from './sessions.js';

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

/**
 * What the running gateway offers beside its port: the HTTP server (graphql-ws attaches to its
 * `upgrade` event) and the same identity, limits and execution HTTP requests get.
 */
export interface GatewayHandle extends RoleHandle, GatewayCapabilities {
  /** Credentials from headers (`authorization`, `x-api-key`) → Identity; throws UNAUTHENTICATED. */
  identify(headers: IncomingHttpHeaders): Promise<Identity>;
  /** The check that tokens' sign-in sessions live (and the notices of those that end). */
  sessions: SessionGuard;
  /** The graphql-ws server, when `realtime` is on. */
  realtime?: RealtimeServer;
  /** Registers a cleanup run first on `close()` (e.g. the WebSocket server). */
  onClose(fn: () => Promise<void>): void;
}

/**
 * The federated gateway: authentication, limits and rate limiting in front (`http-handler.ts`), then
 * one of three routes (`routes/`): direct to the one subgraph that answers an operation, Apollo's
 * `executeQueryPlan` for a cached multi-subgraph plan, or Apollo Server over ApolloGateway for
 * everything else; all inside RULR's ServiceServer, so /healthz, /readyz and /metrics share the port.
 */
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
  const sessions = new SessionGuard(ctx.redis, createRedis(cfg.REDIS_URL), cfg.REDIS_PREFIX, logger, { cacheMs: cfg.SESSION_CACHE_MS });
  sessions.start();
  const authenticator = new Authenticator(
    ctx.db,
    new TokenVerifier({
      secret: cfg.RULR_SECRET,
      previousSecrets: cfg.RULR_SECRET_PREVIOUS,
      issuer: cfg.JWT_ISSUER,
      ttlSeconds: cfg.JWT_TTL_SECONDS,
      jwksUrl: cfg.JWKS_URL,
    }),
    logger,
    { apiKeyCacheMs: cfg.GATEWAY_CREDENTIAL_RECHECK_MS, sessions },
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
  const finalizeError = errorFinalizer(production);

  const graph = federatedGraph({
    local,
    urls,
    signer,
    client,
    mask: production,
    limits,
    introspection,
    fastPath,
    introspectAndCompose: cfg.GATEWAY_DEV_INTROSPECT,
    supergraphSdl: o.supergraphSdl,
    logger,
  });
  const apollo = await startApolloRoute({ gateway: graph.gateway, introspection, finalizeError });
  const direct = directRoute({ local, urls, client, signer, mask: production, finalizeError, logger });
  const planned = plannedRoute({ services: graph.services, finalizeError, logger });

  const run = dispatcher({ router: graph.router, direct, planned, apollo, timeoutMs: cfg.GATEWAY_TIMEOUT_MS });
  const handle = graphqlHttpHandler({
    http: o.http !== false,
    maxBodyBytes: cfg.GATEWAY_MAX_BODY_BYTES,
    authenticator,
    limiter,
    dispatch: run,
    mask: production,
    logger,
  });

  // the operations console (static files) beside /graphql, on the HTTP gateway only
  const serveConsole =
    o.http !== false && cfg.CONSOLE_ENABLED
      ? consoleRoute({ dir: cfg.CONSOLE_DIR ?? defaultConsoleDir(), tileUrl: cfg.CONSOLE_TILE_URL, logger })
      : null;
  const server = new ServiceServer({
    name: 'gateway',
    port: o.port ?? cfg.GATEWAY_PORT,
    checks: {
      postgres: () => pingDb(ctx.db),
      redis: async () => {
        await ctx.redis.ping();
      },
    },
    handle: serveConsole ? async (req, res) => (await handle(req, res)) || serveConsole(req, res) : handle,
  });
  let port: number;
  try {
    port = await server.listen();
  } catch (e) {
    await apollo.stop();
    client.close();
    await sessions.close();
    throw e;
  }
  logger.info({ port, local: Object.keys(local), fastPath }, 'gateway listening');
  const printed = new WeakMap<DocumentNode, string>();
  const gw: GatewayHandle = {
    name: o.http === false ? 'realtime' : 'gateway',
    port,
    httpServer: server.server,
    apiSchema: () => graph.router()?.apiSchema,
    identify: (headers) => authenticator.identify(headers),
    identifyWithExpiry: (headers) => authenticator.identifyWithExpiry(headers),
    sessions,
    checkLimits: (document) => {
      const router = graph.router();
      return checkLimits(document, { ...limits, ...(router ? { schema: router.apiSchema } : {}) });
    },
    // WebSocket operations are authenticated identities (anonymous sockets are closed at connection_init)
    rateLimit: (identity) => limiter.consume(rateLimitKey(identity, undefined)),
    async execute(document, variables, operationName, identity) {
      let query = printed.get(document);
      if (!query) {
        query = print(document);
        printed.set(document, query);
      }
      // Apollo refuses a body whose operationName is present but not a string (the fallback route)
      const { reply } = await run({ query, variables, ...(operationName !== undefined ? { operationName } : {}) }, identity);
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
      await sessions.close();
    },
  };
  if (o.realtime !== false) {
    const rt = attachRealtime(gw, cfg, logger);
    gw.realtime = rt;
    gw.onClose(() => rt.close());
  }
  return gw;
}
