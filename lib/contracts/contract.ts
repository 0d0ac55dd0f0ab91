import { isUuid } from '../db.js';
import { ContractError } from '../errors.js';
import { counter } from '../metrics.js';

/**
 * What every contract module shares: how a parser rejects (one error type, one counter) and the
 * small checks they are written with. See lib/contracts/README.md.
 */

export { ContractError, isUuid };

const rejectedTotal = counter(
  'rulr_contract_rejected_total',
  'Messages and stored entries a contract parser rejected (corrupt JSON, wrong type, missing field), by contract',
  ['contract'],
);

/** Counts one rejection of `contract` and throws its {@link ContractError}. */
export function reject(contract: string, reason: string): never {
  rejectedTotal.inc({ contract });
  throw new ContractError(contract, reason);
}

/** Counts `n` entries a collection parser skipped (the rest of the collection is kept). */
export function countRejected(contract: string, n: number): void {
  if (n > 0) rejectedTotal.inc({ contract }, n);
}

/** How many rejections of `contract` this process counted (tests and diagnostics). */
export async function rejectedCount(contract: string): Promise<number> {
  const m = await rejectedTotal.get();
  return m.values.find((v) => v.labels.contract === contract)?.value ?? 0;
}

/** `raw` as JSON, or a counted rejection of `contract`. */
export function decodeJson(contract: string, raw: string | Buffer): unknown {
  try {
    return JSON.parse(typeof raw === 'string' ? raw : raw.toString('utf8'));
  } catch {
    return reject(contract, 'not JSON');
  }
}

export const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A millisecond timestamp as the contracts carry it: a non-negative safe integer. */
export const isEpochMs = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
