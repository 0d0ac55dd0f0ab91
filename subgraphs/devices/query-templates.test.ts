import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { QueryTemplates } from './query-templates.js';

// Compiling needs no connection: the pool is never asked for one.
const db = new Kysely<{ t: { id: string; org_id: string; n: number } }>({
  dialect: new PostgresDialect({ pool: new pg.Pool({ max: 1 }) }),
});
afterAll(() => db.destroy());

describe('QueryTemplates', () => {
  it('builds a shape once and answers later requests with their own values', () => {
    const templates = new QueryTemplates();
    let builds = 0;
    const run = (orgId: string, ids: string[], limit: number) =>
      templates.statements(
        `t:${ids.length}`,
        (bind) => ({ orgId: bind(orgId), ids: ids.map(bind), limit: bind(limit) }),
        (a) => {
          builds++;
          return [db.selectFrom('t').select('id').where('org_id', '=', a.orgId).where('id', 'in', a.ids).limit(a.limit)];
        },
      );
    const first = run('o1', ['a', 'b'], 5);
    const second = run('o2', ['c', 'd'], 7);
    expect(builds).toBe(1);
    expect(second[0]?.sql).toBe(first[0]?.sql);
    expect(first[0]?.parameters).toEqual(['o1', 'a', 'b', 5]);
    expect(second[0]?.parameters).toEqual(['o2', 'c', 'd', 7]);
    expect(run('o3', ['e'], 1)[0]?.parameters).toEqual(['o3', 'e', 1]);
    expect(builds).toBe(2);
  });

  it('refuses a shape whose SQL holds a value that was not bound', () => {
    const templates = new QueryTemplates();
    expect(() =>
      templates.statements(
        'leaky',
        (bind) => ({ orgId: bind('o1') }),
        (a) => [db.selectFrom('t').select('id').where('org_id', '=', a.orgId).where(sql<boolean>`n > ${3}`)],
      ),
    ).toThrow(/not bound/);
  });
});
