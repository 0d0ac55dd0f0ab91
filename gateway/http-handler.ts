import type { IncomingMessage, ServerResponse } from 'node:http';
import { ErrorCode, RulrError } from '../lib/errors.js';
import { sendJson } from '../lib/http.js';
import type { Identity } from '../lib/identity.js';
import type { Logger } from '../lib/logger.js';
import { counter, histogram } from '../lib/metrics.js';
import type { Authenticator } from './authenticate.js';
import { type GatewayRateLimiter, rateLimitKey } from './rate-limit.js';
import { gqlError, replyJson } from './replies.js';
import { decodeRequest } from './request.js';
import type { Dispatch, Routed } from './routes/dispatch.js';

const requests = counter('rulr_gateway_requests_total', 'GraphQL requests by route (direct, apollo, refused)', ['route']);
const durations = histogram(
  'rulr_gateway_request_duration_seconds',
  'GraphQL request duration by route',
  ['route'],
  [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15],
);

export interface GraphQLHttpOptions {
  /** false: the WebSocket-only role, which refuses HTTP operations. */
  http: boolean;
  maxBodyBytes: number;
  authenticator: Authenticator;
  limiter: GatewayRateLimiter;
  dispatch: Dispatch;
  /** Mask internal errors (production). */
  mask: boolean;
  logger: Logger;
}

/**
 * POST /graphql: decodes the body, authenticates, rate-limits, dispatches, and writes the answer
 * with its route in `x-rulr-route` (counted and timed by route). Other paths are not its own.
 */
export function graphqlHttpHandler(o: GraphQLHttpOptions): (req: IncomingMessage, res: ServerResponse) => Promise<boolean> {
  const answer = async (req: IncomingMessage): Promise<Routed> => {
    const decoded = await decodeRequest(req, o.maxBodyBytes);
    if (decoded.refused) return { route: 'refused', reply: decoded.refused };
    let identity: Identity;
    try {
      identity = await o.authenticator.identify(req.headers);
    } catch (e) {
      if (e instanceof RulrError) return { route: 'refused', reply: replyJson(e.httpStatus, { errors: [e.toGraphQL().toJSON()] }) };
      throw e;
    }
    const wait = await o.limiter.consume(rateLimitKey(identity, req.socket.remoteAddress));
    if (wait !== null) {
      return {
        route: 'refused',
        reply: replyJson(429, gqlError(`rate limit exceeded: retry in ${wait} s`, ErrorCode.RateLimited, { retryAfter: wait }), {
          'retry-after': String(wait),
        }),
      };
    }
    return o.dispatch(decoded.body, identity);
  };

  return async (req, res) => {
    if ((req.url ?? '').split('?')[0] !== '/graphql') return false;
    if (!o.http) {
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
      o.logger.error({ err: e }, 'gateway request failed');
      if (!res.headersSent) sendJson(res, 500, gqlError(o.mask ? 'internal error' : (e as Error).message, ErrorCode.Internal));
    }
    requests.inc({ route });
    durations.observe({ route }, (performance.now() - started) / 1000);
    return true;
  };
}
