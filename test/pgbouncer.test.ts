// Runs in the `pgbouncer` vitest project only: what transaction pooling changes for RULR's own
// database use (docs/operations.md, PgBouncer). The rest of that pass is the integration suite.
import { randomUUID } from 'node:crypto';
import { Kysely, PostgresAdapter, PostgresDialect } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Fleet, seedFleet } from '../ingest/testing/fixtures.js';
import { createPool } from '../lib/db.js';
import { BatchWriter, type Row } from '../lib/telemetry/writer.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { POOLER_BASE } from './support/env.js';

let t: TestDatabase;
let direct: pg.Client;
let fleet: Fleet;
const clients: pg.Client[] = [];

async function pooled(): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: t.url });
  await c.connect();
  clients.push(c);
  return c;
}

beforeAll(async () => {
  t = await createTestDatabase();
  direct = new pg.Client({ connectionString: t.directUrl });
  await direct.connect();
  // Every server connection PgBouncer opens to this database starts with asynchronous commit.
  await direct.query(`alter database ${t.name} set synchronous_commit = off`);
  await direct.query(`
    create table seen_synchronous_commit (v text);
    create function record_synchronous_commit() returns trigger language plpgsql as $$
      begin insert into seen_synchronous_commit values (current_setting('synchronous_commit')); return null; end $$;
    create trigger record_synchronous_commit after insert on dead_letters
      for each statement execute function record_synchronous_commit()`);
  fleet = await seedFleet(t.url, { devices: 1 });
});

afterAll(async () => {
  for (const c of clients) await c.end().catch(() => undefined);
  await direct?.end();
  await t?.drop();
});

const hour = Math.floor(Date.now() / 3_600_000) * 3_600_000 - 3_600_000;
const rows = (n: number): Row[] =>
  Array.from({ length: n }, (_, i) => ({
    ts: hour + i * 1000,
    orgId: fleet.orgId,
    deviceId: fleet.deviceIds[0] as string,
    metric: 'power',
    value: i,
    text: null,
    counter: false,
  }));

describe('RULR behind PgBouncer in transaction mode', () => {
  it('goes through PgBouncer, not straight to PostgreSQL', () => {
    expect(POOLER_BASE).toBeTruthy();
    expect(t.url.startsWith(`${POOLER_BASE}/`)).toBe(true);
    expect(t.url).not.toBe(t.directUrl);
  });

  it('writes a redelivered batch when its transaction runs on a server connection without the staging table', async () => {
    const writer = new BatchWriter(t.url);
    try {
      expect(await writer.write(rows(10), [])).toMatchObject({ path: 'fast', inserted: 10 });
      expect(await writer.write(rows(20), [])).toMatchObject({ path: 'staged', inserted: 10 });
      // Hold, each in a transaction, PgBouncer's server connections until the one with the staging
      // table is held: the writer's next transaction then runs on one without it.
      let held = false;
      for (let i = 0; i < 10 && !held; i++) {
        const c = await pooled();
        await c.query('begin');
        const r = await c.query<{ has: boolean }>(`select to_regclass('pg_temp.rulr_ingest_stage') is not null as has`);
        held = r.rows[0]?.has === true;
      }
      expect(held).toBe(true);
      expect(await writer.write(rows(30), [])).toMatchObject({ path: 'staged', inserted: 10 });
      expect((await direct.query('select count(*)::int n from device_metrics')).rows[0].n).toBe(30);
    } finally {
      await writer.close();
      for (const c of clients.splice(0)) await c.end();
    }
  });

  it("commits each batch synchronously where the server connection's default is asynchronous, and leaves that default alone", async () => {
    const writer = new BatchWriter(t.url);
    try {
      const dead = { orgId: null, deviceId: null, topic: 'devices/x/telemetry', reason: 'not_json', detail: '', payload: '{' };
      await writer.write([], [dead]);
      const other = await pooled();
      await other.query(`insert into dead_letters (topic, reason, detail, payload) values ('t', 'not_json', '', '{')`);
      expect((await direct.query('select v from seen_synchronous_commit')).rows.map((r) => r.v)).toEqual(['on', 'off']);
    } finally {
      await writer.close();
    }
  });

  it("needs migrations to go straight to PostgreSQL: Kysely's migration lock outlives its transaction", async () => {
    // A session-level advisory lock: behind transaction pooling it would stay on whichever server
    // connection took it, and the unlock could run on another one. Checked directly, where it is safe.
    const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: createPool(t.directUrl, 1) }) });
    try {
      await db.connection().execute(async (conn) => {
        await new PostgresAdapter().acquireMigrationLock(conn, { lockTable: 'l', lockRowId: randomUUID() });
        const held = await direct.query(
          `select a.state from pg_locks l join pg_stat_activity a using (pid) where l.locktype = 'advisory' and a.datname = $1`,
          [t.name],
        );
        expect(held.rows).toEqual([{ state: 'idle' }]);
        await new PostgresAdapter().releaseMigrationLock(conn, { lockTable: 'l', lockRowId: '' });
      });
    } finally {
      await db.destroy();
    }
  });
});
