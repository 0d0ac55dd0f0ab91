import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { buildSubgraphSchema } from '@apollo/subgraph';
import { type GraphQLSchema, getOperationAST, parse, validate } from 'graphql';
import { getVariableValues } from 'graphql/execution/values.js';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));

/** The JSON bodies of the README's curl examples (`-d '{…}'`). */
function curlBodies(markdown: string): { query: string; variables?: Record<string, unknown> }[] {
  return [...markdown.matchAll(/-d '(\{[\s\S]*?\})'/g)].map((m) => JSON.parse(m[1]!));
}

describe('README example queries', () => {
  const bodies = curlBodies(readFileSync(`${root}/README.md`, 'utf8'));
  const schema: GraphQLSchema = buildSubgraphSchema({
    typeDefs: parse(readFileSync(`${root}/subgraphs/devices/schema.graphql`, 'utf8')),
  });

  it('are present and are valid JSON request bodies', () => {
    expect(bodies.length).toBeGreaterThanOrEqual(5);
    for (const b of bodies) expect(typeof b.query).toBe('string');
  });

  it('cover login, a devices page, a device by id and createDevice', () => {
    const all = bodies.map((b) => b.query).join('\n');
    for (const field of ['login(', 'devices(', 'device(', 'createDevice(']) expect(all).toContain(field);
  });

  it('validate against the devices subgraph schema, variables included', () => {
    for (const b of bodies) {
      const doc = parse(b.query);
      expect(
        validate(schema, doc).map((e) => e.message),
        b.query,
      ).toEqual([]);
      const op = getOperationAST(doc);
      const coerced = getVariableValues(schema, op?.variableDefinitions ?? [], b.variables ?? {});
      expect(coerced.errors?.map((e) => e.message) ?? [], b.query).toEqual([]);
    }
  });
});
