import { createRequire } from 'node:module';
import { operationFromDocument } from '@apollo/federation-internals';
import { buildOperationContext } from '@apollo/gateway';
import { parse } from 'graphql';
import { describe, expect, it } from 'vitest';
import { OperationRouter } from './operations.js';
import { compileShaper, installShaping, shapedVariables } from './result-shaping.js';
import { loadSupergraph } from './supergraph.js';

const router = new OperationRouter(loadSupergraph(), {
  limits: { maxDepth: 20, maxAliases: 50, maxCost: 100_000 },
  introspection: true,
  direct: new Map(),
});
const require = createRequire(import.meta.url);
type Compute = (a: Record<string, unknown>) => { data: unknown; errors: { toJSON?: () => unknown; message: string }[] };
const apolloCompute = (require('@apollo/gateway/dist/resultShaping.js') as { computeResponse: Compute }).computeResponse;

/** Apollo's computeResponse and the compiled shaper on the same input: answers and errors must be identical. */
function both(query: string, input: unknown, variables: Record<string, unknown> = {}) {
  const document = parse(query);
  const ctx = buildOperationContext({ schema: router.apiSchema, operationDocument: document });
  const operation = operationFromDocument(router.fedApiSchema, document, { validate: false });
  const apollo = apolloCompute({ operation, variables, input: structuredClone(input), introspectionHandling: () => null });
  const shaper = compileShaper(router.apiSchema, ctx.operation, ctx.fragments);
  const errs = (es: { toJSON?: () => unknown; message: string }[]) => es.map((e) => (e.toJSON ? e.toJSON() : e.message));
  return {
    shaper,
    apollo: { data: JSON.stringify(apollo.data), errors: errs(apollo.errors) },
    ours: shaper
      ? (() => {
          const r = shaper(structuredClone(input) as Record<string, unknown>);
          return { data: JSON.stringify(r.data), errors: errs(r.errors) };
        })()
      : null,
  };
}

const device = (i: number, over: Record<string, unknown> = {}) => ({
  __typename: 'Device',
  id: `d${i}`,
  name: `Lamp ${i}`,
  serial: `SL-${i}`,
  site: { __typename: 'Site', id: `s${i}`, name: `Site ${i}` },
  profile: null,
  status: { __typename: 'DeviceStatus', online: i % 2 === 0, lastSeen: i % 3 ? '2026-11-27T10:00:00.000Z' : null },
  createdAt: '2026-11-01T00:00:00.000Z',
  ...over,
});
const page = (nodes: unknown[]) => ({
  devices: {
    __typename: 'DeviceConnection',
    edges: nodes.map((node, i) => ({ __typename: 'DeviceEdge', cursor: `c${i}`, node })),
    pageInfo: { __typename: 'PageInfo', hasNextPage: true, endCursor: 'c9' },
  },
});

const PAGE = `query P { devices(first: 3) { edges { cursor node { id serial name createdAt site { id name } profile { id name }
  status { online lastSeen } } } pageInfo { hasNextPage endCursor } } }`;

