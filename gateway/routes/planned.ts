import { executeQueryPlan, type GraphQLDataSource } from '@apollo/gateway';
import { GraphQLError, getVariableValues } from 'graphql';
import { ErrorCode } from '../../lib/errors.js';
import type { Identity } from '../../lib/identity.js';
import type { Logger } from '../../lib/logger.js';
import type { GatewayContext } from '../data-sources.js';
import type { OperationRouter, Route } from '../operations.js';
import type { ErrorFinalizer, Reply, RequestBody } from '../replies.js';
import { shapedVariables } from '../result-shaping.js';

export interface PlannedRouteOptions {
  /** The data sources of the schema the router was built from, by subgraph name. */
  services: () => Record<string, GraphQLDataSource<GatewayContext>>;
  finalizeError: ErrorFinalizer;
  logger: Logger;
}

export type PlannedRoute = (
  route: Extract<Route, { kind: 'planned' }>,
  r: OperationRouter,
  body: RequestBody,
  identity: Identity,
) => Promise<Reply | null>;

/**
 * The planned route: an operation spanning several subgraphs runs its cached plan through Apollo's
 * own `executeQueryPlan`, answered Apollo's way (errors enriched and formatted as Apollo Server
 * does), without the rest of Apollo Server's pipeline. `null`: variables that do not coerce (Apollo
 * answers those).
 */
export function plannedRoute(o: PlannedRouteOptions): PlannedRoute {
  return async (route, r, body, identity) => {
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
      logger: o.logger,
      metrics: {},
    };
    const result = await executeQueryPlan(
      route.plan,
      o.services(),
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
      return o.finalizeError({ ...g.toJSON(), extensions: { ...g.extensions, code: g.extensions.code ?? ErrorCode.Internal } });
    });
    return { status: 200, body: JSON.stringify({ errors, data: result.data, extensions: result.extensions }) };
  };
}
