import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  type DocumentNode,
  type ExecutionResult,
  execute,
  GraphQLError,
  type GraphQLSchema,
  getOperationAST,
  parse,
  specifiedRules,
  validate,
} from 'graphql';
import { type CompiledQuery, compileQuery, isCompiledQuery } from 'graphql-jit';
import { LRUCache } from 'lru-cache';
import { ErrorCode, formatError, type RulrError } from './errors.js';
import { BodyTooLargeError, readBody, sendJson } from './http.js';
import { IDENTITY_HEADER, type Identity, verifyIdentity } from './identity.js';

/** A built subgraph: its executable schema and a per-request context factory. */
export interface SubgraphModule<C = unknown> {
  name: string;
  schema: GraphQLSchema;
  /** A fresh context (DataLoaders included) for one request. */
  context(identity: Identity): C;
}

/**
 * What every `subgraphs/<name>/index.ts` exports, under these names: the CLI loads a subgraph of
 * `lib/subgraphs.ts` by its folder and calls `createSubgraph`.
 */
export interface SubgraphPackage {
  /** The subgraph's SDL (`schema.graphql` beside the module), parsed. */
  typeDefs: DocumentNode;
  createSubgraph(ctx: import('./role.js').RoleContext): SubgraphModule;
}

/**
 * The `schema.graphql` beside a subgraph's module (`import.meta.url`), parsed; the build copies the
 * file next to the compiled module, so this works from sources and from `dist/`.
 */
export function readTypeDefs(moduleUrl: string): DocumentNode {
  return parse(readFileSync(new URL('./schema.graphql', moduleUrl), 'utf8'));
}

export interface GraphQLRequestBody {
  query?: unknown;
  variables?: unknown;
  operationName?: unknown;
}

/**
 * Parses and validates once per distinct query text (LRU), so the per-request cost of a repeated
 * dashboard query is execution only.
 */
export class DocumentCache {
  private readonly cache = new LRUCache<string, { doc?: DocumentNode; errors?: readonly GraphQLError[] }>({ max: 1000 });
  constructor(private readonly schema: GraphQLSchema) {}
  get(query: string): { doc?: DocumentNode; errors?: readonly GraphQLError[] } {
    let hit = this.cache.get(query);
    if (!hit) {
      try {
        const doc = parse(query);
        const errors = validate(this.schema, doc, specifiedRules);
        hit = errors.length ? { errors } : { doc };
      } catch (e) {
        hit = { errors: [e as GraphQLError] };
      }
      this.cache.set(query, hit);
    }
    return hit;
  }
}

/** Compiled queries by schema, document and operation name; `null`: graphql-jit could not compile it. */
const compiledQueries = new WeakMap<GraphQLSchema, WeakMap<DocumentNode, Map<string, CompiledQuery | null>>>();

/**
 * The query operation of `doc` compiled once by graphql-jit (kept as long as the document is, so
 * DocumentCache's LRU bounds it), or `null` for mutations, subscriptions and what it cannot compile.
 */
function compiled(schema: GraphQLSchema, doc: DocumentNode, operationName: string | undefined): CompiledQuery | null {
  let byDoc = compiledQueries.get(schema);
  if (!byDoc) {
    byDoc = new WeakMap();
    compiledQueries.set(schema, byDoc);
  }
  let byOp = byDoc.get(doc);
  if (!byOp) {
    byOp = new Map();
    byDoc.set(doc, byOp);
  }
  const key = operationName ?? '';
  let c = byOp.get(key);
  if (c === undefined) {
    c = null;
    if (getOperationAST(doc, operationName)?.operation === 'query') {
      try {
        const q = compileQuery(schema, doc, operationName, { disablingCapturingStackErrors: true });
        if (isCompiledQuery(q)) c = q;
      } catch {
        // graphql-js executes what graphql-jit does not support
      }
    }
    byOp.set(key, c);
  }
  return c;
}

/**
 * Executes one operation. Queries run as compiled by graphql-jit (several times cheaper than
 * graphql-js's interpreter on a page of devices); a query whose compiled run reports any error is
 * executed again by graphql-js, so errors (messages, codes, paths, partial data) are exactly
 * graphql-js's, and queries are read-only, so running one twice changes nothing. Mutations always
 * run in graphql-js.
 */
