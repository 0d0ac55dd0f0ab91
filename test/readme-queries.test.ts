import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Supergraph } from '@apollo/federation-internals';
import { type GraphQLSchema, getOperationAST, parse, validate } from 'graphql';
import { getVariableValues } from 'graphql/execution/values.js';
import { describe, expect, it } from 'vitest';
import { loadSupergraph } from '../gateway/supergraph.js';

const root = fileURLToPath(new URL('..', import.meta.url));

/** The JSON bodies of the README's curl examples (`-d '{…}'`). */
function curlBodies(markdown: string): { query: string; variables?: Record<string, unknown> }[] {
  return [...markdown.matchAll(/-d '(\{[\s\S]*?\})'/g)].map((m) => JSON.parse(m[1]!));
}

describe('README example queries', () => {
  const bodies = curlBodies(readFileSync(`${root}/README.md`, 'utf8'));
  // The federated API clients see: the checked-in supergraph (a test keeps it in step with the subgraphs).
  const schema: GraphQLSchema = Supergraph.build(loadSupergraph()).apiSchema().toGraphQLJSSchema();

  it('are present and are valid JSON request bodies', () => {
    expect(bodies.length).toBeGreaterThanOrEqual(5);
    for (const b of bodies) expect(typeof b.query).toBe('string');
  });

  it('cover login, devices, createDevice, rules and alarms', () => {
    const all = bodies.map((b) => b.query).join('\n');
    for (const field of ['login(', 'devices(', 'device(', 'createDevice(', 'createRule(', 'dryRunRule(', 'alarms(', 'acknowledgeAlarm(']) {
      expect(all).toContain(field);
    }
  });

  it('validate against the federated API schema, variables included', () => {
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
