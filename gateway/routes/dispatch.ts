import { ErrorCode } from '../../lib/errors.js';
import type { Identity } from '../../lib/identity.js';
import type { OperationRouter } from '../operations.js';
import { gqlError, type Reply, type RequestBody, replyJson } from '../replies.js';
import type { ApolloRoute } from './apollo.js';
import type { DirectRoute } from './direct.js';
import type { PlannedRoute } from './planned.js';

/** An answer and the route that gave it (`direct`, `planned`, `apollo`, `refused`, `timeout`: the metrics label). */
export interface Routed {
  reply: Reply;
  route: string;
}

/** Runs one operation of an authenticated, rate-limited identity. */
export type Dispatch = (body: RequestBody, identity: Identity) => Promise<Routed>;

class TimeoutSignal {}

/**
 * Picks the route of an operation (cached per query text by the router) and runs it, falling back
 * to Apollo when a fast route declines; the whole run is bounded by `timeoutMs`.
 */
export function dispatcher(o: {
  router: () => OperationRouter | undefined;
  direct: DirectRoute;
  planned: PlannedRoute;
  apollo: ApolloRoute;
  timeoutMs: number;
}): Dispatch {
  const withTimeout = async <T>(p: Promise<T>): Promise<T | TimeoutSignal> => {
    let timer: NodeJS.Timeout | undefined;
    const t = new Promise<TimeoutSignal>((resolve) => {
      timer = setTimeout(() => resolve(new TimeoutSignal()), o.timeoutMs);
    });
    try {
      return await Promise.race([p, t]);
    } finally {
      clearTimeout(timer);
    }
  };

  return async (b, identity) => {
    const r = o.router();
    if (!r) return { route: 'refused', reply: replyJson(503, gqlError('gateway is starting', ErrorCode.Internal)) };
    const route = r.route(b.query as string, (b.operationName ?? undefined) as string | undefined);
    if (route.kind === 'refuse') return { route: 'refused', reply: replyJson(route.status, { errors: [route.error.toJSON()] }) };
    const work = (async () => {
      if (route.kind === 'direct') {
        const reply = await o.direct(route, r, b, identity);
        if (reply) return { route: 'direct', reply };
      } else if (route.kind === 'planned') {
        const reply = await o.planned(route, r, b, identity);
        if (reply) return { route: 'planned', reply };
      }
      return { route: 'apollo', reply: await o.apollo.run(b, identity) };
    })();
    const out = await withTimeout(work);
    if (out instanceof TimeoutSignal) {
      work.catch(() => undefined);
      return {
        route: 'timeout',
        reply: replyJson(504, gqlError(`request timed out after ${o.timeoutMs} ms`, ErrorCode.Timeout)),
      };
    }
    return out;
  };
}
