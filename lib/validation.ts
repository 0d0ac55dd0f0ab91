import type { z } from 'zod';
import { isUuid } from './db.js';
import { BadInputError } from './errors.js';

/** Parses `value` or throws BAD_USER_INPUT `"<field>: <reason>"` for the first problem. */
export function check<S extends z.ZodType>(schema: S, value: unknown, field: string): z.output<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const path = [field, ...(issue?.path ?? [])].filter((p) => p !== '').join('.');
  throw new BadInputError(`${path}: ${issue?.message ?? 'invalid'}`, { field: path });
}

/** An id argument: malformed → BAD_USER_INPUT (unknown ids become NOT_FOUND later). */
export function checkId(id: unknown, field = 'id'): string {
  if (!isUuid(id)) throw new BadInputError(`${field}: must be a uuid`, { field });
  return id;
}

/** A batch of ids: at most 1,000, each a uuid. */
export function checkIds(ids: unknown, field = 'ids'): string[] {
  if (!Array.isArray(ids)) throw new BadInputError(`${field}: must be a list`, { field });
  if (ids.length > 1000) throw new BadInputError(`${field}: at most 1000 ids per call`, { field });
  return ids.map((id, i) => checkId(id, `${field}[${i}]`));
}
