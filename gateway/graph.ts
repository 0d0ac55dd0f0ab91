import { ApolloGateway, type GraphQLDataSource, IntrospectAndCompose } from '@apollo/gateway';
import type { GraphQLSchema } from 'graphql';
import type { Logger } from '../lib/logger.js';
import type { SubgraphModule } from '../lib/subgraph.js';
import { SUBGRAPH_NAMES } from '../lib/subgraphs.js';
import {
  type GatewayContext,
  type IdentitySigner,
  LocalDataSource,
  SignedRemoteDataSource,
  type SubgraphHttpClient,
} from './data-sources.js';
import type { QueryLimits } from './limits.js';
import { OperationRouter } from './operations.js';
import { loadSupergraph } from './supergraph.js';

export interface FederatedGraphOptions {
  /** Subgraphs in this process, called without HTTP. */
  local: Record<string, SubgraphModule>;
  /** Where the others are, by name. */
  urls: Record<string, string>;
  signer: IdentitySigner;
  client: SubgraphHttpClient;
  /** Mask internal errors (production). */
  mask: boolean;
  limits: QueryLimits;
  introspection: boolean;
  /** Route single-subgraph operations directly and run plans with `executeQueryPlan`. */
  fastPath: boolean;
  /** Development: compose from the running subgraphs instead of the checked-in supergraph. */
  introspectAndCompose: boolean;
  /** Supergraph SDL instead of `schema/supergraph.graphql`. */
  supergraphSdl?: string | undefined;
  logger: Logger;
}

/** The supergraph the gateway serves, and what each schema (re)load derives from it. */
export interface FederatedGraph {
  gateway: ApolloGateway;
  /** The router of the current schema (undefined until the first load). */
  router(): OperationRouter | undefined;
  /** The current schema's data sources, by subgraph name. */
  services(): Record<string, GraphQLDataSource<GatewayContext>>;
}

/**
 * ApolloGateway over RULR's data sources (in process, or HTTP with the signed identity header);
 * on every schema load, a new OperationRouter and the data sources of its subgraphs.
 */
export function federatedGraph(o: FederatedGraphOptions): FederatedGraph {
  const buildService = (name: string, url: string | undefined): GraphQLDataSource<GatewayContext> => {
    const mod = o.local[name];
    if (mod) return new LocalDataSource(mod, o.mask);
    return new SignedRemoteDataSource(name, o.urls[name] ?? (url as string), o.signer, o.client, o.logger);
  };

  const gateway = new ApolloGateway({
    logger: o.logger,
    ...(o.introspectAndCompose
      ? {
          supergraphSdl: new IntrospectAndCompose({
            // Development only: every subgraph of lib/subgraphs.ts is expected to be running.
            subgraphs: SUBGRAPH_NAMES.map((name) => ({ name, url: o.urls[name] as string })),
          }),
        }
      : { supergraphSdl: o.supergraphSdl ?? loadSupergraph() }),
    buildService: ({ name, url }) => buildService(name, url),
  });

  let router: OperationRouter | undefined;
  let serviceMap: Record<string, GraphQLDataSource<GatewayContext>> = {};
  gateway.onSchemaLoadOrUpdate(({ coreSupergraphSdl }) => {
    const direct = new Map<string, GraphQLSchema | null>();
    if (o.fastPath) {
      for (const name of SUBGRAPH_NAMES) {
        const mod = o.local[name];
        direct.set(name, mod ? mod.schema : null);
      }
    }
    const next = new OperationRouter(coreSupergraphSdl, { limits: o.limits, introspection: o.introspection, direct, planned: o.fastPath });
    serviceMap = Object.fromEntries(next.supergraph.subgraphsMetadata().map((s) => [s.name, buildService(s.name, s.url)]));
    router = next;
  });

  return { gateway, router: () => router, services: () => serviceMap };
}
