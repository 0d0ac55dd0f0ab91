import { ContractError } from '../../lib/contracts/contract.js';

/** The reason a contract parser gave for rejecting, or `accepted` when `parse` returned. */
export function rejectionOf(parse: () => unknown): string {
  try {
    parse();
  } catch (e) {
    if (e instanceof ContractError) return e.reason;
    throw e;
  }
  return 'accepted';
}
