import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { checkCommand, checkCommandSpecs } from '../lib/commands.js';
import type { CommandMessage } from '../lib/contracts/commands.js';
import { STREET_LIGHT_COMMANDS } from './seed.js';
import { behaviourOf, CommandMemory, decideCommand, deviceFraction, finishCommand, type LampState, outputLevel } from './sim-commands.js';

const NOW = Date.parse('2026-12-03T10:00:00Z');
const LATER = new Date(NOW + 60_000).toISOString();
const cmd = (name: string, params: Record<string, unknown> = {}, expiresAt = LATER): CommandMessage => ({
  id: randomUUID(),
  name,
  params,
  expiresAt,
});
const OFF: LampState = { level: 0, on: false };

describe('the simulated lamp executes the demo profile commands', () => {
  it('setDim sets the level, switches the lamp on above 0 and off at 0, and answers received then succeeded with the state', () => {
    const mem = new CommandMemory();
    const m = cmd('setDim', { level: 40 });
    const d = decideCommand(m, OFF, 'normal', mem, NOW);
    expect(d).toEqual({
      kind: 'execute',
      delayMs: 0,
      reboot: false,
      state: { level: 40, on: true },
      replies: [
        { id: m.id, status: 'received' },
        { id: m.id, status: 'succeeded', result: { state: { level: 40, on: true } } },
      ],
    });
    const off = decideCommand(cmd('setDim', { level: 0 }), { level: 40, on: true }, 'normal', mem, NOW);
    expect(off.kind === 'execute' && off.state).toEqual({ level: 0, on: false });
  });

  it('switch keeps the dim level, and lights a lamp dimmed to 0 at 100 %', () => {
    const mem = new CommandMemory();
    const off = decideCommand(cmd('switch', { on: false }), { level: 60, on: true }, 'normal', mem, NOW);
    expect(off.kind === 'execute' && off.state).toEqual({ level: 60, on: false });
    const on = decideCommand(cmd('switch', { on: true }), OFF, 'normal', mem, NOW);
    expect(on.kind === 'execute' && on.state).toEqual({ level: 100, on: true });
  });

  it('reboot succeeds without changing the state', () => {
    const d = decideCommand(cmd('reboot'), { level: 30, on: true }, 'normal', new CommandMemory(), NOW);
    expect(d.kind === 'execute' && [d.reboot, d.state, d.replies[1]?.result]).toEqual([
      true,
      null,
      { rebooted: true, state: { level: 30, on: true } },
    ]);
  });

  it("applies the platform's setState delta: level and on checked, other keys kept, a bare level switching the lamp", () => {
    const mem = new CommandMemory();
    const d = decideCommand(cmd('setState', { desired: { level: 50, mode: 'eco' }, version: 3 }), OFF, 'normal', mem, NOW);
    expect(d.kind === 'execute' && d.state).toEqual({ level: 50, on: true, mode: 'eco' });
    const bad = decideCommand(cmd('setState', { desired: { level: 'bright' }, version: 4 }), OFF, 'normal', mem, NOW);
    expect(bad.kind === 'execute' && [bad.state, bad.replies[1]]).toEqual([
      null,
      expect.objectContaining({ status: 'failed', error: 'level must be an integer from 0 to 100' }),
    ]);
  });

  it('answers failed, naming the reason, for an unknown command or bad parameters (the platform checks them first; a device must not trust that)', () => {
    const mem = new CommandMemory();
    const unknown = decideCommand(cmd('selfDestruct'), OFF, 'normal', mem, NOW);
    expect(unknown.kind === 'execute' && unknown.replies[1]).toMatchObject({ status: 'failed', error: 'unknown command selfDestruct' });
    const bad = decideCommand(cmd('setDim', { level: 101 }), OFF, 'normal', mem, NOW);
    expect(bad.kind === 'execute' && bad.replies[1]).toMatchObject({ status: 'failed', error: 'level must be an integer from 0 to 100' });
  });

  it('drives the simulated output: the dim level when on, 0 when off', () => {
    expect(outputLevel({ level: 70, on: true })).toBe(70);
    expect(outputLevel({ level: 70, on: false })).toBe(0);
  });
});

