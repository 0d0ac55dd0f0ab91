import type { GraphQLFormattedError } from 'graphql';
import { ErrorCode } from '../lib/errors.js';

/** One HTTP answer of the gateway: status, JSON body (text or a subgraph's own bytes), extra headers. */
export interface Reply {
  status: number;
  body: string | Buffer;
  headers?: Record<string, string>;
}

/** A request's JSON body once decoded and checked (`query` a non-empty string, `variables` an object). */
export type RequestBody = Record<string, unknown>;

/** The JSON of an answer made of one error. */
export const gqlError = (message: string, code: ErrorCode, extra: Record<string, unknown> = {}) => ({
  errors: [{ message, extensions: { code, ...extra } }],
});

export const replyJson = (status: number, body: unknown, headers?: Record<string, string>): Reply => ({
  status,
  body: JSON.stringify(body),
  ...(headers ? { headers } : {}),
});

/** What every route does to an error before it leaves the gateway. */
export type ErrorFinalizer = (e: GraphQLFormattedError) => GraphQLFormattedError;

/**
 * In production: internal errors lose their message, and no error carries Apollo's `serviceName`,
 * `stacktrace` or `exception` extensions. Otherwise errors pass unchanged.
 */
export function errorFinalizer(production: boolean): ErrorFinalizer {
  return (e) => {
    if (!production) return e;
    const { serviceName: _s, stacktrace: _t, exception: _x, ...extensions } = e.extensions ?? {};
    const internal = extensions.code === ErrorCode.Internal || extensions.code === undefined;
    return { ...e, message: internal ? 'internal error' : e.message, extensions };
  };
}
