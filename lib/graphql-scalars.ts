import { GraphQLError, GraphQLScalarType, Kind, valueFromASTUntyped } from 'graphql';
import { isUuid } from './db.js';
import { BadInputError, ErrorCode } from './errors.js';

const badDate = (what: string) =>
  new GraphQLError(`${what} is not a valid DateTime (ISO-8601)`, { extensions: { code: ErrorCode.BadUserInput } });

function toDate(v: unknown): Date {
  const d = typeof v === 'string' ? new Date(v) : Number.NaN;
  if (!(d instanceof Date) || Number.isNaN(d.getTime())) throw badDate(JSON.stringify(v));
  return d;
}

/** ISO-8601 instants; accepts any string `Date` parses with an explicit date, answers in UTC. */
export const DateTimeScalar = new GraphQLScalarType<Date, string>({
  name: 'DateTime',
  serialize(v) {
    const d = v instanceof Date ? v : new Date(v as string | number);
    if (Number.isNaN(d.getTime())) throw new GraphQLError('DateTime cannot represent an invalid date');
    return d.toISOString();
  },
  parseValue: toDate,
  parseLiteral(ast) {
    if (ast.kind !== Kind.STRING) throw badDate('literal');
    return toDate(ast.value);
  },
});

/** An opaque page cursor: the sort key of the last row, as base64url JSON. */
export const encodeCursor = (key: readonly (string | number)[]) => Buffer.from(JSON.stringify(key)).toString('base64url');

/**
 * The sort key inside a cursor made by {@link encodeCursor}, checked by `valid`; anything else
 * (tampered, from another list) is BAD_USER_INPUT `invalid cursor`.
 */
export function decodeCursor<T extends unknown[]>(cursor: string, valid: (key: unknown[]) => key is T): T {
  try {
    const key = JSON.parse(Buffer.from(cursor, 'base64url').toString()) as unknown;
    if (Array.isArray(key) && valid(key)) return key;
  } catch {
    /* fall through */
  }
  throw new BadInputError('invalid cursor');
}

const PG_TIMESTAMPTZ = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(\.\d{1,6})?[+-](\d{2})(:\d{2}){0,2}$/;

/**
 * Is `s` a timestamptz as PostgreSQL prints it (`2026-01-31 12:00:00.123456+00`) naming a real
 * instant? A cursor is client input: a forged "February 30" must be BAD_USER_INPUT, not a SQL error.
 */
export function isPgTimestamptz(s: string): boolean {
  const m = PG_TIMESTAMPTZ.exec(s);
  if (!m) return false;
  const [y, mo, d, h, mi, se] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const t = new Date(Date.UTC(y, mo - 1, d, h, mi, se));
  return (
    t.getUTCFullYear() === y &&
    t.getUTCMonth() === mo - 1 &&
    t.getUTCDate() === d &&
    t.getUTCHours() === h &&
    t.getUTCMinutes() === mi &&
    t.getUTCSeconds() === se &&
    Number(m[8]) <= 15
  );
}

/** The `[timestamptz text, uuid]` key of a newest-first keyset cursor (alarms, rules). */
export const decodeTimeIdCursor = (cursor: string): [time: string, id: string] =>
  decodeCursor(cursor, (k): k is [string, string] => k.length === 2 && typeof k[0] === 'string' && isPgTimestamptz(k[0]) && isUuid(k[1]));

/**
 * A GraphQL enum's resolver map from its stored lower-case words (`major` ↔ `MAJOR`), so resolvers
 * and SQL see the database's values.
 */
export const upperCaseEnum = (values: readonly string[]): Record<string, string> =>
  Object.fromEntries(values.map((v) => [v.toUpperCase(), v]));

/** `scalar JSON`: any JSON value, passed through (the field's own validation checks it). */
export const JSONScalar = new GraphQLScalarType({
  name: 'JSON',
  serialize: (v) => v,
  parseValue: (v) => v,
  parseLiteral: (ast, vars) => valueFromASTUntyped(ast, vars),
});
