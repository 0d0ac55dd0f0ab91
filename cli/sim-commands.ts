import { type CommandMessage, type CommandReply, SET_STATE_COMMAND } from '../lib/contracts/commands.js';

/**
 * How a simulated street light answers commands (docs/commands.md, "The simulator"). Pure: no I/O,
 * no clock of its own; `cli/simulate.ts` feeds it the messages and publishes what it decides.
 *
 * - the demo street-light profile's commands (`setDim {level}`, `switch {on}`, `reboot`) and the
 *   platform's `setState {desired, version}` change the lamp's state `{level, on}`, which the device
 *   reports on its status `state` and which drives its power;
 * - each command id is executed once: a repeat (the platform's redelivery after a lost reply) is
 *   answered again from memory, not executed again;
 * - a fraction of devices misbehave, chosen by a hash of the device id (and a seed), so a test
 *   knows in advance which ones: offline (never connect for commands), slow (answer after a
 *   delay), fail (answer `failed`), silent (never answer).
 */

/** What a device does with commands; `normal` answers `received` then `succeeded` at once. */
export type CommandBehaviour = 'normal' | 'offline' | 'slow' | 'fail' | 'silent';

/** Shares of devices per misbehaviour (0..1 each, together at most 1). */
export interface BehaviourShares {
  /** never connect for commands (and send nothing: the platform sees them offline) @default 0 */
  offline?: number;
  /** answer after {@link SimCommandOptions.slowMs} @default 0 */
  slow?: number;
  /** answer `received`, then `failed` @default 0 */
  fail?: number;
  /** never answer (the platform's timeout ends their commands) @default 0 */
  silent?: number;
  /** mixed into the hash so another run can pick other devices @default '' */
  seed?: string;
}

/** The share, 0..1, a device id hashes to (FNV-1a, stable across runs and machines). */
export function deviceFraction(deviceId: string, seed = ''): number {
  const s = `${seed}:${deviceId}`;
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return (h >>> 0) / 2 ** 32;
}

/**
 * The behaviour of one device: its {@link deviceFraction} falls in consecutive bands
 * `[0, offline)` offline, then slow, fail and silent; the rest is normal. Throws for a share
 * outside 0..1 or shares adding up to more than 1.
 */
export function behaviourOf(deviceId: string, shares: BehaviourShares = {}): CommandBehaviour {
  const bands: [CommandBehaviour, number][] = [
    ['offline', shares.offline ?? 0],
    ['slow', shares.slow ?? 0],
    ['fail', shares.fail ?? 0],
    ['silent', shares.silent ?? 0],
  ];
  let total = 0;
  for (const [name, v] of bands) {
    if (!(v >= 0 && v <= 1)) throw new Error(`--${name}-fraction must be between 0 and 1`);
    total += v;
  }
  if (total > 1 + 1e-9) throw new Error('the offline, slow, fail and silent fractions add up to more than 1');
  const x = deviceFraction(deviceId, shares.seed);
  let edge = 0;
  for (const [name, v] of bands) {
    edge += v;
    if (x < edge) return name;
  }
  return 'normal';
}

/** A lamp's commanded state, as it reports it on its status `state` (plus any other desired keys it was given). */
export interface LampState {
  [key: string]: unknown;
  /** dim level, % (0..100) */
  level: number;
  /** lamp switched on */
  on: boolean;
}

/** What a device remembers of the commands it executed: id → its final reply (a bounded window). */
export class CommandMemory {
  private readonly done = new Map<string, CommandReply | null>();
  /** @param size most command ids remembered (oldest forgotten first) */
  constructor(private readonly size = 32) {}
  get(id: string): CommandReply | null | undefined {
    return this.done.get(id);
  }
  /** `reply` null: started, not finished (a slow device) */
  set(id: string, reply: CommandReply | null): void {
    this.done.delete(id);
    this.done.set(id, reply);
    if (this.done.size > this.size) this.done.delete(this.done.keys().next().value as string);
  }
}

/** What to do with one command message. */
export type Decision =
  /** nothing (a silent device; a command past its expiry, which the platform expires itself) */
  | { kind: 'ignore'; reason: 'silent' | 'offline' | 'expired' }
  /** a command id already executed: answer again, do not execute */
  | { kind: 'repeat'; replies: CommandReply[] }
  /** execute: send `replies` after `delayMs`; `state` is the new state (null: unchanged) */
  | { kind: 'execute'; replies: CommandReply[]; delayMs: number; state: LampState | null; reboot: boolean };

