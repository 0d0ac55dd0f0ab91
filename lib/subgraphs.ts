import type { Requirement } from './identity.js';

/**
 * One subgraph as the rest of RULR knows it. Its code lives in `subgraphs/<name>/` (the same files
 * in every folder, see docs/subgraphs.md); this entry is what the CLI, the gateway, composition,
 * configuration and the deploy checks read, so adding a subgraph is its folder plus one entry.
 */
export interface SubgraphSpec {
  /** Role name (`rulr start <name>`), folder name under `subgraphs/`, and federation service name. */
  readonly name: string;
  /** Default HTTP port; the `<NAME>_PORT` variable overrides it. */
  readonly port: number;
  /** What it owns, for the configuration table. */
  readonly summary: string;
  /**
   * The Subscription fields its SDL declares, with what a subscriber needs (role for people, scope
   * for API keys). A test checks this against the SDL, so none is served without its requirement.
   */
  readonly subscriptions: Readonly<Record<string, Requirement>>;
}

/** Every subgraph, in composition order (the supergraph lists them in this order). */
export const SUBGRAPHS = [
  {
    name: 'devices',
    port: 4001,
    summary: 'organizations, sites, device profiles, devices, credentials, API keys, login',
    subscriptions: {},
  },
  {
    name: 'alarms',
    port: 4002,
    summary: 'alarms and their history',
    subscriptions: { alarmChanged: { role: 'viewer', scope: 'alarms:read' } },
  },
  { name: 'rules', port: 4003, summary: 'threshold rules, their statistics and dry runs', subscriptions: {} },
  {
    name: 'metrics',
    port: 4004,
    summary: 'latest values, status, series, energy, dead letters',
    subscriptions: {
      telemetryUpdated: { role: 'viewer', scope: 'telemetry:read' },
      deviceStatusChanged: { role: 'viewer', scope: 'telemetry:read' },
    },
  },
  {
    name: 'commands',
    port: 4005,
    summary: 'device commands and their evidence, desired and reported state, the commands profiles declare',
    subscriptions: {
      commandUpdated: { role: 'viewer', scope: 'commands:read' },
      commandJobUpdated: { role: 'viewer', scope: 'commands:read' },
    },
  },
] as const satisfies readonly SubgraphSpec[];

export type SubgraphName = (typeof SUBGRAPHS)[number]['name'];

export const SUBGRAPH_NAMES: readonly SubgraphName[] = SUBGRAPHS.map((s) => s.name);

/** The configuration variable of a subgraph's port (`DEVICES_PORT`). */
export type PortVar<N extends string = SubgraphName> = `${Uppercase<N>}_PORT`;
/** The configuration variable overriding a subgraph's URL (`DEVICES_URL`). */
export type UrlVar<N extends string = SubgraphName> = `${Uppercase<N>}_URL`;

export const portVar = <N extends string>(name: N): PortVar<N> => `${name.toUpperCase()}_PORT` as PortVar<N>;
export const urlVar = <N extends string>(name: N): UrlVar<N> => `${name.toUpperCase()}_URL` as UrlVar<N>;

/** Where a subgraph's SDL lives, relative to the package root (the build copies it to `dist/` alike). */
export const sdlPath = (name: string): string => `subgraphs/${name}/schema.graphql`;

/** Where a subgraph's module lives, relative to the package root (`.js`: compiled, or mapped to `.ts` by tsx). */
export const modulePath = (name: string): string => `subgraphs/${name}/index.js`;

const SUBSCRIPTION_REQUIREMENTS: ReadonlyMap<string, Requirement> = new Map(
  SUBGRAPHS.flatMap((s) => Object.entries(s.subscriptions as Record<string, Requirement>)),
);

/** What a subscriber of `field` needs; a field no subgraph lists needs the `realtime:read` scope (no role grants it). */
export function subscriptionRequirement(field: string): Requirement {
  return SUBSCRIPTION_REQUIREMENTS.get(field) ?? { role: 'viewer', scope: 'realtime:read' };
}

export function isSubgraphName(name: string): name is SubgraphName {
  return (SUBGRAPH_NAMES as readonly string[]).includes(name);
}
