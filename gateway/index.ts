import type { RoleContext, RoleHandle } from '../lib/role.js';
import type { SubgraphModule } from '../lib/subgraph.js';

export interface GatewayOptions {
  /** Subgraphs running in this process, called without HTTP. */
  local?: Record<string, SubgraphModule>;
  /** Port override (tests use 0). */
  port?: number;
}

export async function startGateway(_ctx: RoleContext, _o: GatewayOptions = {}): Promise<RoleHandle> {
  throw new Error('gateway: not implemented yet');
}
