import { describe, expect, it } from 'vitest';
import { type DetectOptions, detect, type Reported } from './programs-detect.js';

const o: DetectOptions = { graceMs: 600_000, dimTolerance: 5, onPowerW: 5 };
const since = 1_000_000_000_000;
const now = since + 900_000;
const fresh = since + 700_000;
const r = (lampState: boolean | null, power: number | null, dimLevel: number | null, ts = fresh): Reported => ({
  lampState: lampState === null ? null : { value: lampState ? 1 : 0, ts },
  power: power === null ? null : { value: power, ts },
  dimLevel: dimLevel === null ? null : { value: dimLevel, ts },
});

describe('expected-state detectors', () => {
  it('calls a lamp lit in daylight while programmed off a day burner', () => {
    expect(detect({ level: 0, since }, r(true, 60, 100), true, now, o).dayBurner).toBe('raise');
    expect(detect({ level: 0, since }, r(true, 60, 100), false, now, o).dayBurner).toBe('clear'); // night: not daylight
    expect(detect({ level: 0, since }, r(false, 0.4, 0), true, now, o).dayBurner).toBe('clear');
  });

  it('calls a lamp off, or drawing no power, while programmed on a dark lamp', () => {
    expect(detect({ level: 100, since }, r(false, 0.4, 0), false, now, o).darkLamp).toBe('raise');
    // "power < 5 W while lampState is on": the driver says on, the meter says dark
    expect(detect({ level: 100, since }, r(true, 1.2, 100), false, now, o).darkLamp).toBe('raise');
    expect(detect({ level: 100, since }, r(true, 88, 100), false, now, o).darkLamp).toBe('clear');
    expect(detect({ level: 0, since }, r(false, 0.4, 0), false, now, o).darkLamp).toBe('clear');
  });

  it('calls a reported dim level off by more than the tolerance a dim mismatch', () => {
    expect(detect({ level: 50, since }, r(true, 50, 100), false, now, o).dimMismatch).toBe('raise');
    expect(detect({ level: 50, since }, r(true, 50, 54), false, now, o).dimMismatch).toBe('clear');
    expect(detect({ level: 50, since }, r(false, 0, 0), false, now, o).dimMismatch).toBe('clear'); // dark lamp says it
  });

  it('decides nothing before the grace time has passed, or from readings older than it', () => {
    const early = detect({ level: 100, since }, r(false, 0, 0), false, since + 60_000, o);
    expect(early).toEqual({ dayBurner: 'clear', darkLamp: 'unknown', dimMismatch: 'unknown' });
    const stale = detect({ level: 100, since }, r(false, 0, 0, since + 30_000), false, now, o);
    expect(stale.darkLamp).toBe('unknown');
    expect(detect({ level: 100, since }, r(null, null, null), false, now, o).darkLamp).toBe('unknown');
  });
});
