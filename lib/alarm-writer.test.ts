import { randomBytes, randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../test/support/db.js';
import { writeAlarms } from './alarm-writer.js';
import { withTenant } from './db.js';

let t: TestDatabase;
let orgId: string;
let deviceId: string;

beforeAll(async () => {
  t = await createTestDatabase();
  const o = await t.db
    .insertInto('organizations')
    .values({ slug: `o-${randomBytes(4).toString('hex')}`, name: 'O' })
    .returning('id')
    .executeTakeFirstOrThrow();
  orgId = o.id;
  deviceId = randomUUID();
  await t.db.insertInto('devices').values({ id: deviceId, org_id: orgId, serial: 'SL-1', name: 'Light' }).execute();
});
afterAll(async () => {
  await t?.drop();
});

const write = (batch: Parameters<typeof writeAlarms>[2]) => withTenant(t.db, orgId, (tx) => writeAlarms(tx, orgId, batch));
const raise = (type: string, at: number | null, readingTs: number | null = at) => ({
  deviceId,
  ruleId: null,
  type,
  severity: 'major',
  message: `${type} happened`,
  value: 1,
  readingTs,
  at,
  actor: 'test',
});
const alarm = async (id: string) =>
  (
    await sql<{
      raised_at: Date;
      last_at: Date;
      cleared_at: Date | null;
      occurrences: number;
      severity: string;
      reading_ts: string | null;
    }>`
      select raised_at, last_at, cleared_at, occurrences, severity, reading_ts from alarms where id = ${id}`.execute(t.db)
  ).rows[0];
const history = async (id: string) =>
  (
    await sql<{
      kind: string;
      actor: string;
      note: string | null;
    }>`select kind, actor, note from alarm_events where alarm_id = ${id} order by id`.execute(t.db)
  ).rows;

describe('the one alarm writer', () => {
  it('dates a raise by its reading, capped at now, and by now() without one', async () => {
    const past = Date.now() - 3_600_000;
    const w = await write({ raise: [raise('A', past), raise('B', Date.now() + 3_600_000), raise('C', null)] });
    expect(w.raised).toHaveLength(3);
    const byType = new Map(w.raised.map((a) => [a.type, a.id]));
    expect((await alarm(byType.get('A') as string))?.raised_at.getTime()).toBe(past);
    for (const type of ['B', 'C'])
      expect(Math.abs(((await alarm(byType.get(type) as string))?.raised_at.getTime() ?? 0) - Date.now())).toBeLessThan(60_000);
    expect(w.events.map((e) => e[0])).toEqual(['raised', 'raised', 'raised']);
    expect(await history(byType.get('A') as string)).toEqual([{ kind: 'raised', actor: 'test', note: null }]);
  });

  it('raises one open alarm per device and type: a second raise writes nothing', async () => {
    const first = await write({ raise: [raise('D', Date.now() - 1000)] });
    const again = await write({ raise: [raise('D', Date.now())] });
    expect(first.raised).toHaveLength(1);
    expect(again.raised).toEqual([]);
    expect(again.events).toEqual([]);
  });

  it('refreshes with the newer reading only, and records a severity change', async () => {
    const ts = Date.now() - 60_000;
    const [a] = (await write({ raise: [raise('E', ts)] })).raised;
    const id = a?.id as string;
    const older = await write({ refresh: [{ id, value: 2, readingTs: ts - 1, at: ts - 1, breach: true, severity: 'major', actor: 't' }] });
    expect(older.updated).toEqual([]);
    const newer = await write({
      refresh: [
        { id, value: 3, readingTs: ts + 1000, at: ts + 1000, breach: true, severity: 'critical', previousSeverity: 'major', actor: 't' },
      ],
    });
    expect(newer.events.map((e) => e[0])).toEqual(['updated']);
    expect(await alarm(id)).toMatchObject({ occurrences: 2, severity: 'critical', reading_ts: ts + 1000 });
    expect((await alarm(id))?.last_at.getTime()).toBe(ts + 1000);
    expect((await history(id)).map((h) => [h.kind, h.note])).toEqual([
      ['raised', null],
      ['updated', 'severity critical'],
    ]);
  });

  it('clears once, at the reading time, with a history entry and its note', async () => {
    const ts = Date.now() - 60_000;
    const [a] = (await write({ raise: [raise('F', ts)] })).raised;
    const id = a?.id as string;
    const clear = { id, value: 0, readingTs: ts + 5000, at: ts + 5000, actor: 'rule:x', note: 'recovered' };
    expect((await write({ clear: [clear] })).cleared).toHaveLength(1);
    expect((await write({ clear: [clear] })).cleared).toEqual([]);
    expect((await alarm(id))?.cleared_at?.getTime()).toBe(ts + 5000);
    expect((await history(id)).map((h) => [h.kind, h.actor, h.note])).toEqual([
      ['raised', 'test', null],
      ['cleared', 'rule:x', 'recovered'],
    ]);
  });
});