export async function executeSubgraph(
  mod: SubgraphModule,
  doc: DocumentNode,
  variables: Record<string, unknown> | undefined,
  operationName: string | undefined,
  identity: Identity,
  mask: boolean,
): Promise<ExecutionResult> {
  const jit = compiled(mod.schema, doc, operationName);
  if (jit) {
    try {
      const fast = await jit.query(undefined, mod.context(identity), variables ?? {});
      if (!fast.errors) return fast;
    } catch {
      // a failure of the compiled code itself: graphql-js answers
    }
  }
  const result = await execute({
    schema: mod.schema,
    document: doc,
    variableValues: variables ?? null,
    operationName: operationName ?? null,
    contextValue: mod.context(identity),
  });
  return result.errors ? { ...result, errors: result.errors.map((e) => formatError(e, mask)) } : result;
}

/** Serves a subgraph at POST /graphql; requests without a valid gateway identity are refused. */
export function subgraphHandler(mod: SubgraphModule, opts: { secret: string; mask: boolean; bodyLimit?: number }) {
  const docs = new DocumentCache(mod.schema);
  return async (req: IncomingMessage, res: ServerResponse): Promise<boolean> => {
    if ((req.url ?? '').split('?')[0] !== '/graphql') return false;
    if (req.method !== 'POST') {
      sendJson(res, 405, { errors: [{ message: 'use POST', extensions: { code: ErrorCode.BadUserInput } }] });
      return true;
    }
    let identity: Identity;
    try {
      identity = verifyIdentity(req.headers[IDENTITY_HEADER] as string | undefined, opts.secret);
    } catch (e) {
      req.resume();
      sendJson(res, 401, { errors: [(e as RulrError).toGraphQL()] });
      return true;
    }
    let body: GraphQLRequestBody;
    try {
      body = JSON.parse((await readBody(req, opts.bodyLimit ?? 1_048_576)).toString('utf8'));
    } catch (e) {
      const tooLarge = e instanceof BodyTooLargeError;
      sendJson(res, tooLarge ? 413 : 400, {
        errors: [
          {
            message: tooLarge ? e.message : 'body is not valid JSON',
            extensions: { code: tooLarge ? ErrorCode.PayloadTooLarge : ErrorCode.BadUserInput },
          },
        ],
      });
      return true;
    }
    if (typeof body?.query !== 'string') {
      sendJson(res, 400, { errors: [{ message: 'query must be a string', extensions: { code: ErrorCode.BadUserInput } }] });
      return true;
    }
    const { doc, errors } = docs.get(body.query);
    if (!doc) {
      sendJson(res, 400, { errors: (errors ?? []).map((e) => formatError(e, opts.mask)) });
      return true;
    }
    const variables = body.variables && typeof body.variables === 'object' ? (body.variables as Record<string, unknown>) : undefined;
    const opName = typeof body.operationName === 'string' ? body.operationName : undefined;
    const result = await executeSubgraph(mod, doc, variables, opName, identity, opts.mask);
    sendJson(res, 200, result);
    return true;
  };
}

export { GraphQLError };

/** Runs a subgraph as its own HTTP role (`/graphql` plus health and metrics). */
export async function startSubgraphServer(
  ctx: import('./role.js').RoleContext,
  mod: SubgraphModule,
  port: number,
): Promise<import('./role.js').RoleHandle> {
  const { ServiceServer } = await import('./http.js');
  const { pingDb } = await import('./db.js');
  const server = new ServiceServer({
    name: mod.name,
    port,
    checks: { postgres: () => pingDb(ctx.db) },
    handle: subgraphHandler(mod, { secret: ctx.config.RULR_SECRET, mask: ctx.config.NODE_ENV === 'production' }),
  });
  const bound = await server.listen();
  ctx.logger.info({ role: mod.name, port: bound }, 'subgraph listening');
  return { name: mod.name, port: bound, close: () => server.close() };
}
