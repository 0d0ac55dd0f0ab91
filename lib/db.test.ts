import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { inlineParameters, parseTimestamptz } from './db.js';

describe('inlineParameters', () => {
  it('replaces placeholders with quoted literals of node-postgres text values', () => {
    expect(inlineParameters('select * from t where a = $1 and b in ($2, $3) limit $4', ['x', 'y', null, 51])).toBe(
      "select * from t where a = 'x' and b in ('y', NULL) limit '51'",
    );
    expect(inlineParameters('select $1::uuid[]', [['a', 'b']])).toBe(`select '{"a","b"}'::uuid[]`);
    expect(inlineParameters('select $1::jsonb', [{ k: "it's" }])).toBe(`select '{"k":"it''s"}'::jsonb`);
  });

  it('escapes quotes and backslashes so a value cannot end its literal', () => {
    expect(inlineParameters('select $1', ["a'; drop table t; --"])).toBe("select 'a''; drop table t; --'");
    // pg's escapeLiteral: E'' with doubled backslashes (and its leading space)
    expect(inlineParameters('select $1', ['a\\b'])).toBe("select  E'a\\\\b'");
  });

  it('leaves $n inside string literals, quoted identifiers and comments alone', () => {
    expect(inlineParameters(`select '$1', "$2", 'it''s $1' -- $1\n, $1`, ['v'])).toBe(`select '$1', "$2", 'it''s $1' -- $1\n, 'v'`);
    expect(
      inlineParameters(
        'select $10, $1',
        Array.from({ length: 10 }, (_, i) => i + 1),
      ),
    ).toBe("select '10', '1'");
  });

  it('refuses a placeholder without a value', () => {
    expect(() => inlineParameters('select $2', ['a'])).toThrow(/\$2/);
  });
});

describe('parseTimestamptz', () => {
  it("decodes every timestamptz text to the same Date as node-postgres's own parser", () => {
    const pgParse = pg.types.getTypeParser(1184, 'text') as (t: string) => Date | number;
    const texts = [
      '2026-11-27 10:48:23.154652+00',
      '2026-11-27 10:48:23+00',
      '2026-11-27 10:48:23.1+00',
      '2026-11-27 10:48:23.009+00',
      '1970-01-01 00:00:00.000001+00',
      '0050-01-01 00:00:00+00',
      '2026-11-27 10:48:23.5+05:30',
      '2026-11-27 10:48:23-07',
      '2000-01-01 00:00:00+00 BC',
      'infinity',
      '-infinity',
    ];
    for (let i = 0; i < 2000; i++) {
      const iso = new Date(Math.floor(Math.random() * 4e12) - 1e12).toISOString();
      const fraction = String(Math.floor(Math.random() * 1e6)).slice(0, 1 + (i % 6));
      texts.push(`${iso.slice(0, 10)} ${iso.slice(11, 19)}${i % 7 ? `.${fraction}` : ''}+00`);
    }
    const value = (v: Date | number) => (v instanceof Date ? v.getTime() : v);
    for (const t of texts) expect([t, value(parseTimestamptz(t))]).toEqual([t, value(pgParse(t))]);
  });
});
