import { parse } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GatewayHandle, startGateway } from '../gateway/index.js';
import { fixtureSubgraphs, testContext } from '../gateway/test-fixtures.js';
import { issueToken } from '../lib/auth.js';
import type { RoleContext, RoleHandle } from '../lib/role.js';
import { startSubgraphServer } from '../lib/subgraph.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

const ORG = '11111111-1111-4111-8111-111111111111';

interface Case {
  name: string;
  query: string;
  variables?: Record<string, unknown>;
  operationName?: string;
  token?: 'viewer' | 'operator' | 'none';
  /** the route the fast gateway must take (default: direct) */
  expect?: 'apollo' | 'planned';
}

const CASES: Case[] = [
  { name: 'a list', query: '{ things(first: 3) { id name tags kind } }' },
  { name: 'variables', query: 'query One($id: ID!) { thing(id: $id) { id name } }', variables: { id: '7' } },
  { name: 'a null result', query: 'query One($id: ID!) { thing(id: $id) { id } }', variables: { id: '5000' } },
  { name: 'anonymous on a non-null root', query: '{ whoami }', token: 'none' },
  { name: 'anonymous on a nullable root', query: '{ thing(id: "1") { id } }', token: 'none' },
  { name: 'identity forwarded', query: '{ whoami }' },
  { name: 'a partial error', query: '{ boom things(first: 1) { id } }' },
  { name: 'an internal error', query: '{ crash }' },
  { name: 'a non-null error bubbling to the root', query: '{ mustThing(id: "missing") { id } }' },
  { name: 'a non-null error with a sibling', query: '{ a: mustThing(id: "missing") { id } b: thing(id: "3") { name } }' },
  { name: 'wrong variable type', query: 'query ($n: Int) { things(first: $n) { id } }', variables: { n: 'x' }, expect: 'apollo' },
  { name: 'missing required variable', query: 'query ($id: ID!) { thing(id: $id) { id } }', expect: 'apollo' },
  { name: 'an unknown field', query: '{ nope }', expect: 'apollo' },
  { name: 'a parse error', query: '{ things( }', expect: 'apollo' },
  {
    name: 'aliases and fragments',
    query: '{ a: thing(id: "1") { ...F } b: thing(id: "2") { ...F n: name } } fragment F on Thing { id tags }',
  },
  {
    name: 'directives with variables',
    query: 'query ($with: Boolean!) { things(first: 2) { id name @include(if: $with) tags @skip(if: $with) } }',
    variables: { with: false },
  },
  { name: 'operationName among several', query: 'query A { whoami } query B { things(first: 1) { id } }', operationName: 'B' },
  { name: 'typename', query: '{ __typename things(first: 1) { __typename id } }' },
  { name: 'two subgraphs', query: '{ things(first: 2) { id power name } }', expect: 'planned' },
  {
    name: 'two subgraphs with an error in the entity fetch',
    query: '{ a: thing(id: "13") { id power } b: thing(id: "12") { power } }',
    expect: 'planned',
  },
  {
    name: 'two subgraphs with variables and aliases',
    query: 'query ($n: Int!) { things(first: $n) { id p: power ...on Thing { name } } one: thing(id: "9") { power } }',
    variables: { n: 3 },
    expect: 'planned',
  },
  { name: 'two subgraphs with an error in the first fetch', query: '{ boom thing(id: "2") { id power } }', expect: 'planned' },
  { name: 'two subgraphs, anonymous', query: '{ things(first: 2) { power } }', token: 'none', expect: 'planned' },
  { name: 'a mutation', query: 'mutation { rename(id: "4", name: "new") { id name kind } }', token: 'operator' },
  { name: 'a forbidden mutation', query: 'mutation { rename(id: "4", name: "new") { id } }', token: 'viewer' },
];

