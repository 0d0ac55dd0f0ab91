import { randomBytes } from 'node:crypto';
import { buildSubgraphSchema } from '@apollo/subgraph';
import { parse } from 'graphql';
import { loadConfig } from '../lib/config.js';
import { ForbiddenError, NotFoundError, UnauthenticatedError } from '../lib/errors.js';
import type { Identity } from '../lib/identity.js';
import { createLogger } from '../lib/logger.js';
import { RoleContext } from '../lib/role.js';
import type { SubgraphModule } from '../lib/subgraph.js';
import { composeSupergraph } from './supergraph.js';

/** A RoleContext for tests: its own Redis prefix, silent logs, overrides on top. */
export function testContext(env: Record<string, string> = {}): RoleContext {
  const cfg = loadConfig({
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    REDIS_PREFIX: `test:gw:${randomBytes(4).toString('hex')}:`,
    ...env,
  });
  return new RoleContext(cfg, createLogger('silent'));
}

const THINGS_SDL = `
extend schema @link(url: "https://specs.apollo.dev/federation/v2.5", import: ["@key"])
type Query {
  things(first: Int = 10): [Thing!]!
  thing(id: ID!): Thing
  mustThing(id: ID!): Thing!
  whoami: String!
  boom: String
  crash: String
  slow(ms: Int!): String
}
type Mutation { rename(id: ID!, name: String!): Thing! }
type Thing @key(fields: "id") { id: ID! name: String! tags: [String!]! kind: Kind! }
enum Kind { LAMP METER }
`;

const POWER_SDL = `
extend schema @link(url: "https://specs.apollo.dev/federation/v2.5", import: ["@key"])
type Thing @key(fields: "id") { id: ID! power: Float! }
`;

type Ctx = { identity: Identity };
const thing = (id: string) => ({ id, name: `thing ${id}`, tags: id === '2' ? [] : ['a', 'b'], kind: Number(id) % 2 ? 'LAMP' : 'METER' });
const signedIn = (c: Ctx) => {
  if (c.identity.kind === 'anonymous') throw new UnauthenticatedError();
  return c.identity;
};

/** Two small subgraphs named like RULR's (`devices` with Things, `metrics` adding `Thing.power`). */
export function fixtureSubgraphs(): { devices: SubgraphModule<Ctx>; metrics: SubgraphModule<Ctx>; supergraphSdl: string } {
  const devices = buildSubgraphSchema([
    {
      typeDefs: parse(THINGS_SDL),
      resolvers: {
        Query: {
          things: (_: unknown, a: { first: number }, c: Ctx) => {
            signedIn(c);
            return Array.from({ length: Math.max(0, Math.min(a.first, 100)) }, (_x, i) => thing(String(i + 1)));
          },
          thing: (_: unknown, a: { id: string }, c: Ctx) => (signedIn(c) && Number(a.id) > 0 && Number(a.id) < 1000 ? thing(a.id) : null),
          mustThing: (_: unknown, a: { id: string }) => {
            if (a.id === 'missing') throw new NotFoundError(`thing ${a.id}`);
            return thing(a.id);
          },
          whoami: (_: unknown, _a: unknown, c: Ctx) => {
            const id = signedIn(c);
            return `${id.kind}:${id.subject}:${id.role}:${id.scopes.join(',')}`;
          },
          boom: () => {
            throw new ForbiddenError('no boom for you');
          },
          crash: () => {
            throw new Error('database password is hunter2');
          },
          slow: async (_: unknown, a: { ms: number }) => {
            await new Promise((r) => setTimeout(r, a.ms));
            return 'done';
          },
        },
        Mutation: {
          rename: (_: unknown, a: { id: string; name: string }, c: Ctx) => {
            const id = signedIn(c);
            if (id.role === 'viewer') throw new ForbiddenError('requires role operator (you are viewer)');
            return { ...thing(a.id), name: a.name };
          },
        },
        Thing: { __resolveReference: (ref: { id: string }) => thing(ref.id) },
      },
    },
  ]);
  const metrics = buildSubgraphSchema([
    {
      typeDefs: parse(POWER_SDL),
      resolvers: {
        Thing: {
          __resolveReference: (ref: { id: string }) => {
            if (ref.id === '13') throw new ForbiddenError('thing 13 has no meter');
            return { id: ref.id, power: Number(ref.id) * 10.5 };
          },
        },
      },
    },
  ]);
  return {
    devices: { name: 'devices', schema: devices, context: (identity) => ({ identity }) },
    metrics: { name: 'metrics', schema: metrics, context: (identity) => ({ identity }) },
    supergraphSdl: composeSupergraph([
      { name: 'devices', sdl: THINGS_SDL },
      { name: 'metrics', sdl: POWER_SDL },
    ]),
  };
}
