import type { IncomingHttpHeaders, Server } from 'node:http';
import type { DocumentNode, ExecutionResult, GraphQLError, GraphQLSchema } from 'graphql';
import type { Config } from '../../lib/config.js';
import type { Identity } from '../../lib/identity.js';
import type { Logger } from '../../lib/logger.js';
import { createRedis } from '../../lib/redis.js';
import type { SessionEvents } from '../sessions.js';
import { RealtimeServer } from './server.js';

/** What the gateway lends the real-time server: its schema, identity, limits and executor. */
export interface GatewayCapabilities {
  httpServer: Server;
  apiSchema(): GraphQLSchema | undefined;
  identifyWithExpiry(headers: IncomingHttpHeaders): Promise<{ identity: Identity; expiresAt?: number }>;
  /** Ended sign-in sessions, to close their WebSockets at once. */
  sessions?: SessionEvents;
  checkLimits(document: DocumentNode): GraphQLError | null;
  /** Counts one operation against the identity's rate limit: null when allowed, else seconds to wait. */
  rateLimit(identity: Identity): Promise<number | null>;
  execute(
    document: DocumentNode,
    variables: Record<string, unknown> | undefined,
    operationName: string | undefined,
    identity: Identity,
  ): Promise<ExecutionResult>;
}

const str = (v: unknown) => (typeof v === 'string' && v.length ? v : undefined);

/**
 * Credentials in `connection_init`: `{ authorization: "Bearer …" }`, `{ token }` or `{ apiKey }`;
 * without them, the upgrade request's own `Authorization`/`x-api-key` headers (server-side clients).
 */
export function credentialsFrom(payload: Record<string, unknown> | undefined, upgrade: IncomingHttpHeaders): IncomingHttpHeaders {
  const p = payload ?? {};
  const token = str(p.token);
  const authorization = str(p.authorization) ?? str(p.Authorization) ?? (token ? `Bearer ${token}` : undefined);
  const apiKey = str(p.apiKey) ?? str(p['x-api-key']);
  if (authorization || apiKey) return { ...(authorization ? { authorization } : {}), ...(apiKey ? { 'x-api-key': apiKey } : {}) };
  return {
    ...(upgrade.authorization ? { authorization: upgrade.authorization } : {}),
    ...(upgrade['x-api-key'] ? { 'x-api-key': upgrade['x-api-key'] } : {}),
  };
}

/** Serves graphql-ws on the gateway's port and `/graphql`, fed by Redis events (docs/realtime.md). */
export function attachRealtime(gw: GatewayCapabilities, cfg: Config, logger: Logger): RealtimeServer {
  return new RealtimeServer(gw.httpServer, {
    path: '/graphql',
    schema: () => gw.apiSchema(),
    authenticate: (payload, req) => gw.identifyWithExpiry(credentialsFrom(payload, req.headers)),
    execute: (document, variables, operationName, identity) => gw.execute(document, variables, operationName, identity),
    checkLimits: (document) => gw.checkLimits(document),
    rateLimit: (identity) => gw.rateLimit(identity),
    redisSubscriber: createRedis(cfg.REDIS_URL),
    redisPrefix: cfg.REDIS_PREFIX,
    logger: logger.child({ component: 'realtime' }),
    maxSubscriptionsPerConnection: cfg.REALTIME_MAX_SUBSCRIPTIONS,
    softBufferBytes: cfg.REALTIME_SOFT_BUFFER_BYTES,
    hardBufferBytes: cfg.REALTIME_HARD_BUFFER_BYTES,
    keepAliveMs: cfg.REALTIME_KEEPALIVE_MS,
    credentialRecheckMs: cfg.GATEWAY_CREDENTIAL_RECHECK_MS,
    ...(gw.sessions ? { sessions: gw.sessions } : {}),
    mask: cfg.NODE_ENV === 'production',
  });
}
