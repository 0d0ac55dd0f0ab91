import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeLatestValue, latestKey } from '../lib/contracts/device-state.js';
import { ruleStatsKey, rulesVersionKey } from '../lib/contracts/rule-state.js';
import { withTenant } from '../lib/db.js';
import { ANONYMOUS, type Identity } from '../lib/identity.js';
import { createSubgraph as createRulesSubgraph } from '../subgraphs/rules/index.js';
import { codes, type SubgraphFixture, subgraphFixture } from './devices-fixtures.js';

const RULE_FIELDS = `id name description enabled metric operator threshold clearThreshold severity alarmType autoClear
  site { id } profile { id } createdBy createdAt updatedAt deletedAt`;
const CREATE = `mutation($input: CreateRuleInput!) { createRule(input: $input) { ${RULE_FIELDS} } }`;
const UPDATE = `mutation($id: ID!, $input: UpdateRuleInput!) { updateRule(id: $id, input: $input) { ${RULE_FIELDS} } }`;
const DELETE = `mutation($id: ID!) { deleteRule(id: $id) }`;
const RULE = `query($id: ID!) { rule(id: $id) { ${RULE_FIELDS} } }`;
const RULES = `query($first: Int, $after: String, $filter: RuleFilter) {
  rules(first: $first, after: $after, filter: $filter) { totalCount edges { cursor node { id name } } pageInfo { hasNextPage endCursor } }
}`;
const ENTITIES = `query($r: [_Any!]!) { _entities(representations: $r) { ... on Rule { id name deletedAt } } }`;
const DRY_RUN = `mutation($input: CreateRuleInput!, $first: Int) {
  dryRunRule(input: $input, first: $first) { devicesInScope evaluated matching truncated matches { device { id } value ts } }
}`;

interface Connection {
  totalCount: number;
  edges: { cursor: string; node: { id: string; name: string } }[];
  pageInfo: { hasNextPage: boolean; endCursor: string | null };
}

const label = (id: string) => id.replaceAll('-', '_');
const overvoltage = (extra: Record<string, unknown> = {}) => ({
  name: `Overvoltage ${randomUUID().slice(0, 8)}`,
  metric: 'voltage',
  operator: 'GT',
  threshold: 253,
  severity: 'MAJOR',
  ...extra,
});

