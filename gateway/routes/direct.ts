import { type ExecutionResult, type GraphQLError, type GraphQLFormattedError, getVariableValues } from 'graphql';
import { IDENTITY_HEADER, type Identity } from '../../lib/identity.js';
import type { Logger } from '../../lib/logger.js';
import { executeSubgraph, type SubgraphModule } from '../../lib/subgraph.js';
import { type IdentitySigner, type SubgraphHttpClient, subgraphUnavailable } from '../data-sources.js';
import type { OperationRouter, Route } from '../operations.js';
import { type ErrorFinalizer, type Reply, type RequestBody, replyJson } from '../replies.js';

export interface DirectRouteOptions {
  /** Subgraphs in this process, called without HTTP. */
  local: Record<string, SubgraphModule>;
  /** Where the others are, by name. */
  urls: Record<string, string>;
  client: SubgraphHttpClient;
  signer: IdentitySigner;
  /** Mask internal errors (production). */
  mask: boolean;
  finalizeError: ErrorFinalizer;
  logger: Logger;
}

/** A mutation's answer when its subgraph could not answer: nothing, and the error naming the subgraph. */
const unavailable = (service: string, cause: unknown): Reply =>
  replyJson(200, { errors: [subgraphUnavailable(service, cause).toGraphQL().toJSON()], data: null });

/** A subgraph's error body, when it is GraphQL's JSON. */
function parseAnswer(body: Buffer): { errors: unknown[] } | null {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { errors?: unknown };
    return Array.isArray(parsed?.errors) ? { errors: parsed.errors } : null;
  } catch {
    return null;
  }
}

export type DirectRoute = (
  route: Extract<Route, { kind: 'direct' }>,
  r: OperationRouter,
  body: RequestBody,
  identity: Identity,
) => Promise<Reply | null>;

/**
 * The direct route: an operation one subgraph answers whole goes to it as the client wrote it, and
 * its answer (its bytes, when it has no errors) is the gateway's. `null`: let Apollo answer instead
 * (variables that do not coerce, a subgraph that could not be reached for a query).
 */
export function directRoute(o: DirectRouteOptions): DirectRoute {
  /** Shapes a subgraph result the way ApolloGateway + Apollo Server would. */
  const asGateway = (result: ExecutionResult | { data?: unknown; errors?: GraphQLFormattedError[] }, service: string): string => {
    const errors = result.errors?.map((e) => {
      const f = typeof (e as GraphQLError).toJSON === 'function' ? (e as GraphQLError).toJSON() : (e as GraphQLFormattedError);
      const extensions: Record<string, unknown> = { ...f.extensions, serviceName: service };
      if (extensions.code === undefined) extensions.code = 'DOWNSTREAM_SERVICE_ERROR';
      return o.finalizeError({ message: f.message, ...(f.path ? { path: f.path } : {}), extensions });
    });
    return JSON.stringify(errors ? { errors, data: result.data ?? null } : { data: result.data ?? null });
  };

  return async (route, r, body, identity) => {
    const variables = (body.variables ?? undefined) as Record<string, unknown> | undefined;
    const operationName = (body.operationName ?? undefined) as string | undefined;
    if (route.operation.variableDefinitions?.length) {
      // Coercion failures are answered by Apollo, so their shape and status are Apollo's.
      if (getVariableValues(r.apiSchema, route.operation.variableDefinitions, variables ?? {}).errors) return null;
    }
    const mod = o.local[route.service];
    if (mod) {
      const result = await executeSubgraph(mod, route.document, variables, operationName, identity, o.mask);
      return { status: 200, body: asGateway(result, route.service) };
    }
    const url = o.urls[route.service];
    if (!url) return null;
    let res: Awaited<ReturnType<SubgraphHttpClient['post']>>;
    try {
      // the bytes signed are the bytes sent
      const payload = JSON.stringify({ query: body.query, variables, operationName });
      res = await o.client.post(url, payload, { [IDENTITY_HEADER]: o.signer.sign(identity, url, payload) });
    } catch (e) {
      // Nothing was answered: a query is retried through Apollo (whose data source reports the failure
      // as SUBGRAPH_UNAVAILABLE, each root field null); a mutation is not repeated.
      if (route.operation.operation === 'query') return null;
      o.logger.error({ err: e, service: route.service }, 'subgraph request failed');
      return unavailable(route.service, e);
    }
    if (res.status !== 200) {
      if (route.operation.operation === 'query') return null;
      const answer = parseAnswer(res.body);
      if (res.status === 400 && answer) return replyJson(200, answer);
      o.logger.error({ status: res.status, service: route.service }, 'subgraph answered a mutation with an HTTP error');
      return unavailable(route.service, { extensions: { response: { status: res.status } } });
    }
    // The common case, no errors: the subgraph's bytes are the answer.
    if (res.body.indexOf('"errors"') < 0) return { status: 200, body: res.body };
    return { status: 200, body: asGateway(JSON.parse(res.body.toString('utf8')), route.service) };
  };
}
