import { type GraphQLDataSource, type GraphQLDataSourceProcessOptions, RemoteGraphQLDataSource } from '@apollo/gateway';
import { LRUCache } from 'lru-cache';
import { Agent, errors, request } from 'undici';
import { SubgraphUnavailableError } from '../lib/errors.js';
import { ANONYMOUS, encodeIdentity, IDENTITY_HEADER, type Identity, signRequest } from '../lib/identity.js';
import type { Logger } from '../lib/logger.js';
import { DocumentCache, executeSubgraph, type SubgraphModule } from '../lib/subgraph.js';

/** What the gateway keeps per request in Apollo's context. */
export interface GatewayContext extends Record<string, unknown> {
  identity: Identity;
}

/**
 * Signs the `x-rulr-identity` header of each subgraph request: the identity's part is encoded once
 * per identity (cached), the signature is one HMAC per request over its method, path and body
 * (`lib/identity.ts`), so a captured header cannot be reused for another request.
 */
export class IdentitySigner {
  private readonly encoded = new LRUCache<string, string>({ max: 10_000 });
  private readonly paths = new Map<string, string>();
  constructor(private readonly secret: string) {}

  /** The identity's part of the header (what `willSendRequest` sets for the fetcher to complete). */
  encode(identity: Identity | undefined): string {
    const id = identity ?? ANONYMOUS;
    const key = `${id.kind}\u0000${id.subject}\u0000${id.orgId}\u0000${id.role}\u0000${id.scopes.join(',')}\u0000${id.sessionId ?? ''}\u0000${id.platform ? 1 : 0}`;
    let e = this.encoded.get(key);
    if (e === undefined) {
      e = encodeIdentity(id);
      this.encoded.set(key, e);
    }
    return e;
  }

  /** The header for one POST of exactly `body` to `url`. */
  sign(identity: Identity | undefined, url: string, body: string): string {
    return this.signEncoded(this.encode(identity), url, body);
  }

  signEncoded(encoded: string, url: string, body: string): string {
    let path = this.paths.get(url);
    if (path === undefined) {
      path = new URL(url).pathname;
      if (this.paths.size > 1000) this.paths.clear();
      this.paths.set(url, path);
    }
    return signRequest(encoded, { method: 'POST', path, body }, this.secret);
  }
}

/** What a data source answers (`GatewayGraphQLResponse`, whose package is only a transitive dependency). */
type SubgraphResponse = Awaited<ReturnType<GraphQLDataSource<GatewayContext>['process']>>;

/** A subgraph that accepted the request but did not answer within the gateway's timeout. */
export class SubgraphTimeoutError extends Error {
  constructor(readonly timeoutMs: number) {
    super(`subgraph did not answer within ${timeoutMs} ms`);
    this.name = 'SubgraphTimeoutError';
  }
}

/**
 * The client-facing error for a subgraph request that failed, whatever the cause (refused, reset,
 * timed out, an HTTP error status, a body that is not GraphQL): names the subgraph, never its address.
 */
export function subgraphUnavailable(subgraph: string, cause: unknown): SubgraphUnavailableError {
  if (cause instanceof SubgraphTimeoutError) return new SubgraphUnavailableError(subgraph, `did not answer within ${cause.timeoutMs} ms`);
  const status = (cause as { extensions?: { response?: { status?: unknown } } } | undefined)?.extensions?.response?.status;
  if (typeof status === 'number') return new SubgraphUnavailableError(subgraph, `answered with HTTP status ${status}`);
  return new SubgraphUnavailableError(subgraph);
}

export interface HttpResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/**
 * A small POST client over undici's keep-alive connection pools (the gateway's only way to reach
 * remote subgraphs). undici's `request` costs the gateway about half the CPU of `node:http`'s
 * ClientRequest per call (bench:gateway profile), which is most of what the direct route spends.
 */