describe('the gateway fast path', () => {
  let tdb: TestDatabase;
  const contexts: RoleContext[] = [];
  const handles: RoleHandle[] = [];
  const gateways: Record<string, string> = {};
  const running: Record<string, GatewayHandle> = {};
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    tdb = await createTestDatabase();
    const fx = fixtureSubgraphs();
    const ctx = testContext({ DATABASE_URL: tdb.url });
    contexts.push(ctx);
    const remote: Record<string, string> = {};
    for (const mod of [fx.devices, fx.metrics]) {
      const h = await startSubgraphServer(ctx, mod, 0);
      handles.push(h);
      remote[mod.name] = `http://127.0.0.1:${h.port}/graphql`;
    }
    const local = { devices: fx.devices, metrics: fx.metrics };
    for (const [name, o] of Object.entries({
      apolloLocal: { local, fastPath: false },
      fastLocal: { local, fastPath: true },
      apolloRemote: { urls: remote, fastPath: false },
      fastRemote: { urls: remote, fastPath: true },
    })) {
      const h = await startGateway(ctx, { ...o, port: 0, supergraphSdl: fx.supergraphSdl });
      handles.push(h);
      running[name] = h;
      gateways[name] = `http://127.0.0.1:${h.port}/graphql`;
    }
    const jwt = { secret: ctx.config.RULR_SECRET, issuer: ctx.config.JWT_ISSUER, ttlSeconds: 600 };
    tokens.viewer = await issueToken({ userId: 'u-viewer', orgId: ORG, role: 'viewer' }, jwt);
    tokens.operator = await issueToken({ userId: 'u-op', orgId: ORG, role: 'operator' }, jwt);
  });

  afterAll(async () => {
    for (const h of handles.reverse()) await h.close();
    for (const c of contexts) await c.close();
    await tdb?.drop();
  });

  const call = async (url: string, c: Case) => {
    const who = c.token ?? 'viewer';
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(who === 'none' ? {} : { authorization: `Bearer ${tokens[who]}` }) },
      body: JSON.stringify({ query: c.query, variables: c.variables, operationName: c.operationName }),
    });
    // biome-ignore lint/suspicious/noExplicitAny: GraphQL responses are checked field by field.
    return { status: res.status, body: (await res.json()) as any, route: res.headers.get('x-rulr-route') };
  };
  const strip = ({ route: _r, ...rest }: Awaited<ReturnType<typeof call>>) => rest;

  it.each(CASES)('answers $name identically through the fast path and through Apollo, in process and over HTTP', async (c) => {
    const reference = await call(gateways.apolloLocal as string, c);
    expect(reference.route).toBe('apollo');
    for (const name of ['fastLocal', 'apolloRemote', 'fastRemote']) {
      const r = await call(gateways[name] as string, c);
      expect({ via: name, ...strip(r) }).toEqual({ via: name, ...strip(reference) });
      if (name.startsWith('fast')) expect(r.route).toBe(c.expect ?? 'direct');
    }
  });

  it('keeps error codes from the subgraph and never leaks stack traces', async () => {
    const r = await call(gateways.fastRemote as string, CASES.find((c) => c.name === 'a partial error') as Case);
    expect(r.body.errors[0].extensions.code).toBe('FORBIDDEN');
    expect(r.body.data.things).toEqual([{ id: '1' }]);
    expect(JSON.stringify(r.body)).not.toContain('stacktrace');
  });

  it('offers the same execution, identity and limits to in-process callers such as the WebSocket server', async () => {
    const h = running.fastRemote as GatewayHandle;
    const identity = await h.identify({ authorization: `Bearer ${tokens.viewer}` });
    expect(identity).toMatchObject({ kind: 'user', subject: 'u-viewer', role: 'viewer' });
    const c = CASES.find((x) => x.name === 'two subgraphs with variables and aliases') as Case;
    const viaHttp = await call(gateways.fastRemote as string, c);
    expect(await h.execute(parse(c.query), c.variables, undefined, identity)).toEqual(viaHttp.body);
    expect(h.checkLimits(parse(`{ ${Array.from({ length: 40 }, (_, i) => `a${i}: whoami`).join(' ')} }`))?.extensions.code).toBe(
      'TOO_MANY_ALIASES',
    );
    expect(h.apiSchema()?.getQueryType()?.getFields().things).toBeDefined();
    expect(h.httpServer.listening).toBe(true);
  });
});