export interface SimCommandOptions {
  /** how long a slow device takes to answer, ms @default 5000 */
  slowMs?: number;
}

const isLevel = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 100;

/** The state after applying `patch` (`setState`'s desired delta): `level` and `on` checked, other keys kept as given. */
function applyPatch(state: LampState, patch: Record<string, unknown>): LampState | string {
  const next: LampState = { ...state };
  for (const [k, v] of Object.entries(patch)) {
    if (k === 'level') {
      if (!isLevel(v)) return 'level must be an integer from 0 to 100';
      next.level = v;
    } else if (k === 'on') {
      if (typeof v !== 'boolean') return 'on must be a boolean';
      next.on = v;
    } else if (v === null) delete next[k];
    else next[k] = v;
  }
  // A level without an explicit `on` switches the lamp as a DALI arc level does: 0 is off, above 0 is on.
  if ('level' in patch && !('on' in patch)) next.on = next.level > 0;
  return next;
}

/** The state `m` asks for, or the reason it cannot be executed. */
function execute(state: LampState, m: CommandMessage): { state: LampState | null; reboot: boolean } | string {
  switch (m.name) {
    case 'setDim':
      if (!isLevel(m.params.level)) return 'level must be an integer from 0 to 100';
      return { state: { ...state, level: m.params.level, on: m.params.level > 0 }, reboot: false };
    case 'switch': {
      if (typeof m.params.on !== 'boolean') return 'on must be a boolean';
      const on = m.params.on;
      // switching on a lamp dimmed to 0 lights it fully
      return { state: { ...state, on, level: on && state.level === 0 ? 100 : state.level }, reboot: false };
    }
    case 'reboot':
      return { state: null, reboot: true };
    case SET_STATE_COMMAND: {
      const desired = m.params.desired;
      if (typeof desired !== 'object' || desired === null || Array.isArray(desired)) return 'desired must be an object';
      const next = applyPatch(state, desired as Record<string, unknown>);
      return typeof next === 'string' ? next : { state: next, reboot: false };
    }
    default:
      return `unknown command ${m.name.slice(0, 64)}`;
  }
}

/**
 * Decides what a device with `behaviour` and `state` does with command `m` at `nowMs`, and records
 * it in `memory` (so a repeat is recognised). The replies follow the contract: `received`, then
 * `succeeded` with the new state as result, or `failed` with the reason.
 */
export function decideCommand(
  m: CommandMessage,
  state: LampState,
  behaviour: CommandBehaviour,
  memory: CommandMemory,
  nowMs: number,
  o: SimCommandOptions = {},
): Decision {
  if (behaviour === 'offline' || behaviour === 'silent') return { kind: 'ignore', reason: behaviour };
  const seen = memory.get(m.id);
  if (seen !== undefined) return { kind: 'repeat', replies: seen ? [seen] : [{ id: m.id, status: 'received' }] };
  if (Date.parse(m.expiresAt) <= nowMs) return { kind: 'ignore', reason: 'expired' };
  const delayMs = behaviour === 'slow' ? (o.slowMs ?? 5000) : 0;
  const received: CommandReply = { id: m.id, status: 'received' };
  if (behaviour === 'fail') {
    const failed: CommandReply = { id: m.id, status: 'failed', error: 'simulated failure (--fail-fraction)' };
    memory.set(m.id, failed);
    return { kind: 'execute', replies: [received, failed], delayMs, state: null, reboot: false };
  }
  const r = execute(state, m);
  if (typeof r === 'string') {
    const failed: CommandReply = { id: m.id, status: 'failed', error: r };
    memory.set(m.id, failed);
    return { kind: 'execute', replies: [received, failed], delayMs, state: null, reboot: false };
  }
  const after = r.state ?? state;
  const done: CommandReply = {
    id: m.id,
    status: 'succeeded',
    result: r.reboot ? { rebooted: true, state: after } : { state: after },
  };
  // a slow device has started but not finished: a repeat meanwhile gets `received` again
  memory.set(m.id, delayMs ? null : done);
  return { kind: 'execute', replies: [received, done], delayMs, state: r.state, reboot: r.reboot };
}

/** Marks a slow device's command finished (its final reply now answers repeats). */
export function finishCommand(memory: CommandMemory, reply: CommandReply): void {
  memory.set(reply.id, reply);
}

/** The lamp output a state asks for: the dim level when on, else 0. */
export const outputLevel = (s: LampState): number => (s.on ? s.level : 0);
