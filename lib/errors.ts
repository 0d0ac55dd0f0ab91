import { GraphQLError } from 'graphql';

/** Stable codes clients may rely on; sent as GraphQL `extensions.code`. */
export enum ErrorCode {
  BadUserInput = 'BAD_USER_INPUT',
  Unauthenticated = 'UNAUTHENTICATED',
  Forbidden = 'FORBIDDEN',
  NotFound = 'NOT_FOUND',
  Conflict = 'CONFLICT',
  RateLimited = 'RATE_LIMITED',
  QueryTooDeep = 'QUERY_TOO_DEEP',
  TooManyAliases = 'TOO_MANY_ALIASES',
  QueryTooCostly = 'QUERY_TOO_COSTLY',
  PayloadTooLarge = 'PAYLOAD_TOO_LARGE',
  BatchingDisabled = 'BATCHING_DISABLED',
  Timeout = 'TIMEOUT',
  /** A subgraph could not be reached or gave no usable answer; `extensions.subgraph` names it. */
  SubgraphUnavailable = 'SUBGRAPH_UNAVAILABLE',
  ParseFailed = 'GRAPHQL_PARSE_FAILED',
  ValidationFailed = 'GRAPHQL_VALIDATION_FAILED',
  Internal = 'INTERNAL_SERVER_ERROR',
}

/**
 * WebSocket close codes RULR uses besides graphql-ws's own (4400 bad request, 4406 subprotocol,
 * 4408 init timeout, 4409 duplicate subscriber, 4429 repeated init, 4500 internal).
 */
export const CloseCode = {
  /** no or invalid credentials in `connection_init` */
  Unauthorized: 4401,
  /** the credentials were valid but expired, or were revoked, while connected */
  Forbidden: 4403,
  /** the client read too slowly and events that must not be dropped piled up past the limit */
  SlowConsumer: 4008,
} as const;

const HTTP_STATUS: Partial<Record<ErrorCode, number>> = {
  [ErrorCode.Unauthenticated]: 401,
  [ErrorCode.Forbidden]: 403,
  [ErrorCode.RateLimited]: 429,
  [ErrorCode.PayloadTooLarge]: 413,
  [ErrorCode.Timeout]: 504,
};

/** Base of every error RULR raises on purpose; anything else is internal and masked. */
export class RulrError extends Error {
  constructor(
    public readonly code: ErrorCode,
    message: string,
    public readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = new.target.name;
  }
  get httpStatus(): number {
    return HTTP_STATUS[this.code] ?? 400;
  }
  toGraphQL(): GraphQLError {
    return new GraphQLError(this.message, { extensions: { code: this.code, ...this.details } });
  }
}

export class BadInputError extends RulrError {
  constructor(message: string, details?: Record<string, unknown>) {
    super(ErrorCode.BadUserInput, message, details);
  }
}
export class UnauthenticatedError extends RulrError {
  constructor(message = 'authentication required') {
    super(ErrorCode.Unauthenticated, message);
  }
}
export class ForbiddenError extends RulrError {
  constructor(message = 'not allowed') {
    super(ErrorCode.Forbidden, message);
  }
}
export class NotFoundError extends RulrError {
  constructor(what: string) {
    super(ErrorCode.NotFound, `${what} not found`);
  }
}
export class ConflictError extends RulrError {
  constructor(message: string) {
    super(ErrorCode.Conflict, message);
  }
}

/**
 * A message or stored value that breaks its contract between roles (`lib/contracts/`): not JSON,
 * a missing field, a wrong type. `contract` names the contract, `reason` says what is wrong without
 * echoing the input. Internal (a client never sends these), so it maps to INTERNAL_SERVER_ERROR.
 */
export class ContractError extends RulrError {
  constructor(
    readonly contract: string,
    readonly reason: string,
  ) {
    super(ErrorCode.Internal, `${contract}: ${reason}`);
  }
}

/**
 * A subgraph could not answer (connection refused or reset, no answer in time, an answer that is not
 * GraphQL). The message and `extensions.subgraph` name it, and never its address: clients learn which
 * part of their answer is missing, not how the platform is laid out.
 */
export class SubgraphUnavailableError extends RulrError {
  constructor(
    readonly subgraph: string,
    why = 'could not be reached',
  ) {
    super(ErrorCode.SubgraphUnavailable, `the ${subgraph} subgraph is unavailable: it ${why}`, { subgraph });
  }
}

/**
 * The one place errors become what a client sees: RulrErrors keep their code, GraphQL errors with a
 * code pass, anything else becomes INTERNAL_SERVER_ERROR without its message when `mask` is on.
 */
export function formatError(err: GraphQLError, mask: boolean): GraphQLError {
  const orig = err.originalError;
  if (orig instanceof RulrError) {
    return new GraphQLError(orig.message, {
      ...(err.path ? { path: err.path } : {}),
      ...(err.locations ? { nodes: undefined } : {}),
      extensions: { code: orig.code, ...orig.details },
    });
  }
  if (err.extensions?.code && (!orig || orig instanceof GraphQLError)) return err;
  if (!orig) {
    // Parse/validation errors thrown by graphql-js itself carry no original error.
    return new GraphQLError(err.message, {
      ...(err.path ? { path: err.path } : {}),
      extensions: { code: ErrorCode.ValidationFailed },
    });
  }
  if (orig instanceof GraphQLError && !err.path) {
    // graphql-js variable coercion (unknown enum value, wrong type) fails the request, not the server.
    return new GraphQLError(err.message, { extensions: { code: ErrorCode.BadUserInput } });
  }
  return new GraphQLError(mask ? 'internal error' : err.message, {
    ...(err.path ? { path: err.path } : {}),
    extensions: { code: ErrorCode.Internal },
  });
}
