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
import { ErrorCode, formatError, type RulrError, UnauthenticatedError } from './errors.js';
import { BodyTooLargeError, readBody, sendJson } from './http.js';
import { DEFAULT_IDENTITY_MAX_AGE_MS, IDENTITY_HEADER, type Identity, type VerifiedIdentity, verifyRequest } from './identity.js';

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

export interface SubgraphHandlerOptions {
  secret: string;
  /** Also accepted while RULR_SECRET is rotated (RULR_SECRET_PREVIOUS); the gateway signs with `secret`. */
  previousSecrets?: readonly string[];
  mask: boolean;
  /** @default 1048576 */
  bodyLimit?: number;
  /** How long a gateway identity header is accepted. @default 30000 */
  identityMaxAgeMs?: number;
  /**
   * Records a mutation's nonce; false when it was seen before (a replayed request), so a mutation
   * runs at most once per signed header whatever replica receives it. It throws when it cannot tell
   * (Redis down): the mutation is then refused, not run unchecked.
   */
  claimNonce?: (nonce: string, ttlMs: number) => Promise<boolean>;
}

const refusal = (status: number, message: string, code: ErrorCode) => ({ status, body: { errors: [{ message, extensions: { code } }] } });

/**
 * Serves a subgraph at POST /graphql. The body is read first, because the gateway's identity header
 * is signed over it: a header that does not verify for this very request, or a mutation whose
 * nonce was already used, is refused with 401 before anything runs.
 */
export function subgraphHandler(mod: SubgraphModule, opts: SubgraphHandlerOptions) {
  const docs = new DocumentCache(mod.schema);
  const maxAgeMs = opts.identityMaxAgeMs ?? DEFAULT_IDENTITY_MAX_AGE_MS;
  const secrets = opts.previousSecrets?.length ? [opts.secret, ...opts.previousSecrets] : opts.secret;
  return async (req: IncomingMessage, res: ServerResponse): Promise<boolean> => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/graphql') return false;
    if (req.method !== 'POST') {
      sendJson(res, 405, { errors: [{ message: 'use POST', extensions: { code: ErrorCode.BadUserInput } }] });
      return true;
    }
    const header = req.headers[IDENTITY_HEADER] as string | undefined;
    if (!header) {
      req.resume();
      sendJson(res, 401, { errors: [new UnauthenticatedError('missing gateway identity: subgraphs only answer the gateway').toGraphQL()] });
      return true;
    }
    let raw: Buffer;
    try {
      raw = await readBody(req, opts.bodyLimit ?? 1_048_576);
    } catch (e) {
      if (!(e instanceof BodyTooLargeError)) throw e;
      const r = refusal(413, e.message, ErrorCode.PayloadTooLarge);
      sendJson(res, r.status, r.body);
      return true;
    }
    let verified: VerifiedIdentity;
    try {
      verified = verifyRequest(header, { method: 'POST', path, body: raw }, secrets, { maxAgeMs });
    } catch (e) {
      sendJson(res, 401, { errors: [(e as RulrError).toGraphQL()] });
      return true;
    }
    let body: GraphQLRequestBody;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      const r = refusal(400, 'body is not valid JSON', ErrorCode.BadUserInput);
      sendJson(res, r.status, r.body);
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
    const opName = typeof body.operationName === 'string' ? body.operationName : undefined;
    if (getOperationAST(doc, opName)?.operation === 'mutation') {
      let fresh: boolean;
      try {
        // twice the window: a header is accepted up to maxAgeMs before and after its signing time
        fresh = opts.claimNonce ? await opts.claimNonce(verified.nonce, 2 * maxAgeMs) : true;
      } catch {
        const r = refusal(503, 'cannot check the request for replay now', ErrorCode.Internal);
        sendJson(res, r.status, r.body);
        return true;
      }
      if (!fresh) {
        sendJson(res, 401, { errors: [new UnauthenticatedError('replayed gateway identity').toGraphQL()] });
        return true;
      }
    }
    const variables = body.variables && typeof body.variables === 'object' ? (body.variables as Record<string, unknown>) : undefined;
    const result = await executeSubgraph(mod, doc, variables, opName, verified.identity, opts.mask);
    sendJson(res, 200, result);
    return true;
  };
}

/** Mutation nonces in Redis (`<prefix>identity:nonce:<nonce>`), shared by every replica of every subgraph. */
export function redisNonceClaimer(redis: import('./redis.js').Redis, prefix: string) {
  return async (nonce: string, ttlMs: number): Promise<boolean> =>
    (await redis.set(`${prefix}identity:nonce:${nonce}`, '1', 'PX', ttlMs, 'NX')) === 'OK';
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
    handle: subgraphHandler(mod, {
      secret: ctx.config.RULR_SECRET,
      previousSecrets: ctx.config.RULR_SECRET_PREVIOUS,
      mask: ctx.config.NODE_ENV === 'production',
      identityMaxAgeMs: ctx.config.IDENTITY_MAX_AGE_S * 1000,
      claimNonce: redisNonceClaimer(ctx.redis, ctx.config.REDIS_PREFIX),
    }),
  });
  const bound = await server.listen();
  ctx.logger.info({ role: mod.name, port: bound }, 'subgraph listening');
  return { name: mod.name, port: bound, close: () => server.close() };
}
