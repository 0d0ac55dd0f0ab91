import { startGateway } from '../gateway/index.js';
import { startIngest } from '../ingest/index.js';
import { type Config, subgraphPort } from '../lib/config.js';
import type { Logger } from '../lib/logger.js';
import { RoleContext, type RoleHandle } from '../lib/role.js';
import { type SubgraphModule, startSubgraphServer } from '../lib/subgraph.js';
import { SUBGRAPH_NAMES } from '../lib/subgraphs.js';
import { startWorkers } from '../workers/index.js';
import { loadSubgraph } from './subgraphs.js';

/** What `all` runs: one process with everything (the gateway serves HTTP and graphql-ws). */
const ALL = ['gateway', ...SUBGRAPH_NAMES, 'workers', 'ingest'];

/** How long one role may take to stop on SIGTERM before the others go on without it. */
const ROLE_STOP_MS = 12_000;
/** Every role; `realtime` is the WebSocket-only gateway, for deployments that scale subscriptions apart. */
export const ROLE_NAMES: readonly string[] = [...ALL, 'realtime'];

/**
 * Starts the named roles in this process. With the gateway and subgraphs together, the gateway
 * calls those subgraphs in process (no HTTP hop) unless GATEWAY_IN_PROCESS=false.
 */
export async function startRoles(cfg: Config, logger: Logger, requested: string[]): Promise<RoleHandle> {
  const roles = requested.includes('all') ? [...ALL] : requested;
  for (const r of roles) {
    if (!ROLE_NAMES.includes(r)) throw new Error(`unknown role "${r}" (known: ${ROLE_NAMES.join(', ')}, all)`);
  }
  const ctx = new RoleContext(cfg, logger);
  const handles: RoleHandle[] = [];
  const local: Record<string, SubgraphModule> = {};
  try {
    for (const name of SUBGRAPH_NAMES) {
      if (!roles.includes(name)) continue;
      const mod = (await loadSubgraph(name)).createSubgraph(ctx);
      local[name] = mod;
      handles.push(await startSubgraphServer(ctx, mod, subgraphPort(cfg, name)));
    }
    if (roles.includes('workers')) handles.push(await startWorkers(ctx));
    if (roles.includes('ingest')) handles.push(await startIngest(ctx));
    if (roles.includes('gateway')) {
      handles.push(await startGateway(ctx, cfg.GATEWAY_IN_PROCESS ? { local } : {}));
    }
    if (roles.includes('realtime')) {
      handles.push(await startGateway(ctx, { ...(cfg.GATEWAY_IN_PROCESS ? { local } : {}), http: false, port: cfg.REALTIME_PORT }));
    }
  } catch (e) {
    for (const h of handles.reverse()) await h.close();
    await ctx.close();
    throw e;
  }
  return {
    name: roles.join('+'),
    port: handles[0]?.port ?? 0,
    async close() {
      // Stop taking traffic at the edge first, then the roles behind it.
      // Each role gets ROLE_STOP_MS: one that hangs (a peer that never answers a close) is logged
      // and left behind rather than holding every other role's drain hostage.
      for (const h of [...handles].reverse()) {
        const t = performance.now();
        let timer: NodeJS.Timeout | undefined;
        const stopped = await Promise.race([
          h.close().then(
            () => true,
            (e: unknown) => {
              ctx.logger.warn({ role: h.name, err: e }, 'role failed to stop cleanly');
              return true;
            },
          ),
          new Promise<false>((r) => {
            timer = setTimeout(() => r(false), ROLE_STOP_MS);
          }),
        ]);
        clearTimeout(timer);
        const ms = Math.round(performance.now() - t);
        if (stopped) ctx.logger.info({ role: h.name, ms }, 'role stopped');
        else ctx.logger.warn({ role: h.name, ms }, 'role did not stop in time; going on');
      }
      const t = performance.now();
      await ctx.close();
      ctx.logger.info({ ms: Math.round(performance.now() - t) }, 'shared clients closed');
    },
  };
}
