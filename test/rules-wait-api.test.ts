import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Identity } from '../lib/identity.js';
import { createSubgraph as createRulesSubgraph } from '../subgraphs/rules/index.js';
import { codes, type SubgraphFixture, subgraphFixture } from './devices-fixtures.js';

// The rules subgraph's rules that wait, dry runs over a past window, clearOnDisable and cron
// schedules: definitions, refusals naming the field, roles and tenant isolation.

const RULE = `id kind metric metrics operator threshold expression forSeconds repeatCount windowSeconds noDataSeconds clearOnDisable enabled`;
const CREATE = `mutation($input: CreateRuleInput!) { createRule(input: $input) { ${RULE} } }`;
const UPDATE = `mutation($id: ID!, $input: UpdateRuleInput!) { updateRule(id: $id, input: $input) { ${RULE} } }`;
const DELETE = `mutation($id: ID!) { deleteRule(id: $id) }`;
const DRY_RUN = `mutation($input: CreateRuleInput!, $window: DryRunWindow) {
  dryRunRule(input: $input, window: $window) { devicesInScope evaluated matching readings raises matches { device { id } value ts } }
}`;
const SCHEDULE = `id name enabled cron timeZone nextRunAt lastRunAt action { kind rule { id } site { id } } runs { occurrence status result }`;
const CREATE_SCHEDULE = `mutation($input: CreateScheduleInput!) { createSchedule(input: $input) { ${SCHEDULE} } }`;
const UPDATE_SCHEDULE = `mutation($id: ID!, $input: UpdateScheduleInput!) { updateSchedule(id: $id, input: $input) { ${SCHEDULE} } }`;
const DELETE_SCHEDULE = `mutation($id: ID!) { deleteSchedule(id: $id) }`;
const SCHEDULES = `query { schedules { id name } }`;
const ONE_SCHEDULE = `query($id: ID!) { schedule(id: $id) { id } }`;

const named = (extra: Record<string, unknown>) => ({ name: `R ${randomUUID().slice(0, 8)}`, severity: 'MAJOR', ...extra });

