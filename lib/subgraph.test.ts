import { buildSchema, execute, GraphQLError, parse } from 'graphql';
import { describe, expect, it } from 'vitest';
import { formatError } from './errors.js';
import { ANONYMOUS } from './identity.js';
import { executeSubgraph, type SubgraphModule } from './subgraph.js';

function module(): SubgraphModule & { calls: Record<string, number> } {
  const schema = buildSchema(`
    type Query { hello(name: String!): String!, item: Item, failing: String, list(n: Int!): [Item!]! }
    type Item { id: ID!, at: String, broken: String! }
    type Mutation { bump: Int! }
  `);
  const calls: Record<string, number> = { hello: 0, bump: 0 };
  const fields = schema.getQueryType()?.getFields() ?? {};
  const item = (id: number) => ({ id: String(id), at: null });
  Object.assign(fields.hello ?? {}, {
    resolve: (_: unknown, a: { name: string }) => {
      calls.hello = (calls.hello ?? 0) + 1;
      return `hi ${a.name}`;
    },
  });
  Object.assign(fields.item ?? {}, { resolve: () => item(1) });
  Object.assign(fields.list ?? {}, { resolve: (_: unknown, a: { n: number }) => Array.from({ length: a.n }, (_x, i) => item(i)) });
  Object.assign(fields.failing ?? {}, {
    resolve: () => {
      throw new GraphQLError('nothing here', { extensions: { code: 'NOT_FOUND' } });
    },
  });
  Object.assign(schema.getMutationType()?.getFields().bump ?? {}, {
    resolve: () => {
      calls.bump = (calls.bump ?? 0) + 1;
      return calls.bump;
    },
  });
  return { name: 'test', schema, context: () => ({}), calls };
}

/** What graphql-js alone answers, errors formatted as `executeSubgraph` formats them. */
async function reference(mod: SubgraphModule, query: string, variables?: Record<string, unknown>) {
  const r = await execute({ schema: mod.schema, document: parse(query), variableValues: variables ?? null, contextValue: {} });
  return JSON.stringify(r.errors ? { ...r, errors: r.errors.map((e) => formatError(e, true)) } : r);
}

describe('executeSubgraph', () => {
  const cases: [string, string, Record<string, unknown>?][] = [
    ['a query without errors', 'query Q($n: String!) { hello(name: $n) item { id at __typename } list(n: 3) { id } }', { n: 'x' }],
    ['an error thrown by a resolver, with partial data', '{ item { id } failing hello(name: "y") }'],
    ['a null in a non-null field', '{ list(n: 2) { id broken } }'],
    ['a variable that does not coerce', 'query Q($n: Int!) { list(n: $n) { id } }', { n: 'many' }],
    ['a missing variable', 'query Q($n: String!) { hello(name: $n) }', {}],
  ];
  for (const [name, query, variables] of cases) {
    it(`answers ${name} byte for byte as graphql-js does`, async () => {
      const mod = module();
      const doc = parse(query);
      for (let i = 0; i < 2; i++) {
        const r = await executeSubgraph(mod, doc, variables, undefined, ANONYMOUS, true);
        expect(JSON.stringify(r)).toBe(await reference(mod, query, variables));
      }
    });
  }

  it('runs a mutation once', async () => {
    const mod = module();
    const r = await executeSubgraph(mod, parse('mutation { bump }'), undefined, undefined, ANONYMOUS, true);
    expect(r).toEqual({ data: { bump: 1 } });
    expect(mod.calls.bump).toBe(1);
  });
});
