import { operationFromDocument, Supergraph } from '@apollo/federation-internals';
import { buildOperationContext } from '@apollo/gateway';
import { type QueryPlan, QueryPlanner } from '@apollo/query-planner';
import {
  BREAK,
  type DocumentNode,
  GraphQLError,
  type GraphQLSchema,
  getOperationAST,
  Kind,
  type OperationDefinitionNode,
  parse,
  specifiedRules,
  validate,
  visit,
} from 'graphql';
import { LRUCache } from 'lru-cache';

type OperationContext = ReturnType<typeof buildOperationContext>;

import { ErrorCode } from '../lib/errors.js';
import { checkLimits, type QueryLimits } from './limits.js';
import { compileShaper, type Shaper } from './result-shaping.js';

/** How the gateway answers one operation text (cached per query text + operation name). */
export type Route =
  /** Refused before execution (limits, introspection). */
  | { kind: 'refuse'; error: GraphQLError; status: number }
  /** The whole operation lives in one subgraph: send the client's document straight there. */
  | { kind: 'direct'; service: string; document: DocumentNode; operation: OperationDefinitionNode }
  /**
   * Several fetches: the cached plan runs through Apollo's own `executeQueryPlan`, without the rest
   * of Apollo Server's per-request pipeline.
   */
  | {
      kind: 'planned';
      plan: QueryPlan;
      operationContext: OperationContext;
      operation: OperationDefinitionNode;
      /** the response shaping compiled for this operation (null: Apollo's `computeResponse` runs) */
      shaper: Shaper | null;
    }
  /** Everything else (parse/validation errors, introspection, subscriptions, @defer): Apollo's pipeline. */
  | { kind: 'apollo'; reason: string };

export interface OperationRouterOptions {
  limits: QueryLimits;
  /** Allow `__schema` / `__type`. */
  introspection: boolean;
  /**
   * Subgraphs the fast path may call directly, each with the schema a direct operation must
   * validate against (`null`: the schema extracted from the supergraph, for remote subgraphs). A
   * subgraph missing here is always reached through Apollo.
   */
  direct: Map<string, GraphQLSchema | null>;
  /** Run multi-fetch plans with `executeQueryPlan` directly (else: through Apollo Server). @default false */
  planned?: boolean;
  /** Distinct operations remembered. @default 2000 */
  cacheSize?: number;
  /** Total query text (characters) the cache may hold, so unique huge queries cannot exhaust memory. @default 4_000_000 */
  cacheChars?: number;
}

/**
 * Plans each distinct operation once: parse, limits, validation against the API schema and a query
 * plan from `@apollo/query-planner` on the same supergraph the gateway serves. An operation whose
 * plan is a single fetch (no `requires`, no rewrites) from one subgraph, and which validates against
 * that subgraph's schema, takes the direct route; everything else goes through ApolloGateway.
 */
export class OperationRouter {
  readonly supergraph: Supergraph;
  /** The client-facing schema (graphql-js), for validation and variable coercion. */
  readonly apiSchema: GraphQLSchema;
  /** The API schema as federation-internals models it (what `executeQueryPlan` wants). */
  readonly fedApiSchema;
  /** The supergraph schema (graphql-js), for `executeQueryPlan`'s data rewrites. */
  readonly supergraphSchema: GraphQLSchema;
  private readonly planner: QueryPlanner;
  private readonly cache: LRUCache<string, Route>;
  private readonly limits: QueryLimits;
  private readonly subgraphSchemas = new Map<string, GraphQLSchema>();

  constructor(
    supergraphSdl: string,
    private readonly o: OperationRouterOptions,
  ) {
    this.supergraph = Supergraph.build(supergraphSdl);
    this.fedApiSchema = this.supergraph.apiSchema();
    this.supergraphSchema = this.supergraph.schema.toGraphQLJSSchema();
    this.apiSchema = this.fedApiSchema.toGraphQLJSSchema();
    this.planner = new QueryPlanner(this.supergraph);
    this.cache = new LRUCache({
      max: o.cacheSize ?? 2000,
      maxSize: o.cacheChars ?? 4_000_000,
      sizeCalculation: (_v, key) => key.length + 1,
    });
    this.limits = { ...o.limits, schema: this.apiSchema };
    for (const s of this.supergraph.subgraphs()) {
      if (!o.direct.has(s.name)) continue;
      this.subgraphSchemas.set(s.name, o.direct.get(s.name) ?? s.schema.toGraphQLJSSchema());
    }
  }