describe('compiled response shaping', () => {
  it('should give exactly what Apollo computeResponse gives for a page with a second subgraph field', () => {
    const r = both(PAGE, page([device(1), device(2), device(3)]));
    expect(r.shaper).not.toBeNull();
    expect(r.ours).toEqual(r.apollo);
    expect(JSON.parse(r.ours?.data ?? '')).toMatchObject({
      devices: { edges: [{ cursor: 'c0', node: { id: 'd1', status: { online: false } } }, {}, {}] },
    });
  });

  it('should match on aliases, repeated fields, fragments on the same type and __typename', () => {
    const q = `query A { devices(first: 2) { t: __typename edges { node { ...F id n: name site { name } site { id } ... on Device { serial } __typename } } } }
      fragment F on Device { status { online } name }`;
    const input = page([
      { ...device(1), n: 'Lamp 1' },
      { ...device(2), n: 'Lamp 2' },
    ]);
    (input.devices as Record<string, unknown>).t = 'DeviceConnection';
    const r = both(q, input);
    expect(r.shaper).not.toBeNull();
    expect(r.ours).toEqual(r.apollo);
  });

  it('should bubble nulls of non-null fields and report invalid leaf values as Apollo does', () => {
    const MUTATION = 'mutation M { decommissionDevice(id: "d1") { id serial status { online } } }';
    const cases: [string, unknown][] = [
      [PAGE, page([device(1), null, device(3)])], // node: Device! null → the edges list (non-null items) → devices null
      [PAGE, page([device(1, { status: { __typename: 'DeviceStatus', online: null, lastSeen: null } })])],
      [PAGE, page([device(1, { name: 5 }), device(2, { id: 1.5 }), device(3, { id: 7 })])],
      [PAGE, page([device(1, { site: null, status: { __typename: 'DeviceStatus', online: 'yes', lastSeen: 42 } })])],
      [PAGE, { devices: null }], // a nullable root field that is null: no error of its own
      [PAGE, null],
      [MUTATION, { decommissionDevice: null }], // a non-null root field that is null → data null
      [MUTATION, { decommissionDevice: { __typename: 'Device', id: 'd1', serial: null, status: null } }],
    ];
    const errorCounts: number[] = [];
    for (const [query, input] of cases) {
      const r = both(query, input);
      expect(r.shaper).not.toBeNull();
      expect(r.ours).toEqual(r.apollo);
      errorCounts.push(r.apollo.errors.length);
    }
    // the cases do exercise the error paths: a null node, a null non-null leaf, two invalid leaves (an
    // integer ID is valid), a wrong-typed Boolean (any DateTime is), a null non-null root field, a null
    // non-null leaf bubbling to the root
    expect(errorCounts).toEqual([1, 1, 2, 1, 0, 0, 1, 1]);
  });

  it('should leave operations it does not model to Apollo: directives, introspection, fragments on other types', () => {
    const none = (q: string) => {
      const ctx = buildOperationContext({ schema: router.apiSchema, operationDocument: parse(q) });
      return compileShaper(router.apiSchema, ctx.operation, ctx.fragments);
    };
    expect(none('query($x: Boolean!) { devices(first: 1) { edges { cursor @include(if: $x) } } }')).toBeNull();
    expect(none('{ __schema { queryType { name } } }')).toBeNull();
    expect(none('{ devices(first: 1) { edges { node { ... on Site { name } } } } }')).toBeNull();
  });

  it('should run through the patched computeResponse only for variables objects that carry a shaper', () => {
    installShaping();
    const patched = (require('@apollo/gateway/dist/resultShaping.js') as { computeResponse: Compute }).computeResponse;
    expect(patched).not.toBe(apolloCompute);
    const document = parse(PAGE);
    const ctx = buildOperationContext({ schema: router.apiSchema, operationDocument: document });
    const operation = operationFromDocument(router.fedApiSchema, document, { validate: false });
    let calls = 0;
    const shaper = compileShaper(router.apiSchema, ctx.operation, ctx.fragments);
    const counting = shaper
      ? (input: Record<string, unknown> | null | undefined) => {
          calls++;
          return shaper(input);
        }
      : null;
    const input = page([device(1)]);
    const viaShaper = patched({ operation, variables: shapedVariables({}, counting), input, introspectionHandling: () => null });
    const viaApollo = patched({ operation, variables: {}, input, introspectionHandling: () => null });
    expect(calls).toBe(1);
    expect(JSON.stringify(viaShaper.data)).toBe(JSON.stringify(viaApollo.data));
    // a __typename the compiled plan does not expect falls back to Apollo's function
    const odd = page([device(1, { __typename: 'Site' })]);
    const fallback = patched({ operation, variables: shapedVariables({}, counting), input: odd, introspectionHandling: () => null });
    const apollo = apolloCompute({ operation, variables: {}, input: odd, introspectionHandling: () => null });
    expect(JSON.stringify(fallback.data)).toBe(JSON.stringify(apollo.data));
  });
});
