import type { RoleContext } from '../../lib/role.js';
import type { SubgraphModule } from '../../lib/subgraph.js';

export function createDevicesSubgraph(_ctx: RoleContext): SubgraphModule {
  throw new Error('devices subgraph: not implemented yet');
}