  route(query: string, operationName: string | undefined): Route {
    const key = operationName ? `${operationName}\u0000${query}` : query;
    let r = this.cache.get(key);
    if (!r) {
      r = this.plan(query, operationName);
      this.cache.set(key, r);
    }
    return r;
  }

  private plan(query: string, operationName: string | undefined): Route {
    let document: DocumentNode;
    try {
      document = parse(query);
    } catch {
      return { kind: 'apollo', reason: 'parse error' };
    }
    const limitError = checkLimits(document, this.limits);
    if (limitError) return { kind: 'refuse', error: limitError, status: 400 };
    const introspects = usesIntrospection(document);
    if (introspects && !this.o.introspection) {
      return {
        kind: 'refuse',
        status: 403,
        error: new GraphQLError('introspection is disabled on this server (GATEWAY_INTROSPECTION)', {
          extensions: { code: ErrorCode.Forbidden },
        }),
      };
    }
    if (introspects) return { kind: 'apollo', reason: 'introspection' };
    if (validate(this.apiSchema, document, specifiedRules).length > 0) return { kind: 'apollo', reason: 'invalid' };
    const operation = getOperationAST(document, operationName);
    if (!operation) return { kind: 'apollo', reason: 'no operation' };
    if (operation.operation === 'subscription') return { kind: 'apollo', reason: 'subscription' };
    let plan: QueryPlan;
    try {
      plan = this.planner.buildQueryPlan(operationFromDocument(this.fedApiSchema, document, { operationName }));
    } catch {
      return { kind: 'apollo', reason: 'planning failed' };
    }
    const fetch = plan.node as
      | {
          kind: string;
          serviceName: string;
          requires?: unknown[];
          inputRewrites?: unknown[];
          outputRewrites?: unknown[];
          contextRewrites?: unknown[];
          hasDefers?: boolean;
        }
      | undefined;
    if (!fetch) return { kind: 'apollo', reason: 'nothing to fetch' };
    if (fetch.kind !== 'Fetch') {
      if (!this.o.planned || hasNode(plan.node, 'Defer') || hasNode(plan.node, 'Subscription'))
        return { kind: 'apollo', reason: 'several fetches' };
      const operationContext = buildOperationContext({ schema: this.apiSchema, operationDocument: document, operationName });
      return {
        kind: 'planned',
        plan,
        operation,
        operationContext,
        shaper: compileShaper(this.apiSchema, operationContext.operation, operationContext.fragments),
      };
    }
    if (
      fetch.requires?.length ||
      fetch.inputRewrites?.length ||
      fetch.outputRewrites?.length ||
      fetch.contextRewrites?.length ||
      fetch.hasDefers
    ) {
      return { kind: 'apollo', reason: 'fetch needs rewrites' };
    }
    const schema = this.subgraphSchemas.get(fetch.serviceName);
    if (!schema) return { kind: 'apollo', reason: 'subgraph not direct' };
    if (validate(schema, document, specifiedRules).length > 0) return { kind: 'apollo', reason: 'not valid in subgraph' };
    return { kind: 'direct', service: fetch.serviceName, document, operation };
  }
}

function hasNode(node: unknown, kind: string): boolean {
  if (!node || typeof node !== 'object') return false;
  const n = node as Record<string, unknown>;
  if (n.kind === kind) return true;
  return Object.values(n).some((v) =>
    Array.isArray(v) ? v.some((x) => hasNode(x, kind)) : typeof v === 'object' && v !== null && 'kind' in v && hasNode(v, kind),
  );
}

/** Whether any selection asks for `__schema` or `__type` (fragments included). */
export function usesIntrospection(document: DocumentNode): boolean {
  let found = false;
  visit(document, {
    [Kind.FIELD](node) {
      if (node.name.value === '__schema' || node.name.value === '__type') {
        found = true;
        return BREAK;
      }
      return undefined;
    },
  });
  return found;
}