describe('rules subgraph', () => {
  let f: SubgraphFixture<ReturnType<typeof createRulesSubgraph>>;
  let orgA: string;
  let orgB: string;
  let operator: Identity;
  let viewer: Identity;
  let outsider: Identity;

  async function site(orgId: string, name: string, parent?: { id: string; path: string }) {
    const id = randomUUID();
    const path = parent ? `${parent.path}.${label(id)}` : label(id);
    await f.t.db
      .insertInto('sites')
      .values({ id, org_id: orgId, name, parent_id: parent?.id ?? null, path })
      .execute();
    return { id, path };
  }

  async function profile(orgId: string, name: string) {
    const r = await f.t.db.insertInto('device_profiles').values({ org_id: orgId, name }).returning('id').executeTakeFirstOrThrow();
    return r.id;
  }

  async function device(orgId: string, serial: string, o: { siteId?: string; profileId?: string; decommissioned?: boolean } = {}) {
    const r = await f.t.db
      .insertInto('devices')
      .values({
        org_id: orgId,
        serial,
        name: serial,
        site_id: o.siteId ?? null,
        profile_id: o.profileId ?? null,
        decommissioned_at: o.decommissioned ? new Date() : null,
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    return r.id;
  }

  /** Writes a device's latest value as ingest's status cache does (booleans as 1/0 and text, strings as text). */
  const latest = (deviceId: string, metric: string, v: number | boolean | string, ts = Date.now()) =>
    f.ctx.redis.hset(
      latestKey(f.ctx.config.REDIS_PREFIX, deviceId),
      metric,
      encodeLatestValue(
        typeof v === 'number'
          ? { ts, value: v, text: null }
          : typeof v === 'boolean'
            ? { ts, value: v ? 1 : 0, text: String(v) }
            : { ts, value: null, text: v },
      ),
    );

  const version = async (orgId: string) => Number((await f.ctx.redis.get(rulesVersionKey(f.ctx.config.REDIS_PREFIX, orgId))) ?? 0);
  const create = async (input: Record<string, unknown>, as: Identity = operator) => (await f.ok(as, CREATE, { input })).createRule;

  beforeAll(async () => {
    f = await subgraphFixture(createRulesSubgraph);
    orgA = await f.org();
    orgB = await f.org();
    operator = f.as(orgA, 'operator');
    viewer = f.as(orgA, 'viewer');
    outsider = f.as(orgB, 'admin');
  });

  afterAll(async () => {
    await f?.close();
  });

  describe('lifecycle', () => {
    it('creates a rule with upper-case enums, fills its defaults and records who created it', async () => {
      const r = await create({
        name: 'Overvoltage',
        metric: 'voltage',
        operator: 'GTE',
        threshold: 253,
        clearThreshold: 250,
        severity: 'CRITICAL',
      });
      expect(r).toMatchObject({
        name: 'Overvoltage',
        description: '',
        enabled: true,
        metric: 'voltage',
        operator: 'GTE',
        threshold: 253,
        clearThreshold: 250,
        severity: 'CRITICAL',
        alarmType: 'Overvoltage',
        autoClear: true,
        site: null,
        profile: null,
        createdBy: `user:${operator.subject}`,
        deletedAt: null,
      });
      const stored = await f.t.db
        .selectFrom('rules')
        .select(['operator', 'severity', 'org_id'])
        .where('id', '=', r.id)
        .executeTakeFirstOrThrow();
      expect(stored).toEqual({ operator: 'gte', severity: 'critical', org_id: orgA });
      expect((await f.ok(viewer, RULE, { id: r.id })).rule).toEqual(r);
    });

    it('updates only the fields given, removes scope and clear threshold with null, and bumps updatedAt', async () => {
      const city = await site(orgA, 'City');
      const lamp = await profile(orgA, `Lamp ${randomUUID().slice(0, 6)}`);
      const r = await create(overvoltage({ clearThreshold: 250, siteId: city.id, profileId: lamp, description: 'grid' }));
      expect(r.site).toEqual({ id: city.id });
      expect(r.profile).toEqual({ id: lamp });
      const u = (
        await f.ok(operator, UPDATE, { id: r.id, input: { threshold: 260, severity: 'MINOR', siteId: null, clearThreshold: null } })
      ).updateRule;
      expect(u).toMatchObject({
        name: r.name,
        description: 'grid',
        threshold: 260,
        clearThreshold: null,
        severity: 'MINOR',
        site: null,
        profile: { id: lamp },
        operator: 'GT',
      });
      expect(Date.parse(u.updatedAt)).toBeGreaterThan(Date.parse(r.updatedAt));
    });

    it('soft-deletes a rule: it leaves the list but still resolves by id and as an entity, with deletedAt', async () => {
      const r = await create(overvoltage());
      expect((await f.ok(operator, DELETE, { id: r.id })).deleteRule).toBe(true);
      const list = await f.ok(viewer, RULES, { first: 500 });
      expect(list.rules.edges.map((e: { node: { id: string } }) => e.node.id)).not.toContain(r.id);
      const byId = (await f.ok(viewer, RULE, { id: r.id })).rule;
      expect(byId.deletedAt).toEqual(expect.any(String));
      const [entity] = (await f.ok(viewer, ENTITIES, { r: [{ __typename: 'Rule', id: r.id }] }))._entities;
      expect(entity).toEqual({ id: r.id, name: r.name, deletedAt: byId.deletedAt });
    });

    it('refuses to update or delete a deleted rule, and frees its name for a new one', async () => {
      const r = await create(overvoltage());
      await f.ok(operator, DELETE, { id: r.id });
      expect(codes(await f.run(operator, UPDATE, { id: r.id, input: { threshold: 1 } }))).toEqual(['NOT_FOUND']);
      expect(codes(await f.run(operator, DELETE, { id: r.id }))).toEqual(['NOT_FOUND']);
      expect((await create(overvoltage({ name: r.name }))).name).toBe(r.name);
    });

    it('writes an audit row for every create, update and delete, with before and after', async () => {
      const r = await create(overvoltage());
      await f.ok(operator, UPDATE, { id: r.id, input: { enabled: false } });
      await f.ok(operator, DELETE, { id: r.id });
      const rows = await f.t.db
        .selectFrom('audit_logs')
        .select(['action', 'actor', 'entity_type', 'before', 'after', 'org_id'])
        .where('entity_id', '=', r.id)
        .orderBy('at')
        .execute();
      expect(rows.map((a) => a.action)).toEqual(['rule.create', 'rule.update', 'rule.delete']);
      for (const a of rows) expect(a).toMatchObject({ actor: `user:${operator.subject}`, entity_type: 'rule', org_id: orgA });
      expect(rows[1]?.before).toMatchObject({ enabled: true });
      expect(rows[1]?.after).toMatchObject({ enabled: false });
      expect(rows[2]?.after).toMatchObject({ deletedAt: expect.any(String) });
    });

    it('bumps the organization rules version in Redis after each create, update and delete', async () => {
      const v0 = await version(orgA);
      const r = await create(overvoltage());
      expect(await version(orgA)).toBe(v0 + 1);
      await f.ok(operator, UPDATE, { id: r.id, input: { threshold: 255 } });
      expect(await version(orgA)).toBe(v0 + 2);
      await f.ok(operator, DELETE, { id: r.id });
      expect(await version(orgA)).toBe(v0 + 3);
      await f.run(operator, UPDATE, { id: r.id, input: { threshold: 1 } });
      expect(await version(orgA)).toBe(v0 + 3);
    });
  });

  describe('listing', () => {
    let org: string;
    let reader: Identity;

    beforeAll(async () => {
      org = await f.org();
      reader = f.as(org, 'viewer');
      const writer = f.as(org, 'operator');
      for (let i = 0; i < 7; i++) {
        await create({ ...overvoltage({ name: `Rule ${i}`, enabled: i % 2 === 0, metric: i < 5 ? 'voltage' : 'current' }) }, writer);
      }
      await create(overvoltage({ name: '100%_match' }), writer);
    });

    it('pages newest first without duplicates or gaps', async () => {
      const seen: string[] = [];
      let after: string | null = null;
      let pages = 0;
      do {
        const { rules }: { rules: Connection } = await f.ok(reader, RULES, { first: 3, after });
        expect(rules.totalCount).toBe(8);
        seen.push(...rules.edges.map((e) => e.node.name));
        after = rules.pageInfo.hasNextPage ? rules.pageInfo.endCursor : null;
        pages++;
      } while (after);
      expect(pages).toBe(3);
      expect(seen).toEqual(['100%_match', 'Rule 6', 'Rule 5', 'Rule 4', 'Rule 3', 'Rule 2', 'Rule 1', 'Rule 0']);
    });

    it('filters on enabled, exact metric and a case-insensitive name search that treats % and _ literally', async () => {
      const names = async (filter: Record<string, unknown>) =>
        (await f.ok(reader, RULES, { first: 50, filter })).rules.edges.map((e: { node: { name: string } }) => e.node.name);
      expect(await names({ enabled: false })).toEqual(['Rule 5', 'Rule 3', 'Rule 1']);
      expect(await names({ metric: 'current' })).toEqual(['Rule 6', 'Rule 5']);
      expect(await names({ metric: 'curr' })).toEqual([]);
      expect(await names({ search: 'rule 1' })).toEqual(['Rule 1']);
      expect(await names({ search: '%' })).toEqual(['100%_match']);
      expect(await names({ search: '_' })).toEqual(['100%_match']);
      expect((await f.ok(reader, RULES, { first: 1, filter: { enabled: true } })).rules.totalCount).toBe(5);
    });

    it('refuses a cursor it did not make and page sizes outside 1..500', async () => {
      expect(codes(await f.run(reader, RULES, { first: 3, after: 'bm9wZQ' }))).toEqual(['BAD_USER_INPUT']);
      expect(codes(await f.run(reader, RULES, { first: 0 }))).toEqual(['BAD_USER_INPUT']);
      expect(codes(await f.run(reader, RULES, { first: 501 }))).toEqual(['BAD_USER_INPUT']);
    });
  });

  describe('validation', () => {
    const refused = async (input: Record<string, unknown>) => {
      const r = await f.run(operator, CREATE, { input });
      return { codes: codes(r), message: r.errors?.[0]?.message };
    };

    it('refuses a metric name ingest would not accept and an empty name', async () => {
      expect(await refused(overvoltage({ metric: 'volt age' }))).toMatchObject({
        codes: ['BAD_USER_INPUT'],
        message: expect.stringMatching(/^input.metric/),
      });
      expect(await refused(overvoltage({ name: '  ' }))).toEqual({ codes: ['BAD_USER_INPUT'], message: 'input.name: must not be empty' });
    });

    it('refuses a clear threshold on the raising side or with EQ', async () => {
      expect(await refused(overvoltage({ threshold: 250, clearThreshold: 260 }))).toEqual({
        codes: ['BAD_USER_INPUT'],
        message: 'clearThreshold must not be above threshold for GT/GTE',
      });
      expect(await refused(overvoltage({ operator: 'EQ', clearThreshold: 253 }))).toEqual({
        codes: ['BAD_USER_INPUT'],
        message: 'clearThreshold applies only to GT, GTE, LT and LTE',
      });
    });

    it('re-checks the condition an update leaves behind', async () => {
      const r = await create(overvoltage({ clearThreshold: 250 }));
      const res = await f.run(operator, UPDATE, { id: r.id, input: { threshold: 240 } });
      expect(codes(res)).toEqual(['BAD_USER_INPUT']);
      expect(res.errors?.[0]?.message).toBe('clearThreshold must not be above threshold for GT/GTE');
      expect(codes(await f.run(operator, UPDATE, { id: r.id, input: { operator: 'NEQ' } }))).toEqual(['BAD_USER_INPUT']);
      expect((await f.ok(operator, UPDATE, { id: r.id, input: { operator: 'NEQ', clearThreshold: null } })).updateRule.operator).toBe(
        'NEQ',
      );
    });

    it('refuses null for a field an update cannot remove', async () => {
      const r = await create(overvoltage());
      for (const input of [{ name: null }, { threshold: null }, { severity: null }, { alarmType: null }]) {
        expect(codes(await f.run(operator, UPDATE, { id: r.id, input }))).toEqual(['BAD_USER_INPUT']);
      }
    });

    it('refuses a second rule with the same name in any letter case, on create and on rename', async () => {
      const r = await create(overvoltage({ name: 'Undervoltage' }));
      expect((await refused(overvoltage({ name: 'UNDERVOLTAGE' }))).codes).toEqual(['CONFLICT']);
      const other = await create(overvoltage());
      expect(codes(await f.run(operator, UPDATE, { id: other.id, input: { name: 'undervoltage' } }))).toEqual(['CONFLICT']);
      expect((await f.ok(operator, UPDATE, { id: r.id, input: { name: 'undervoltage' } })).updateRule.name).toBe('undervoltage');
      // the same name is free in another organization
      expect((await create(overvoltage({ name: 'Undervoltage' }), outsider)).name).toBe('Undervoltage');
    });

    it("refuses another organization's site or profile as if it did not exist", async () => {
      const theirs = await site(orgB, 'Their city');
      const theirProfile = await profile(orgB, 'Their lamp');
      expect(await refused(overvoltage({ siteId: theirs.id }))).toEqual({ codes: ['BAD_USER_INPUT'], message: 'siteId: site not found' });
      expect((await refused(overvoltage({ profileId: theirProfile }))).codes).toEqual(['BAD_USER_INPUT']);
      const r = await create(overvoltage());
      expect(codes(await f.run(operator, UPDATE, { id: r.id, input: { siteId: theirs.id } }))).toEqual(['BAD_USER_INPUT']);
    });

    it('refuses malformed ids and answers null for unknown ones', async () => {
      expect((await refused(overvoltage({ siteId: 'city' }))).codes).toEqual(['BAD_USER_INPUT']);
      expect(codes(await f.run(viewer, RULE, { id: 'rule-1' }))).toEqual(['BAD_USER_INPUT']);
      expect(codes(await f.run(operator, UPDATE, { id: 'rule-1', input: {} }))).toEqual(['BAD_USER_INPUT']);
      expect(codes(await f.run(operator, DELETE, { id: 'rule-1' }))).toEqual(['BAD_USER_INPUT']);
      expect((await f.ok(viewer, RULE, { id: randomUUID() })).rule).toBeNull();
      expect(codes(await f.run(operator, DELETE, { id: randomUUID() }))).toEqual(['NOT_FOUND']);
      expect((await f.ok(viewer, ENTITIES, { r: [{ __typename: 'Rule', id: 'rule-1' }] }))._entities).toEqual([null]);
    });
  });

  describe('access', () => {
    it('lets a viewer read but not create', async () => {
      expect(codes(await f.run(viewer, CREATE, { input: overvoltage() }))).toEqual(['FORBIDDEN']);
      expect(codes(await f.run(viewer, DRY_RUN, { input: overvoltage() }))).toEqual(['FORBIDDEN']);
      expect(codes(await f.run(viewer, RULES, {}))).toEqual([]);
    });

    it('lets an API key create only with rules:write, and read only with rules:read', async () => {
      const readKey = f.as(orgA, 'admin', 'apikey', ['rules:read']);
      const writeKey = f.as(orgA, 'admin', 'apikey', ['rules:write']);
      expect(codes(await f.run(readKey, CREATE, { input: overvoltage() }))).toEqual(['FORBIDDEN']);
      expect(codes(await f.run(readKey, RULES, {}))).toEqual([]);
      const r = await create(overvoltage(), writeKey);
      expect(r.createdBy).toBe(`apikey:${writeKey.subject}`);
      expect(codes(await f.run(writeKey, RULE, { id: r.id }))).toEqual(['FORBIDDEN']);
    });

    it('refuses an anonymous caller everything', async () => {
      expect(codes(await f.run(ANONYMOUS, RULES, {}))).toEqual(['UNAUTHENTICATED']);
      expect(codes(await f.run(ANONYMOUS, CREATE, { input: overvoltage() }))).toEqual(['UNAUTHENTICATED']);
    });
  });

  describe('tenant isolation', () => {
    it('gives another organization nothing of a rule: not by id, not in lists, not as an entity, no update or delete', async () => {
      const r = await create(overvoltage());
      expect((await f.ok(outsider, RULE, { id: r.id })).rule).toBeNull();
      expect((await f.ok(outsider, ENTITIES, { r: [{ __typename: 'Rule', id: r.id }] }))._entities).toEqual([null]);
      const theirs = (await f.ok(outsider, RULES, { first: 500 })).rules.edges.map((e: { node: { id: string } }) => e.node.id);
      expect(theirs).not.toContain(r.id);
      expect(codes(await f.run(outsider, UPDATE, { id: r.id, input: { threshold: 0 } }))).toEqual(['NOT_FOUND']);
      expect(codes(await f.run(outsider, DELETE, { id: r.id }))).toEqual(['NOT_FOUND']);
      expect((await f.ok(operator, RULE, { id: r.id })).rule).toMatchObject({ threshold: 253, deletedAt: null });
    });

    it('lets row-level security hide rules of other organizations even from a query without an org filter', async () => {
      await create(overvoltage());
      const all = await f.t.db.selectFrom('rules').select('org_id').execute();
      expect(all.some((r) => r.org_id === orgA)).toBe(true);
      const seen = await withTenant(f.t.db, orgB, (tx) => tx.selectFrom('rules').select('org_id').execute());
      expect(seen.every((r) => r.org_id === orgB)).toBe(true);
    });
  });

  describe('evaluation state', () => {
    const STATS = `query($id: ID!) { rule(id: $id) { stats { evaluations readings matches lastEvaluatedAt } executions(first: 2) { at readings matched raised cleared } } }`;

    it('reads counters from the Redis stats hash, zeros when there are none', async () => {
      const r = await create(overvoltage());
      expect((await f.ok(viewer, STATS, { id: r.id })).rule.stats).toEqual({
        evaluations: 0,
        readings: 0,
        matches: 0,
        lastEvaluatedAt: null,
      });
      const at = Date.UTC(2026, 0, 5, 12);
      await f.ctx.redis.hset(ruleStatsKey(f.ctx.config.REDIS_PREFIX, r.id), {
        evaluations: '12',
        readings: '340',
        matches: '7',
        lastEvaluatedAt: String(at),
      });
      expect((await f.ok(viewer, STATS, { id: r.id })).rule.stats).toEqual({
        evaluations: 12,
        readings: 340,
        matches: 7,
        lastEvaluatedAt: new Date(at).toISOString(),
      });
    });

    it('lists executions of the rule newest first, at most `first`', async () => {
      const r = await create(overvoltage());
      const other = await create(overvoltage());
      const base = Date.UTC(2026, 0, 5);
      for (let i = 0; i < 3; i++) {
        await f.t.db
          .insertInto('rule_executions')
          .values({ org_id: orgA, rule_id: r.id, at: new Date(base + i * 60_000), readings: 10 + i, matched: i, raised: i, cleared: 0 })
          .execute();
      }
      await f.t.db
        .insertInto('rule_executions')
        .values({ org_id: orgA, rule_id: other.id, readings: 1, matched: 1, raised: 1, cleared: 0 })
        .execute();
      const { executions } = (await f.ok(viewer, STATS, { id: r.id })).rule;
      expect(executions).toEqual([
        { at: new Date(base + 120_000).toISOString(), readings: 12, matched: 2, raised: 2, cleared: 0 },
        { at: new Date(base + 60_000).toISOString(), readings: 11, matched: 1, raised: 1, cleared: 0 },
      ]);
      expect(codes(await f.run(viewer, `query($id: ID!) { rule(id: $id) { executions(first: 101) { at } } }`, { id: r.id }))).toEqual([
        'BAD_USER_INPUT',
      ]);
    });
  });

  describe('dry run', () => {
    let org: string;
    let as: Identity;
    let city: { id: string; path: string };
    let street: { id: string; path: string };
    let lamp: string;
    const ids: Record<string, string> = {};

    beforeAll(async () => {
      org = await f.org();
      as = f.as(org, 'operator');
      city = await site(org, 'City');
      street = await site(org, 'Main Street', city);
      const elsewhere = await site(org, 'Elsewhere');
      lamp = await profile(org, 'Lamp');
      const meter = await profile(org, 'Meter');
      const devices: [string, string, number | boolean | string, Parameters<typeof device>[2]][] = [
        ['D01-city-high', 'voltage', 260, { siteId: city.id, profileId: lamp }],
        ['D02-street-high', 'voltage', 255.5, { siteId: street.id, profileId: lamp }],
        ['D03-street-low', 'voltage', 230, { siteId: street.id, profileId: lamp }],
        ['D04-street-meter', 'voltage', 270, { siteId: street.id, profileId: meter }],
        ['D05-elsewhere', 'voltage', 280, { siteId: elsewhere.id, profileId: lamp }],
        ['D06-decommissioned', 'voltage', 300, { siteId: city.id, profileId: lamp, decommissioned: true }],
        ['D07-text', 'voltage', 'high', { siteId: city.id, profileId: lamp }],
        ['D08-no-reading', 'current', 5, { siteId: city.id, profileId: lamp }],
        ['D09-bool-on', 'voltage', true, { siteId: city.id, profileId: lamp }],
        ['D10-bool-off', 'voltage', false, { siteId: city.id, profileId: lamp }],
      ];
      for (const [serial, metric, v, o] of devices) {
        const id = await device(org, serial, o);
        ids[serial] = id;
        await latest(id, metric, v, Date.UTC(2026, 0, 5, 12));
      }
    });

    const dryRun = async (input: Record<string, unknown>, first?: number) =>
      (
        await f.ok(as, DRY_RUN, {
          input: { name: 'Dry', metric: 'voltage', operator: 'GT', threshold: 253, severity: 'MAJOR', ...input },
          first,
        })
      ).dryRunRule;

    it('evaluates the latest numeric values of the active devices of a site subtree and profile', async () => {
      const r = await dryRun({ siteId: city.id, profileId: lamp });
      expect(r).toEqual({
        devicesInScope: 7,
        evaluated: 5,
        matching: 2,
        truncated: false,
        matches: [
          { device: { id: ids['D01-city-high'] }, value: 260, ts: new Date(Date.UTC(2026, 0, 5, 12)).toISOString() },
          { device: { id: ids['D02-street-high'] }, value: 255.5, ts: new Date(Date.UTC(2026, 0, 5, 12)).toISOString() },
        ],
      });
    });

    it('narrows to a child site, and covers the whole organization without a scope', async () => {
      const street_ = await dryRun({ siteId: street.id });
      expect(street_).toMatchObject({ devicesInScope: 3, evaluated: 3, matching: 2 });
      const all = await dryRun({});
      expect(all).toMatchObject({ devicesInScope: 9, evaluated: 7, matching: 4 });
    });

    it('counts booleans as 1 and 0 and ignores text values', async () => {
      const r = await dryRun({ operator: 'EQ', threshold: 1, siteId: city.id });
      expect(r.matches.map((m: { device: { id: string } }) => m.device.id)).toEqual([ids['D09-bool-on']]);
      const off = await dryRun({ operator: 'LT', threshold: 0.5, siteId: city.id });
      expect(off.matches).toEqual([expect.objectContaining({ device: { id: ids['D10-bool-off'] }, value: 0 })]);
    });

    it('lists at most `first` matches but counts them all', async () => {
      const r = await dryRun({}, 1);
      expect(r.matching).toBe(4);
      expect(r.matches).toHaveLength(1);
      expect(codes(await f.run(as, DRY_RUN, { input: overvoltage(), first: 1001 }))).toEqual(['BAD_USER_INPUT']);
    });

    it('validates its input like createRule and saves nothing', async () => {
      const before = await f.t.db
        .selectFrom('rules')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .executeTakeFirstOrThrow();
      const v = await version(org);
      expect(codes(await f.run(as, DRY_RUN, { input: overvoltage({ clearThreshold: 300 }) }))).toEqual(['BAD_USER_INPUT']);
      const theirs = await site(orgB, 'Not yours');
      expect(codes(await f.run(as, DRY_RUN, { input: overvoltage({ siteId: theirs.id }) }))).toEqual(['BAD_USER_INPUT']);
      await dryRun({ name: 'Dry' });
      await dryRun({ name: 'Dry' });
      const after = await f.t.db
        .selectFrom('rules')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .executeTakeFirstOrThrow();
      expect(Number(after.n)).toBe(Number(before.n));
      expect(await version(org)).toBe(v);
    });
  });

  describe('batching', () => {
    it('resolves many rule references with one SQL query', async () => {
      const rules = [];
      for (let i = 0; i < 5; i++) rules.push(await create(overvoltage()));
      const reps = [...rules.map((r) => ({ __typename: 'Rule', id: r.id })), { __typename: 'Rule', id: randomUUID() }];
      f.t.queries.length = 0;
      const { _entities } = await f.ok(viewer, ENTITIES, { r: reps });
      expect(_entities.map((e: { id: string } | null) => e?.id ?? null)).toEqual([...rules.map((r) => r.id), null]);
      expect(f.t.queries.filter((q) => /from "rules"/.test(q))).toHaveLength(1);
      expect(f.t.queries.filter((q) => /^begin/.test(q))).toHaveLength(1);
    });

    it('reads a page of rules with their stats and executions in two SQL round trips', async () => {
      const org = await f.org();
      const reader = f.as(org, 'viewer');
      const rules = [];
      for (let i = 0; i < 6; i++) rules.push(await create(overvoltage(), f.as(org, 'operator')));
      for (const [i, r] of rules.entries()) {
        await f.ctx.redis.hset(ruleStatsKey(f.ctx.config.REDIS_PREFIX, r.id), { evaluations: String(i) });
        await f.t.db
          .insertInto('rule_executions')
          .values({ org_id: org, rule_id: r.id, readings: i, matched: 0, raised: 0, cleared: 0 })
          .execute();
      }
      f.t.queries.length = 0;
      const page = await f.ok(reader, `{ rules(first: 10) { edges { node { id stats { evaluations } executions { readings } } } } }`);
      const got = page.rules.edges.map((e: { node: { stats: { evaluations: number }; executions: { readings: number }[] } }) => [
        e.node.stats.evaluations,
        e.node.executions.map((x) => x.readings),
      ]);
      expect(got).toEqual([5, 4, 3, 2, 1, 0].map((i) => [i, [i]]));
      expect(f.t.queries.filter((q) => /from rule_executions/.test(q))).toHaveLength(1);
      expect(f.t.queries.filter((q) => /^begin/.test(q))).toHaveLength(2);
    });
  });
});
