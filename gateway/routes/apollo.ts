import type { ApolloGateway } from '@apollo/gateway';
import { ApolloServer, HeaderMap } from '@apollo/server';
import { ApolloServerPluginLandingPageDisabled } from '@apollo/server/plugin/disabled';
import type { Identity } from '../../lib/identity.js';
import type { GatewayContext } from '../data-sources.js';
import type { ErrorFinalizer, Reply, RequestBody } from '../replies.js';

export interface ApolloRoute {
  /** Answers one request through Apollo Server's whole pipeline, as the stock gateway would. */
  run(body: RequestBody, identity: Identity): Promise<Reply>;
  stop(): Promise<void>;
}

/**
 * The fallback for everything the fast routes do not take (parse and validation errors,
 * introspection, variables that do not coerce, `@defer`, a query whose subgraph could not be
 * reached directly): Apollo Server over the ApolloGateway, executed inside RULR's own HTTP server.
 */
export async function startApolloRoute(o: {
  gateway: ApolloGateway;
  introspection: boolean;
  finalizeError: ErrorFinalizer;
}): Promise<ApolloRoute> {
  const apollo = new ApolloServer<GatewayContext>({
    gateway: o.gateway,
    introspection: o.introspection,
    includeStacktraceInErrorResponses: false,
    formatError: (formatted) => o.finalizeError(formatted),
    plugins: [ApolloServerPluginLandingPageDisabled()],
  });
  await apollo.start();
  return {
    async run(body, identity) {
      const response = await apollo.executeHTTPGraphQLRequest({
        httpGraphQLRequest: { method: 'POST', headers: new HeaderMap([['content-type', 'application/json']]), search: '', body },
        context: async () => ({ identity }),
      });
      const headers: Record<string, string> = {};
      for (const [k, v] of response.headers) headers[k] = v;
      if (response.body.kind === 'complete') return { status: response.status ?? 200, body: response.body.string, headers };
      let s = '';
      for await (const chunk of response.body.asyncIterator) s += chunk;
      return { status: response.status ?? 200, body: s, headers };
    },
    stop: () => apollo.stop(),
  };
}
