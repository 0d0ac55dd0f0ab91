import { buildSchema, parse } from 'graphql';
import { describe, expect, it } from 'vitest';
import { checkLimits, measureDocument } from './limits.js';

const schema = buildSchema(`
  type Query { devices(first: Int): DeviceConnection! device(id: ID!): Device sites: [Site!]! }
  type DeviceConnection { edges: [DeviceEdge!]! totalCount: Int! }
  type DeviceEdge { cursor: String! node: Device! }
  type Device { id: ID! name: String! site: Site children: [Device!]! }
  type Site { id: ID! name: String! children: [Site!]! }
`);
const limits = { maxDepth: 5, maxAliases: 3, maxCost: 1000, schema };

describe('measureDocument', () => {
  it('counts depth from the root field down', () => {
    expect(measureDocument(parse('{ device(id: "1") { site { name } } }'), { schema }).depth).toBe(3);
  });

  it('counts each field once and multiplies children by first', () => {
    const m = measureDocument(parse('{ devices(first: 10) { totalCount edges { node { id name } } } }'), { schema });
    // devices 1 + 10 × (totalCount 1 + edges 1 + node 1 + id 1 + name 1): edges under a sized field is not multiplied again
    expect(m.cost).toBe(1 + 10 * (1 + 1 + 1 + 2));
  });

  it('assumes the default list size for list fields without a size argument', () => {
    expect(measureDocument(parse('{ sites { id } }'), { schema }).cost).toBe(1 + 50);
    expect(measureDocument(parse('{ sites { id } }'), { schema, defaultListSize: 5 }).cost).toBe(1 + 5);
  });

  it('uses a variable default for first, else the default list size', () => {
    expect(measureDocument(parse('query ($n: Int = 4) { devices(first: $n) { totalCount } }'), { schema }).cost).toBe(1 + 4);
    expect(measureDocument(parse('query ($n: Int) { devices(first: $n) { totalCount } }'), { schema }).cost).toBe(1 + 50);
  });

  it('expands fragments and inline fragments', () => {
    const doc = parse(
      '{ device(id: "1") { ...A } } fragment A on Device { id ... on Device { site { ...B } } } fragment B on Site { name }',
    );
    expect(measureDocument(doc, { schema })).toEqual({ depth: 3, aliases: 0, cost: 1 + 1 + 1 + 1 });
  });

  it('counts aliases, including inside fragments', () => {
    const doc = parse('{ a: device(id: "1") { ...F } b: device(id: "2") { ...F } } fragment F on Device { x: id }');
    expect(measureDocument(doc, { schema }).aliases).toBe(4);
  });

  it('stays linear on fragment bombs and terminates on fragment cycles', () => {
    const bomb = ['fragment F0 on Device { id name }'];
    for (let i = 1; i < 30; i++) bomb.push(`fragment F${i} on Device { ...F${i - 1} ...F${i - 1} }`);
    const m = measureDocument(parse(`{ device(id: "1") { ...F29 } } ${bomb.join(' ')}`), { schema });
    expect(m.cost).toBeGreaterThan(2 ** 29);
    expect(
      measureDocument(parse('{ device(id: "1") { ...A } } fragment A on Device { ...B } fragment B on Device { ...A id }'), { schema })
        .cost,
    ).toBe(2);
  });

  it('works without a schema, multiplying only by size arguments', () => {
    expect(measureDocument(parse('{ devices(first: 3) { edges { node { id } } } sites { id } }')).cost).toBe(1 + 3 * 3 + 2);
  });

  it('does not charge for __typename', () => {
    expect(measureDocument(parse('{ __typename device(id: "1") { __typename id } }'), { schema }).cost).toBe(2);
  });
});

describe('checkLimits', () => {
  it('accepts an operation within every limit', () => {
    expect(checkLimits(parse('{ devices(first: 50) { edges { node { id name site { name } } } } }'), limits)).toBeNull();
  });

  it('refuses a deep operation with QUERY_TOO_DEEP', () => {
    const e = checkLimits(parse('{ device(id: "1") { children { children { children { children { children { id } } } } } } }'), limits);
    expect(e?.extensions.code).toBe('QUERY_TOO_DEEP');
    expect(e?.message).toMatch(/depth 7 exceeds the limit of 5/);
  });

  it('refuses an alias flood with TOO_MANY_ALIASES', () => {
    const e = checkLimits(parse(`{ ${Array.from({ length: 4 }, (_, i) => `a${i}: device(id: "${i}") { id }`).join(' ')} }`), limits);
    expect(e?.extensions.code).toBe('TOO_MANY_ALIASES');
  });

  it('refuses an expensive operation with QUERY_TOO_COSTLY', () => {
    const e = checkLimits(parse('{ devices(first: 200) { edges { node { id children { id name } } } } }'), limits);
    expect(e?.extensions.code).toBe('QUERY_TOO_COSTLY');
    expect(e?.extensions.cost).toBeGreaterThan(1000);
  });
});
