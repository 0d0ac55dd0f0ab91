import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Supergraph } from '@apollo/federation-internals';
import { buildSubgraphSchema } from '@apollo/subgraph';
import { type GraphQLSchema, isEnumType, isObjectType, isScalarType, parse, print } from 'graphql';
import { describe, expect, it } from 'vitest';
import { ROLE_NAMES } from '../cli/roles.js';
import { loadSubgraph } from '../cli/subgraphs.js';
import { loadSupergraph } from '../gateway/supergraph.js';
import { API_SCOPES } from '../lib/auth.js';
import { loadConfig } from '../lib/config.js';
import { portVar, SUBGRAPH_NAMES, SUBGRAPHS, sdlPath, subscriptionRequirement } from '../lib/subgraphs.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const apiSchema: GraphQLSchema = Supergraph.build(loadSupergraph()).apiSchema().toGraphQLJSSchema();

/** The Subscription fields a subgraph's SDL declares. */
function subscriptionFields(name: string): string[] {
  const doc = parse(readFileSync(`${root}/${sdlPath(name)}`, 'utf8'));
  return doc.definitions.flatMap((d) =>
    (d.kind === 'ObjectTypeDefinition' || d.kind === 'ObjectTypeExtension') && d.name.value === 'Subscription'
      ? (d.fields ?? []).map((f) => f.name.value)
      : [],
  );
}

describe('lib/subgraphs.ts', () => {
  it('lists every folder under subgraphs/, and only those', () => {
    const folders = readdirSync(`${root}/subgraphs`, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name);
    expect([...folders].sort()).toEqual([...SUBGRAPH_NAMES].sort());
  });

  it('gives each subgraph its own port, apart from the other roles', () => {
    const cfg = loadConfig({});
    const ports = [cfg.GATEWAY_PORT, cfg.REALTIME_PORT, cfg.INGEST_PORT, cfg.WORKERS_PORT, ...SUBGRAPHS.map((s) => cfg[portVar(s.name)])];
    expect(new Set(ports).size).toBe(ports.length);
  });

  it('makes each subgraph a role of `rulr start`', () => {
    for (const name of SUBGRAPH_NAMES) expect(ROLE_NAMES).toContain(name);
  });

  it('loads each subgraph from its folder with the same exports: typeDefs (its schema.graphql, parsed) and createSubgraph', async () => {
    for (const name of SUBGRAPH_NAMES) {
      const pkg = await loadSubgraph(name);
      expect(print(pkg.typeDefs), name).toBe(print(parse(readFileSync(`${root}/${sdlPath(name)}`, 'utf8'))));
      expect(typeof pkg.createSubgraph, name).toBe('function');
    }
  });

  it('gives every subgraph folder the same files (docs/subgraphs.md)', () => {
    for (const name of SUBGRAPH_NAMES) {
      const dir = `${root}/subgraphs/${name}`;
      for (const f of ['schema.graphql', 'index.ts', 'resolvers.ts', 'loaders.ts', 'validation.ts', 'README.md']) {
        expect(existsSync(`${dir}/${f}`), `subgraphs/${name}/${f}`).toBe(true);
      }
      const one = existsSync(`${dir}/repository.ts`);
      const several = existsSync(`${dir}/repositories/index.ts`);
      expect(one !== several, `subgraphs/${name}: repository.ts or repositories/index.ts, not both`).toBe(true);
    }
  });

  it('gives those files the same exports in every subgraph', async () => {
    for (const name of SUBGRAPH_NAMES) {
      const dir = `../subgraphs/${name}`;
      const resolvers = (await import(`${dir}/resolvers.ts`)) as Record<string, unknown>;
      const loaders = (await import(`${dir}/loaders.ts`)) as Record<string, unknown>;
      const validation = (await import(`${dir}/validation.ts`)) as Record<string, unknown>;
      expect(typeof resolvers.createResolvers, `${name}/resolvers.ts createResolvers`).toBe('function');
      expect(typeof loaders.createLoaders, `${name}/loaders.ts createLoaders`).toBe('function');
      for (const fn of ['check', 'checkId', 'checkIds']) expect(typeof validation[fn], `${name}/validation.ts ${fn}`).toBe('function');
    }
  });

  it('resolves only types and fields its SDL declares (graphql would ignore a misspelt one silently)', async () => {
    for (const name of SUBGRAPH_NAMES) {
      const schema = buildSubgraphSchema([{ typeDefs: (await loadSubgraph(name)).typeDefs }]);
      const { createResolvers } = (await import(`../subgraphs/${name}/resolvers.ts`)) as {
        createResolvers: (c: ReturnType<typeof loadConfig>) => Record<string, object>;
      };
      for (const [typeName, map] of Object.entries(createResolvers(loadConfig({})))) {
        const type = schema.getType(typeName);
        expect(type, `${name}: type ${typeName}`).toBeDefined();
        if (isObjectType(type)) {
          for (const field of Object.keys(map)) {
            if (field === '__resolveReference') continue;
            expect(Object.keys(type.getFields()), `${name}: ${typeName}.${field}`).toContain(field);
          }
        } else if (isEnumType(type)) {
          expect(Object.keys(map).sort(), `${name}: enum ${typeName}`).toEqual(
            type
              .getValues()
              .map((v) => v.name)
              .sort(),
          );
        } else expect(isScalarType(type), `${name}: ${typeName}`).toBe(true);
      }
    }
  });

  it("declares exactly the Subscription fields of each subgraph's SDL, each with a scope API keys can hold", () => {
    for (const s of SUBGRAPHS) {
      expect(Object.keys(s.subscriptions).sort(), s.name).toEqual(subscriptionFields(s.name).sort());
      for (const req of Object.values(s.subscriptions)) expect(API_SCOPES as readonly string[], s.name).toContain(req.scope);
    }
  });

  it('requires a listed scope for every Subscription field of the federated schema', () => {
    const fields = Object.keys(apiSchema.getSubscriptionType()?.getFields() ?? {});
    expect(fields.length).toBeGreaterThan(0);
    for (const f of fields) expect(subscriptionRequirement(f).scope, f).not.toBe('realtime:read');
  });

  it('refuses unlisted Subscription fields to API keys without `*`', () => {
    expect(subscriptionRequirement('somethingUnlisted')).toEqual({ role: 'viewer', scope: 'realtime:read' });
    expect(API_SCOPES as readonly string[]).not.toContain('realtime:read');
  });

  it("has a row in the README's roles table for each subgraph, with its port variable", () => {
    const readme = readFileSync(`${root}/README.md`, 'utf8');
    for (const s of SUBGRAPHS) {
      expect(readme, s.name).toContain(`| ${s.name} subgraph`);
      expect(readme, s.name).toContain(`${s.port} (\`${portVar(s.name)}\`)`);
    }
  });

  it('is what the image exposes', () => {
    const dockerfile = readFileSync(`${root}/Dockerfile`, 'utf8');
    const exposed = /^EXPOSE (.*)$/m.exec(dockerfile)?.[1]?.split(/\s+/) ?? [];
    for (const s of SUBGRAPHS) expect(exposed, s.name).toContain(String(s.port));
  });
});
