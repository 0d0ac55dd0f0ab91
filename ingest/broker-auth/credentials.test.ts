import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/support/db.js';
import { CredentialDirectory } from './credentials.js';

// The credential directory against PostgreSQL: what it holds after loading, what its background
// refresh keeps and drops, and that a notice still drops a device's entries at once. Its own
// database; the statements it runs are counted to show what it answers from memory.

let t: TestDatabase;
let pool: pg.Pool;
let orgId: string;
let statements = 0;
const query = (text: string, values: unknown[]) => {
  statements++;
  return pool.query(text, values);
};

async function device(): Promise<{ id: string; username: string; credentialId: string }> {
  const tag = randomBytes(4).toString('hex');
  const d = await pool.query<{ id: string }>(`insert into devices (org_id, serial, name) values ($1, $2, $2) returning id`, [
    orgId,
    `D-${tag}`,
  ]);
  const id = d.rows[0]?.id as string;
  const username = `${id}.${tag}`;
  const c = await pool.query<{ id: string }>(
    `insert into device_credentials (org_id, device_id, username, secret_hash, hash_scheme) values ($1, $2, $3, 'x', 'argon2id') returning id`,
    [orgId, id, username],
  );
  return { id, username, credentialId: c.rows[0]?.id as string };
}

beforeAll(async () => {
  t = await createTestDatabase();
  pool = new pg.Pool({ connectionString: t.directUrl, max: 2 });
  const o = await pool.query<{ id: string }>(`insert into organizations (slug, name) values ('dir-test', 'Directory') returning id`);
  orgId = o.rows[0]?.id as string;
});

afterAll(async () => {
  await pool?.end();
  await t?.drop();
});

describe('the credential directory of broker authentication', () => {
  it('holds every valid credential after loading and answers them without the database', async () => {
    const a = await device();
    const b = await device();
    const revoked = await device();
    await pool.query(`update device_credentials set revoked_at = now() where id = $1`, [revoked.credentialId]);
    const dir = new CredentialDirectory(query, 60_000);
    expect(dir.loaded).toBe(false);
    expect(await dir.load()).toBeGreaterThanOrEqual(2);
    expect(dir.loaded).toBe(true);
    const before = statements;
    expect((await dir.byUsername(a.username))?.deviceId).toBe(a.id);
    expect((await dir.byUsername(b.username))?.deviceId).toBe(b.id);
    expect(statements).toBe(before);
    // not loaded, so looked up (and not found)
    expect(await dir.byUsername(revoked.username)).toBeUndefined();
    expect(statements).toBe(before + 1);
    dir.close();
  });

  it('drops at its next refresh what was revoked or decommissioned without a notice, and keeps what did not change', async () => {
    const a = await device();
    const graced = await device();
    const b = await device();
    const c = await device();
    // an end with microseconds: the database and the process must agree on it to the millisecond
    await pool.query(`update device_credentials set expires_at = now() + interval '1 hour 0.123456 second' where id = $1`, [
      graced.credentialId,
    ]);
    const dir = new CredentialDirectory(query, 60_000);
    await dir.load();
    await pool.query(`update device_credentials set revoked_at = now() where id = $1`, [b.credentialId]);
    await pool.query(`update devices set decommissioned_at = now() where id = $1`, [c.id]);
    // no notice: the stale entries are still answered until the refresh
    expect((await dir.byUsername(b.username))?.deviceId).toBe(b.id);
    const held = await dir.byUsername(a.username);
    await dir.refresh();
    const before = statements;
    expect(await dir.byUsername(a.username)).toBe(held);
    expect((await dir.byUsername(graced.username))?.expiresAt).toBeGreaterThan(Date.now());
    expect(statements).toBe(before);
    expect(await dir.byUsername(b.username)).toBeUndefined();
    expect((await dir.byUsername(c.username))?.decommissioned).toBe(true);
    expect(statements).toBe(before + 2);
    dir.close();
  });

  it("drops a device's entries at once on its notice, so the next lookup reads the database", async () => {
    const a = await device();
    const dir = new CredentialDirectory(query, 60_000);
    await dir.load();
    await pool.query(`update devices set decommissioned_at = now() where id = $1`, [a.id]);
    dir.apply({ orgId, kind: 'decommissioned', deviceIds: [a.id] });
    const before = statements;
    expect((await dir.byUsername(a.username))?.decommissioned).toBe(true);
    expect(statements).toBe(before + 1);
    dir.close();
  });

  it('loads only devices in service and secrets not past their end', async () => {
    const gone = await device();
    const ended = await device();
    await pool.query(`update devices set decommissioned_at = now() where id = $1`, [gone.id]);
    await pool.query(`update device_credentials set expires_at = now() - interval '1 second' where id = $1`, [ended.credentialId]);
    const dir = new CredentialDirectory(query, 60_000);
    await dir.load();
    const before = statements;
    // both missed: looked up together, in one statement
    await Promise.all([dir.byUsername(gone.username), dir.byUsername(ended.username)]);
    expect(statements).toBe(before + 1);
    dir.close();
  });

  it('refreshes and drops a device with several credentials and usernames not found, key by key', async () => {
    const a = await device();
    // a second, rotated-in credential of the same device
    const tag = randomBytes(4).toString('hex');
    const second = `${a.id}.${tag}`;
    const c2 = await pool.query<{ id: string }>(
      `insert into device_credentials (org_id, device_id, username, secret_hash, hash_scheme) values ($1, $2, $3, 'x', 'argon2id') returning id`,
      [orgId, a.id, second],
    );
    const dir = new CredentialDirectory(query, 60_000);
    await dir.load();
    // a made-up username of the same device, remembered as not found
    expect(await dir.byUsername(`${a.id}.00000000`)).toBeUndefined();
    await pool.query(`update device_credentials set revoked_at = now() where id = $1`, [c2.rows[0]?.id]);
    await dir.refresh();
    let before = statements;
    expect((await dir.byUsername(a.username))?.deviceId).toBe(a.id);
    expect(statements).toBe(before);
    expect(await dir.byUsername(second)).toBeUndefined();
    expect(statements).toBe(before + 1);
    // a notice drops every key of the device, whatever their number
    dir.apply({ orgId, kind: 'decommissioned', deviceIds: [a.id] });
    before = statements;
    await Promise.all([dir.byUsername(a.username), dir.byUsername(`${a.id}.00000000`)]);
    expect(statements).toBe(before + 1);
    dir.close();
  });
});