describe('rules that wait and schedules in the rules subgraph', () => {
  let f: SubgraphFixture<ReturnType<typeof createRulesSubgraph>>;
  let orgA: string;
  let orgB: string;
  let operator: Identity;
  let viewer: Identity;
  let outsider: Identity;
  const fails = async (as: Identity, query: string, variables: Record<string, unknown>) => {
    const r = await f.run(as, query, variables);
    return { codes: codes(r), field: r.errors?.[0]?.extensions?.field, message: r.errors?.[0]?.message };
  };

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

  describe('definitions', () => {
    it('stores an EXPRESSION rule with a duration, its metric taken from the expression', async () => {
      const { createRule: r } = await f.ok<{ createRule: Record<string, unknown> }>(operator, CREATE, {
        input: named({ kind: 'EXPRESSION', expression: 'power < 5 and lampState == 1', forSeconds: 600 }),
      });
      expect(r).toMatchObject({
        kind: 'EXPRESSION',
        metric: 'power',
        metrics: ['power', 'lampState'],
        operator: null,
        threshold: null,
        forSeconds: 600,
      });
    });

    it('stores NO_DATA and repeating THRESHOLD rules', async () => {
      const a = await f.ok<{ createRule: Record<string, unknown> }>(operator, CREATE, {
        input: named({ kind: 'NO_DATA', metric: 'power', noDataSeconds: 900 }),
      });
      expect(a.createRule).toMatchObject({ kind: 'NO_DATA', metric: 'power', noDataSeconds: 900 });
      const b = await f.ok<{ createRule: Record<string, unknown> }>(operator, CREATE, {
        input: named({ metric: 'voltage', operator: 'GT', threshold: 253, repeatCount: 3, windowSeconds: 600 }),
      });
      expect(b.createRule).toMatchObject({ kind: 'THRESHOLD', repeatCount: 3, windowSeconds: 600 });
    });

    it('refuses a bad expression with BAD_USER_INPUT naming input.expression and the position', async () => {
      const e = await fails(operator, CREATE, { input: named({ kind: 'EXPRESSION', expression: 'power < 5 and' }) });
      expect(e).toMatchObject({ codes: ['BAD_USER_INPUT'], field: 'input.expression' });
      expect(e.message).toContain('at position 14');
      const js = await fails(operator, CREATE, { input: named({ kind: 'EXPRESSION', expression: 'require("fs") > 1' }) });
      expect(js).toMatchObject({ codes: ['BAD_USER_INPUT'], field: 'input.expression' });
    });

    it('refuses fields that do not fit the kind, naming each', async () => {
      const cases: [Record<string, unknown>, string][] = [
        [{ kind: 'NO_DATA', metric: 'power' }, 'input.noDataSeconds'],
        [{ kind: 'NO_DATA', metric: 'power', noDataSeconds: 30 }, 'input.noDataSeconds'],
        [{ kind: 'EXPRESSION', expression: 'a > 1', threshold: 3 }, 'input.threshold'],
        [{ metric: 'v', operator: 'GT' }, 'input.threshold'],
        [{ metric: 'v', operator: 'GT', threshold: 1, repeatCount: 3 }, 'input.windowSeconds'],
        [{ metric: 'v', operator: 'GT', threshold: 1, repeatCount: 3, windowSeconds: 60, forSeconds: 60 }, 'input.forSeconds'],
        [{ metric: 'v', operator: 'GT', threshold: 1, forSeconds: 0 }, 'input.forSeconds'],
        [{ kind: 'EXPRESSION', expression: 'a > 1', metric: 'b' }, 'input.metric'],
      ];
      for (const [input, field] of cases)
        expect(await fails(operator, CREATE, { input: named(input) }), JSON.stringify(input)).toMatchObject({
          codes: ['BAD_USER_INPUT'],
          field,
        });
    });

    it('refuses an unknown metric of a profile that declares its metrics, and an unknown site', async () => {
      const p = await f.t.db
        .insertInto('device_profiles')
        .values({ org_id: orgA, name: 'lamp', metrics: JSON.stringify([{ name: 'power' }, { name: 'lampState' }]) })
        .returning('id')
        .executeTakeFirstOrThrow();
      expect(
        await fails(operator, CREATE, { input: named({ metric: 'powr', operator: 'LT', threshold: 5, profileId: p.id }) }),
      ).toMatchObject({
        codes: ['BAD_USER_INPUT'],
        field: 'input.metric',
        message: expect.stringContaining('unknown metric "powr"'),
      });
      expect(
        await fails(operator, CREATE, { input: named({ kind: 'EXPRESSION', expression: 'power < 5 and lamp == 1', profileId: p.id }) }),
      ).toMatchObject({
        field: 'input.expression',
      });
      await f.ok(operator, CREATE, { input: named({ kind: 'EXPRESSION', expression: 'power < 5 and lampState == 1', profileId: p.id }) });
      expect(
        await fails(operator, CREATE, { input: named({ metric: 'v', operator: 'GT', threshold: 1, siteId: randomUUID() }) }),
      ).toMatchObject({
        codes: ['BAD_USER_INPUT'],
        field: 'siteId',
      });
    });

    it('stores a notify action with its defaults, refuses a bad one naming the field, and removes it with null', async () => {
      const q = `mutation($input: CreateRuleInput!) { createRule(input: $input) { id notify { rules roles userIds templateKey onClear } } }`;
      const { createRule: r } = await f.ok<{ createRule: { id: string; notify: unknown } }>(operator, q, {
        input: named({ metric: 'v', operator: 'GT', threshold: 1, notify: { roles: ['operator'], templateKey: 'lamp.dark' } }),
      });
      expect(r.notify).toEqual({ rules: true, roles: ['operator'], userIds: [], templateKey: 'lamp.dark', onClear: false });
      expect(
        await fails(operator, q, { input: named({ metric: 'v', operator: 'GT', threshold: 1, notify: { roles: ['root'] } }) }),
      ).toMatchObject({
        codes: ['BAD_USER_INPUT'],
        field: 'input.notify.roles.0',
      });
      const u = await f.ok<{ updateRule: { notify: unknown } }>(
        operator,
        'mutation($id: ID!) { updateRule(id: $id, input: { notify: null }) { notify { rules } } }',
        { id: r.id },
      );
      expect(u.updateRule.notify).toBeNull();
    });

    it('lets a viewer write nothing', async () => {
      expect((await fails(viewer, CREATE, { input: named({ kind: 'NO_DATA', metric: 'power', noDataSeconds: 900 }) })).codes).toEqual([
        'FORBIDDEN',
      ]);
    });
  });

  describe('clearOnDisable', () => {
    async function withOpenAlarm(clearOnDisable: boolean) {
      const { createRule: r } = await f.ok<{ createRule: { id: string } }>(operator, CREATE, {
        input: named({ metric: 'v', operator: 'GT', threshold: 1, clearOnDisable }),
      });
      const dev = await f.t.db
        .insertInto('devices')
        .values({ org_id: orgA, serial: `D-${randomUUID()}`, name: 'd' })
        .returning('id')
        .executeTakeFirstOrThrow();
      const a = await f.t.db
        .insertInto('alarms')
        .values({ org_id: orgA, device_id: dev.id, rule_id: r.id, type: 'T', severity: 'major', raised_by: `rule:${r.id}` })
        .returning('id')
        .executeTakeFirstOrThrow();
      return { ruleId: r.id, alarmId: a.id };
    }
    const alarm = (id: string) =>
      f.t.db.selectFrom('alarms').select(['cleared_at', 'cleared_by']).where('id', '=', id).executeTakeFirstOrThrow();

    it('clears the open alarms of a rule that asks for it when it is disabled or deleted, with history', async () => {
      const a = await withOpenAlarm(true);
      await f.ok(operator, UPDATE, { id: a.ruleId, input: { enabled: false } });
      expect(await alarm(a.alarmId)).toMatchObject({ cleared_by: `rule:${a.ruleId}` });
      const history = await f.t.db.selectFrom('alarm_events').select(['kind', 'note']).where('alarm_id', '=', a.alarmId).execute();
      expect(history).toEqual([{ kind: 'cleared', note: 'rule disabled' }]);
      const b = await withOpenAlarm(true);
      await f.ok(operator, DELETE, { id: b.ruleId });
      expect((await alarm(b.alarmId)).cleared_at).not.toBeNull();
    });

    it('leaves them open otherwise', async () => {
      const a = await withOpenAlarm(false);
      await f.ok(operator, UPDATE, { id: a.ruleId, input: { enabled: false } });
      await f.ok(operator, DELETE, { id: a.ruleId });
      expect((await alarm(a.alarmId)).cleared_at).toBeNull();
    });
  });

  describe('dryRunRule over a past window', () => {
    it('replays stored readings, duration timers and no-data silences included', async () => {
      const dev = await f.t.db
        .insertInto('devices')
        .values({ org_id: orgA, serial: `W-${randomUUID()}`, name: 'w' })
        .returning('id')
        .executeTakeFirstOrThrow();
      const t0 = Date.now() - 3 * 3600_000;
      const at = (min: number) => new Date(t0 + min * 60_000);
      for (const [min, v] of [
        [0, 1],
        [5, 1],
        [20, 1],
        [21, 90],
      ] as const) {
        await sql`insert into device_metrics values (${at(min)}, ${orgA}, ${dev.id}, 'power', ${v}, null)`.execute(f.t.db);
      }
      const window = { from: at(0).toISOString(), to: at(120).toISOString() };
      const duration = await f.ok<{ dryRunRule: Record<string, unknown> }>(operator, DRY_RUN, {
        input: named({ metric: 'power', operator: 'LT', threshold: 5, forSeconds: 600 }),
        window,
      });
      expect(duration.dryRunRule).toMatchObject({
        readings: 4,
        raises: 1,
        matching: 1,
        matches: [{ device: { id: dev.id }, ts: at(10).toISOString() }],
      });
      const silence = await f.ok<{ dryRunRule: { raises: number; matches: { device: { id: string }; ts: string }[] } }>(operator, DRY_RUN, {
        input: named({ kind: 'NO_DATA', metric: 'power', noDataSeconds: 1800 }),
        window,
      });
      expect(silence.dryRunRule.matches.find((m) => m.device.id === dev.id)?.ts).toBe(at(51).toISOString());
      expect(
        await f.t.db
          .selectFrom('rules')
          .select('id')
          .where('name', 'like', 'R %')
          .where('metric', '=', 'power')
          .where('no_data_seconds', '=', 1800)
          .execute(),
      ).toEqual([]);
    });

    it('refuses a window that ends before it starts or is longer than 31 days', async () => {
      const input = named({ metric: 'power', operator: 'LT', threshold: 5 });
      expect(await fails(operator, DRY_RUN, { input, window: { from: '2026-01-02T00:00:00Z', to: '2026-01-01T00:00:00Z' } })).toMatchObject(
        { field: 'window.to' },
      );
      expect(await fails(operator, DRY_RUN, { input, window: { from: '2026-01-01T00:00:00Z', to: '2026-03-01T00:00:00Z' } })).toMatchObject(
        { field: 'window' },
      );
    });
  });

  describe('schedules', () => {
    it('creates, lists, updates (next occurrence recomputed in its time zone) and deletes a schedule', async () => {
      const { createSchedule: s } = await f.ok<{ createSchedule: Record<string, unknown> & { id: string; nextRunAt: string } }>(
        operator,
        CREATE_SCHEDULE,
        {
          input: { name: 'Night report', cron: '0 6 * * *', timeZone: 'Europe/Amsterdam', action: { kind: 'ALARM_REPORT' } },
        },
      );
      expect(s).toMatchObject({
        name: 'Night report',
        enabled: true,
        cron: '0 6 * * *',
        timeZone: 'Europe/Amsterdam',
        action: { kind: 'ALARM_REPORT', rule: null, site: null },
        runs: [],
      });
      const local = new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Amsterdam', hour: '2-digit', minute: '2-digit' }).format(
        new Date(s.nextRunAt),
      );
      expect(local).toBe('06:00');
      const { createRule: r } = await f.ok<{ createRule: { id: string } }>(operator, CREATE, {
        input: named({ metric: 'v', operator: 'GT', threshold: 1 }),
      });
      const { updateSchedule: u } = await f.ok<{ updateSchedule: Record<string, unknown> }>(operator, UPDATE_SCHEDULE, {
        id: s.id,
        input: { enabled: false, action: { kind: 'DISABLE_RULE', ruleId: r.id } },
      });
      expect(u).toMatchObject({ enabled: false, nextRunAt: null, action: { kind: 'DISABLE_RULE', rule: { id: r.id } } });
      expect((await f.ok<{ schedules: { id: string }[] }>(viewer, SCHEDULES)).schedules.map((x) => x.id)).toContain(s.id);
      const audits = await f.t.db.selectFrom('audit_logs').select('action').where('entity_id', '=', s.id).orderBy('at').execute();
      expect(audits.map((a) => a.action)).toEqual(['schedule.create', 'schedule.update']);
      await f.ok(operator, DELETE_SCHEDULE, { id: s.id });
      expect((await f.ok<{ schedule: null }>(operator, ONE_SCHEDULE, { id: s.id })).schedule).toBeNull();
    });

    it('refuses a bad cron or time zone, and an action rule or site that is not the organization’s, naming the field', async () => {
      const base = { name: `S ${randomUUID()}`, cron: '0 6 * * *', timeZone: 'UTC', action: { kind: 'ALARM_REPORT' } };
      expect(await fails(operator, CREATE_SCHEDULE, { input: { ...base, cron: '0 25 * * *' } })).toMatchObject({
        codes: ['BAD_USER_INPUT'],
        field: 'input.cron',
        message: expect.stringContaining('hour'),
      });
      expect(await fails(operator, CREATE_SCHEDULE, { input: { ...base, cron: 'every day' } })).toMatchObject({ field: 'input.cron' });
      expect(await fails(operator, CREATE_SCHEDULE, { input: { ...base, timeZone: 'Europe/Atlantis' } })).toMatchObject({
        field: 'input.timeZone',
      });
      const { createRule: foreign } = await f.ok<{ createRule: { id: string } }>(outsider, CREATE, {
        input: named({ metric: 'v', operator: 'GT', threshold: 1 }),
      });
      expect(
        await fails(operator, CREATE_SCHEDULE, { input: { ...base, action: { kind: 'ENABLE_RULE', ruleId: foreign.id } } }),
      ).toMatchObject({
        field: 'input.action.ruleId',
      });
      expect(await fails(operator, CREATE_SCHEDULE, { input: { ...base, action: { kind: 'ENABLE_RULE' } } })).toMatchObject({
        field: 'input.action.ruleId',
      });
      expect(
        await fails(operator, CREATE_SCHEDULE, { input: { ...base, action: { kind: 'ALARM_REPORT', siteId: randomUUID() } } }),
      ).toMatchObject({
        field: 'input.action.siteId',
      });
    });

    it('lets a viewer read but not write, and another organization neither see nor touch a schedule', async () => {
      const input = { name: `S ${randomUUID()}`, cron: '@hourly', timeZone: 'UTC', action: { kind: 'ALARM_REPORT' } };
      expect((await fails(viewer, CREATE_SCHEDULE, { input })).codes).toEqual(['FORBIDDEN']);
      const { createSchedule: s } = await f.ok<{ createSchedule: { id: string } }>(operator, CREATE_SCHEDULE, { input });
      expect((await fails(viewer, DELETE_SCHEDULE, { id: s.id })).codes).toEqual(['FORBIDDEN']);
      expect((await f.ok<{ schedule: null }>(outsider, ONE_SCHEDULE, { id: s.id })).schedule).toBeNull();
      expect((await f.ok<{ schedules: { id: string }[] }>(outsider, SCHEDULES)).schedules.map((x) => x.id)).not.toContain(s.id);
      expect((await fails(outsider, UPDATE_SCHEDULE, { id: s.id, input: { enabled: false } })).codes).toEqual(['NOT_FOUND']);
      expect((await fails(outsider, DELETE_SCHEDULE, { id: s.id })).codes).toEqual(['NOT_FOUND']);
      const entities = await f.ok<{ _entities: unknown[] }>(
        outsider,
        'query($r: [_Any!]!) { _entities(representations: $r) { ... on Schedule { id } } }',
        {
          r: [{ __typename: 'Schedule', id: s.id }],
        },
      );
      expect(entities._entities).toEqual([null]);
    });
  });
});
