import { randomBytes } from 'node:crypto';
import type { Redis } from '../../lib/redis.js';

/** Takes the key when free, renews it when ours: 1 when held after the call. */
const HOLD = `local v = redis.call('get', KEYS[1])
if not v then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
if v == ARGV[1] then redis.call('pexpire', KEYS[1], ARGV[2]) return 1 end
return 0`;
const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;

/**
 * One leader among the workers replicas for a job only one may do (the broker sync): a Redis key
 * held with a token and renewed every third of its lifetime. `onChange(true)` when this process
 * becomes the leader, `onChange(false)` when it stops being one (renewal failed or lost).
 */
export class Leadership {
  private readonly token = randomBytes(12).toString('hex');
  private timer?: NodeJS.Timeout;
  leader = false;

  constructor(
    private readonly redis: Redis,
    private readonly key: string,
    private readonly onChange: (leader: boolean) => void,
    private readonly ttlMs = 30_000,
  ) {}

  start(): this {
    void this.tick();
    this.timer = setInterval(() => void this.tick(), Math.floor(this.ttlMs / 3));
    this.timer.unref();
    return this;
  }

  private async tick(): Promise<void> {
    let held: boolean;
    try {
      held = Number(await this.redis.eval(HOLD, 1, this.key, this.token, this.ttlMs)) === 1;
    } catch {
      held = false;
    }
    if (held !== this.leader) {
      this.leader = held;
      this.onChange(held);
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    if (this.leader) {
      this.leader = false;
      await this.redis.eval(RELEASE, 1, this.key, this.token).catch(() => undefined);
    }
  }
}
