import { BadInputError } from '../../lib/errors.js';
import { decodeCursor, isPgTimestamptz } from '../../lib/graphql-scalars.js';

export { check, checkId, checkIds } from '../../lib/validation.js';
/** Series and energy arguments (range, interval, aggregate) are checked where they are planned. */
export { parseAggregate, planSeries } from './series.js';

/**
 * Most dead letters one page may return.
 * @default 500
 */
export const MAX_DEAD_LETTER_PAGE = 500;

/** `deadLetters(first:)`: 1 to MAX_DEAD_LETTER_PAGE, else BAD_USER_INPUT. */
export function checkDeadLetterPage(first: number): number {
  if (first < 1 || first > MAX_DEAD_LETTER_PAGE) throw new BadInputError(`first must be between 1 and ${MAX_DEAD_LETTER_PAGE}`);
  return first;
}

/** A dead-letters cursor: `received_at` as PostgreSQL prints it and the bigint id; anything else is BAD_USER_INPUT. */
export function decodeDeadLetterCursor(c: string): { receivedAt: string; id: string } {
  const [receivedAt, id] = decodeCursor(
    c,
    (k): k is [string, string] => typeof k[0] === 'string' && isPgTimestamptz(k[0]) && typeof k[1] === 'string' && /^[0-9]+$/.test(k[1]),
  );
  return { receivedAt, id };
}
