import { describe, expect, it } from 'vitest';
import { inlineParameters } from './db.js';

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