describe('each command id is executed once', () => {
  it('answers a repeat with the same final reply without executing it again', () => {
    const mem = new CommandMemory();
    const m = cmd('setDim', { level: 20 });
    const first = decideCommand(m, OFF, 'normal', mem, NOW);
    const again = decideCommand(m, { level: 20, on: true }, 'normal', mem, NOW + 5000);
    expect(first.kind).toBe('execute');
    expect(again).toEqual({ kind: 'repeat', replies: [first.kind === 'execute' ? first.replies[1] : null] });
  });

  it('answers received to a repeat that arrives while a slow device is still working, and the result once it is done', () => {
    const mem = new CommandMemory();
    const m = cmd('setDim', { level: 20 });
    const d = decideCommand(m, OFF, 'slow', mem, NOW, { slowMs: 2000 });
    expect(d.kind === 'execute' && d.delayMs).toBe(2000);
    expect(decideCommand(m, OFF, 'slow', mem, NOW + 100)).toEqual({ kind: 'repeat', replies: [{ id: m.id, status: 'received' }] });
    if (d.kind === 'execute') finishCommand(mem, d.replies[1] as never);
    expect(decideCommand(m, OFF, 'slow', mem, NOW + 3000)).toMatchObject({ kind: 'repeat', replies: [{ status: 'succeeded' }] });
  });

  it('forgets the oldest ids past its window (memory stays bounded)', () => {
    const mem = new CommandMemory(2);
    const [a, b, c] = [cmd('reboot'), cmd('reboot'), cmd('reboot')];
    for (const m of [a, b, c]) decideCommand(m, OFF, 'normal', mem, NOW);
    expect(mem.get(a.id)).toBeUndefined();
    expect(mem.get(c.id)).toMatchObject({ status: 'succeeded' });
  });

  it('does not start a command past its expiry (the platform expires it)', () => {
    const d = decideCommand(cmd('setDim', { level: 5 }, new Date(NOW - 1).toISOString()), OFF, 'normal', new CommandMemory(), NOW);
    expect(d).toEqual({ kind: 'ignore', reason: 'expired' });
  });
});

describe('misbehaving devices are chosen by device id, so a test knows them in advance', () => {
  const ids = Array.from({ length: 4000 }, (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`);

  it('gives every device the same behaviour on every run, and another set with another seed', () => {
    const shares = { offline: 0.1, slow: 0.1, fail: 0.1, silent: 0.1 };
    const a = ids.map((id) => behaviourOf(id, shares));
    expect(ids.map((id) => behaviourOf(id, shares))).toEqual(a);
    expect(ids.map((id) => behaviourOf(id, { ...shares, seed: 'other' }))).not.toEqual(a);
    expect(deviceFraction(ids[0] as string)).toBe(deviceFraction(ids[0] as string));
  });

  it('splits the fleet close to the fractions asked for', () => {
    const shares = { offline: 0.05, slow: 0.1, fail: 0.05, silent: 0.02 };
    const count = (b: string) => ids.filter((id) => behaviourOf(id, shares) === b).length / ids.length;
    expect(count('offline')).toBeCloseTo(0.05, 1);
    expect(count('slow')).toBeCloseTo(0.1, 1);
    expect(count('fail')).toBeCloseTo(0.05, 1);
    expect(count('silent')).toBeCloseTo(0.02, 1);
    expect(count('normal')).toBeCloseTo(0.78, 1);
    expect(ids.every((id) => behaviourOf(id) === 'normal')).toBe(true);
  });

  it('refuses fractions outside 0..1 or adding up to more than 1', () => {
    expect(() => behaviourOf(ids[0] as string, { fail: 1.5 })).toThrow('--fail-fraction must be between 0 and 1');
    expect(() => behaviourOf(ids[0] as string, { fail: 0.6, silent: 0.6 })).toThrow('add up to more than 1');
  });

  it('fail answers received then failed; silent and offline devices answer nothing', () => {
    const m = cmd('setDim', { level: 10 });
    const f = decideCommand(m, OFF, 'fail', new CommandMemory(), NOW);
    expect(f.kind === 'execute' && f.replies.map((r) => r.status)).toEqual(['received', 'failed']);
    expect(f.kind === 'execute' && f.state).toBeNull();
    expect(decideCommand(m, OFF, 'silent', new CommandMemory(), NOW)).toEqual({ kind: 'ignore', reason: 'silent' });
    expect(decideCommand(m, OFF, 'offline', new CommandMemory(), NOW)).toEqual({ kind: 'ignore', reason: 'offline' });
  });
});

describe("the demo street-light profile's declarations", () => {
  it('pass the platform check, and the platform refuses what the lamp would refuse', () => {
    const specs = checkCommandSpecs(STREET_LIGHT_COMMANDS, 'commands', 30);
    expect(specs.map((s) => s.name)).toEqual(['setDim', 'switch', 'reboot']);
    expect(checkCommand(specs, 'setDim', { level: 40 }, 'input').name).toBe('setDim');
    expect(() => checkCommand(specs, 'setDim', { level: 101 }, 'input')).toThrow('input.params.level');
    expect(() => checkCommand(specs, 'setDim', { level: 4.5 }, 'input')).toThrow('input.params.level');
    expect(() => checkCommand(specs, 'switch', { on: 'yes' }, 'input')).toThrow('input.params.on');
    expect(() => checkCommand(specs, 'reboot', { now: true }, 'input')).toThrow('input.params.now');
  });
});