export class SubgraphHttpClient {
  private readonly dispatcher: Agent;
  constructor(private readonly timeoutMs: number) {
    this.dispatcher = new Agent({ connections: 512, keepAliveTimeout: 30_000, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  }

  async post(url: string, body: string, headers: Record<string, string>): Promise<HttpResult> {
    try {
      const res = await request(url, {
        method: 'POST',
        dispatcher: this.dispatcher,
        headers: { ...headers, 'content-type': 'application/json' },
        body,
      });
      return { status: res.statusCode, headers: res.headers, body: Buffer.from(await res.body.arrayBuffer()) };
    } catch (e) {
      if (e instanceof errors.HeadersTimeoutError || e instanceof errors.BodyTimeoutError) {
        throw new SubgraphTimeoutError(this.timeoutMs);
      }
      throw e;
    }
  }

  /** A fetch-shaped adapter for Apollo's RemoteGraphQLDataSource. */
  fetcher = async (url: string, init?: { body?: string; headers?: Record<string, string> }) => {
    const r = await this.post(url, init?.body ?? '', init?.headers ?? {});
    const text = r.body.toString('utf8');
    return {
      ok: r.status >= 200 && r.status < 300,
      status: r.status,
      statusText: String(r.status),
      url,
      headers: {
        get: (name: string) => {
          const v = r.headers[name.toLowerCase()];
          return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
        },
      },
      text: async () => text,
      json: async () => JSON.parse(text),
    };
  };

  close(): void {
    void this.dispatcher.close().catch(() => undefined);
  }
}

/**
 * Apollo's HTTP data source with RULR's signed identity header and a keep-alive client. A request
 * that fails (the subgraph is down, restarting, too slow, or answers with an HTTP error) becomes a
 * SUBGRAPH_UNAVAILABLE error naming the subgraph: `executeQueryPlan` then answers the rest of the
 * operation, the fields this subgraph owns null. The cause, address included, is only logged.
 */
export class SignedRemoteDataSource extends RemoteGraphQLDataSource<GatewayContext> {
  constructor(
    private readonly subgraph: string,
    url: string,
    signer: IdentitySigner,
    client: SubgraphHttpClient,
    private readonly logger: Logger,
  ) {
    // Apollo serializes the body after willSendRequest: the header's identity part is set there, and
    // the fetcher, which gets the exact body bytes, signs them.
    const fetcher = (target: string, init?: { body?: string; headers?: Record<string, string> }) => {
      const body = init?.body ?? '';
      const headers = { ...init?.headers };
      headers[IDENTITY_HEADER] = signer.signEncoded(headers[IDENTITY_HEADER] ?? signer.encode(undefined), target, body);
      return client.fetcher(target, { body, headers });
    };
    super({
      url,
      // biome-ignore lint/suspicious/noExplicitAny: Apollo's Fetcher type lives in a transitive package.
      fetcher: fetcher as any,
      willSendRequest({ request, context }) {
        request.http?.headers.set(IDENTITY_HEADER, signer.encode(context.identity));
      },
    });
  }

  override async process(options: GraphQLDataSourceProcessOptions<GatewayContext>): Promise<SubgraphResponse> {
    try {
      return await super.process(options);
    } catch (e) {
      // A 400 with GraphQL errors is the subgraph refusing this operation, not an outage: its errors stand.
      const response = (e as { extensions?: { response?: { status?: number; body?: { errors?: unknown } } } }).extensions?.response;
      if (response?.status === 400 && Array.isArray(response.body?.errors)) return { errors: response.body.errors };
      this.logger.warn({ err: e, subgraph: this.subgraph }, 'subgraph request failed');
      return { errors: [subgraphUnavailable(this.subgraph, e).toGraphQL().toJSON()] };
    }
  }
}

/**
 * A subgraph running in this process, called without HTTP and without a header: the identity the
 * gateway verified is handed over as it is (nothing travels, so there is nothing to replay).
 */
export class LocalDataSource implements GraphQLDataSource<GatewayContext> {
  private readonly docs: DocumentCache;
  constructor(
    private readonly mod: SubgraphModule,
    private readonly mask: boolean,
  ) {
    this.docs = new DocumentCache(mod.schema);
  }

  async process({ request, context }: GraphQLDataSourceProcessOptions<GatewayContext>) {
    const { doc, errors } = this.docs.get(request.query ?? '');
    if (!doc) return { errors: (errors ?? []).map((e) => e.toJSON()) };
    const result = await executeSubgraph(
      this.mod,
      doc,
      request.variables ?? undefined,
      request.operationName ?? undefined,
      context.identity ?? ANONYMOUS,
      this.mask,
    );
    return {
      ...(result.data !== undefined ? { data: result.data as Record<string, unknown> } : {}),
      ...(result.errors ? { errors: result.errors.map((e) => e.toJSON()) } : {}),
    };
  }
}
