import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/support/db.js';
import { BinaryCopyWriter } from './copy-binary.js';

let t: TestDatabase;
let sql: pg.Client;

beforeAll(async () => {
  t = await createTestDatabase();
  sql = new pg.Client({ connectionString: t.url });
  await sql.connect();
  await sql.query("set time zone 'UTC'");
  await sql.query('create table copy_binary_t (at timestamptz, id uuid, name text, v double precision)');
});

afterAll(async () => {
  await sql?.end();
  await t?.drop();
});

function copy(data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = sql.query(copyFrom('copy copy_binary_t (at, id, name, v) from stdin with (format binary)'));
    s.on('finish', resolve);
    s.on('error', reject);
    s.end(data);
  });
}

interface Sample {
  at: number;
  id: string;
  name: string | null;
  v: number | null;
}

describe('BinaryCopyWriter', () => {
  it('should round-trip timestamps, uuids, text and doubles through COPY binary', async () => {
    const samples: Sample[] = [
      { at: Date.UTC(2026, 10, 27, 8, 30, 1, 123), id: '0a1b2c3d-4e5f-6789-abcd-ef0123456789', name: 'power', v: 12.5 },
      { at: 946_684_800_000, id: 'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF', name: 'zählerstand ⚡ 電力', v: -0.1 },
      { at: 946_684_799_999, id: '00000000000000000000000000000000', name: null, v: null },
      { at: 0, id: '12345678-9abc-def0-1234-56789abcdef0', name: '', v: Number.MAX_VALUE },
      { at: 4_102_444_800_000, id: '12345678-9abc-def0-1234-56789abcdef0', name: 'tab\tnew\nline\\', v: 5e-324 },
    ];
    const w = new BinaryCopyWriter(64);
    for (const s of samples) w.row(4).timestamptz(s.at).uuid(s.id).text(s.name).float8(s.v);
    // A buffer that had to grow many times from 64 bytes.
    expect(w.length).toBeGreaterThan(64);
    await copy(w.finish());
    const r = await sql.query<{ at: Date; id: string; name: string | null; v: number | null }>(
      'select at, id::text, name, v from copy_binary_t order by ctid',
    );
    expect(r.rows.map((x) => ({ at: x.at.getTime(), id: x.id, name: x.name, v: x.v }))).toEqual(
      samples.map((s) => ({
        at: s.at,
        id: s.id
          .replace(/-/g, '')
          .toLowerCase()
          .replace(/^(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-'),
        name: s.name,
        v: s.v,
      })),
    );
  });

  it('should round-trip bigints through COPY binary, and refuse unsafe ones', async () => {
    await sql.query('create table copy_binary_n (n bigint)');
    const values = [0, 1, -1, 4_294_967_295, 4_294_967_296, -4_294_967_297, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER];
    const w = new BinaryCopyWriter(64);
    for (const n of values) w.row(1).int8(n);
    await new Promise<void>((resolve, reject) => {
      const s = sql.query(copyFrom('copy copy_binary_n (n) from stdin with (format binary)'));
      s.on('finish', resolve);
      s.on('error', reject);
      s.end(w.finish());
    });
    const r = await sql.query<{ n: string }>('select n::text as n from copy_binary_n order by ctid');
    expect(r.rows.map((x) => x.n)).toEqual(values.map(String));
    expect(() => new BinaryCopyWriter().row(1).int8(2 ** 53)).toThrow(RangeError);
    expect(() => new BinaryCopyWriter().row(1).int8(1.5)).toThrow(RangeError);
  });

  it('should refuse a value that is not a uuid', () => {
    const w = new BinaryCopyWriter();
    expect(() => w.row(1).uuid('not-a-uuid')).toThrow(TypeError);
    expect(() => new BinaryCopyWriter().row(1).uuid('0a1b2c3d-4e5f-6789-abcd-ef01234567')).toThrow(TypeError);
    expect(() => new BinaryCopyWriter().row(1).uuid('0a1b2c3d-4e5f-6789-abcd-ef0123456789a')).toThrow(TypeError);
  });

  it('should keep millisecond precision of a timestamp', () => {
    const w = new BinaryCopyWriter();
    w.row(1).timestamptz(946_684_800_001);
    const b = w.finish();
    // header (19) + field count (2) + length (4), then int64 microseconds since 2000-01-01
    expect(b.readBigInt64BE(25)).toBe(1000n);
    expect(b.readInt16BE(b.length - 2)).toBe(-1);
  });
});
