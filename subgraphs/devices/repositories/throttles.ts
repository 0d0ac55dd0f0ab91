import { createHash } from 'node:crypto';
import type { Redis } from '../../../lib/redis.js';

export interface ThrottleSettings {
  /** Failed sign-ins within `failureWindowMs` that lock an account. */
  maxFailures: number;
  failureWindowMs: number;
  /** How long a locked account stays locked (unless an admin unlocks it or its password is reset). */
  lockoutMs: number;
  /** Password-reset mails one address may be sent per hour. */
  resetsPerHour: number;
}

/**
 * Counts a failure; at the limit, locks for ARGV[3] ms and forgets the count. Returns the lock's
 * remaining ms (0: not locked). KEYS: failures, lock. ARGV: window ms, limit, lockout ms.
 */
const FAIL = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n >= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return tonumber(ARGV[3])
end
return 0
`;

/**
 * Sign-in lockout and reset-mail limits in Redis, shared by every replica. Keyed by a hash of the
 * lower-cased e-mail address, whether or not an account has it: an unknown address locks like a
 * known one, so lockout tells nothing about which addresses exist.
 */
export class PeopleThrottles {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly s: ThrottleSettings,
  ) {}

  private key(kind: string, email: string): string {
    return `${this.prefix}${kind}:${createHash('sha256').update(email.trim().toLowerCase()).digest('hex')}`;
  }

  /** Milliseconds the address stays locked (0: it is not). */
  async lockedFor(email: string): Promise<number> {
    return Math.max(0, await this.redis.pttl(this.key('login:lock', email)));
  }

  /** Records a failed sign-in; returns how long the address is now locked (0: not yet). */
  async failed(email: string): Promise<number> {
    return Number(
      await this.redis.eval(
        FAIL,
        2,
        this.key('login:fail', email),
        this.key('login:lock', email),
        String(this.s.failureWindowMs),
        String(this.s.maxFailures),
        String(this.s.lockoutMs),
      ),
    );
  }

  async succeeded(email: string): Promise<void> {
    await this.redis.del(this.key('login:fail', email));
  }

  /** Lifts a lock and forgets the failures (an admin's `unlockUser`, a password reset). */
  async unlock(email: string): Promise<boolean> {
    return (await this.redis.del(this.key('login:lock', email), this.key('login:fail', email))) > 0;
  }

  /** Counts a reset request for the address; false once it had its `resetsPerHour`. */
  async resetAllowed(email: string): Promise<boolean> {
    const key = this.key('reset:sent', email);
    const n = await this.redis.incr(key);
    if (n === 1) await this.redis.pexpire(key, 3_600_000);
    return n <= this.s.resetsPerHour;
  }
}
