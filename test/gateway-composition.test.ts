import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CompositionError, composeFromTree, composeSupergraph, readSubgraphSdls, SUPERGRAPH_PATH } from '../gateway/supergraph.js';
import { SUBGRAPH_NAMES } from '../lib/subgraphs.js';

describe('supergraph composition', () => {
  it('keeps the checked-in schema/supergraph.graphql in step with the subgraph SDLs (run `npx rulr compose`)', () => {
    expect(readFileSync(SUPERGRAPH_PATH, 'utf8')).toBe(composeFromTree());
  });

  it('composes every subgraph of lib/subgraphs.ts', () => {
    const names = readSubgraphSdls().map((s) => s.name);
    expect(names).toEqual(SUBGRAPH_NAMES);
    const sdl = composeFromTree();
    for (const n of names) expect(sdl).toContain(`@join__graph(name: "${n}"`);
  });

  it('reports composition errors instead of writing a broken supergraph', () => {
    const a = 'extend schema @link(url: "https://specs.apollo.dev/federation/v2.5", import: ["@key"]) type Query { x: Int }';
    const b = 'extend schema @link(url: "https://specs.apollo.dev/federation/v2.5", import: ["@key"]) type Query { x: String }';
    expect(() =>
      composeSupergraph([
        { name: 'devices', sdl: a },
        { name: 'alarms', sdl: b },
      ]),
    ).toThrow(CompositionError);
  });
});
