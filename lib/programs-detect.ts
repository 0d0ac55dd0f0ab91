/**
 * Expected-state detectors: what a lamp reports compared with what its program (or an override)
 * set it to, as pure decisions (docs/programs.md). The scheduler's `program_device_levels` row is
 * the expectation and its `pushed_at` the moment it was handed to the device's desired state; the
 * device's newest readings (`lampState`, `power`, `dimLevel` in the status cache) are the report.
 *
 * - **Day burner**: lit while the Sun is up and the program says off.
 * - **Dark lamp**: dark (off, or drawing less than `onPowerW`) while the program says on.
 * - **Dim mismatch**: on, but the reported `dimLevel` is more than `dimTolerance` points from the
 *   programmed level.
 *
 * A verdict needs a reading taken at least `graceMs` after the level was handed over (the lamp had
 * that long to comply, and kept differing): older readings, or none, decide nothing (`unknown`), so
 * an alarm neither rises nor clears on stale data. No I/O.
 */

export const DETECTORS = ['dayBurner', 'darkLamp', 'dimMismatch'] as const;
export type Detector = (typeof DETECTORS)[number];

/** The alarm type and severity each detector raises. */
export const DETECTOR_ALARMS: Record<Detector, { type: string; severity: 'major' | 'minor' | 'warning' }> = {
  dayBurner: { type: 'Day burner', severity: 'minor' },
  darkLamp: { type: 'Dark lamp', severity: 'major' },
  dimMismatch: { type: 'Dim mismatch', severity: 'warning' },
};

/** The metrics the detectors read, as the demo street-light profile names them. */
export const DETECTOR_METRICS = ['lampState', 'power', 'dimLevel'] as const;

export type Verdict = 'raise' | 'clear' | 'unknown';

export interface Expected {
  level: number;
  /** ms: when the level was handed to the device's desired state */
  since: number;
}

/** A reading: value (booleans as 1/0) and time (ms). */
export interface Reading {
  value: number;
  ts: number;
}

export interface Reported {
  lampState: Reading | null;
  power: Reading | null;
  dimLevel: Reading | null;
}

export interface DetectOptions {
  /** @default 600000 (PROGRAMS_DETECT_GRACE_S) */
  graceMs: number;
  /** @default 5 (PROGRAMS_DIM_TOLERANCE) */
  dimTolerance: number;
  /** @default 5 (PROGRAMS_ON_POWER_W) */
  onPowerW: number;
}

/** What each detector says about one lamp now. */
export function detect(expected: Expected, reported: Reported, sunUp: boolean, now: number, o: DetectOptions): Record<Detector, Verdict> {
  const due = expected.since + o.graceMs;
  const fresh = (r: Reading | null): r is Reading => r !== null && r.ts >= due && now >= due;
  // lit / dark from what is fresh: an explicit lampState, and the power draw when it is known
  const state = fresh(reported.lampState) ? reported.lampState.value !== 0 : null;
  const power = fresh(reported.power) ? reported.power.value : null;
  const lit = state === false || (power !== null && power < o.onPowerW) ? false : state === true || power !== null ? true : null;
  const on = expected.level > 0;
  const dayBurner: Verdict = on || !sunUp ? 'clear' : lit === null ? 'unknown' : lit ? 'raise' : 'clear';
  const darkLamp: Verdict = !on ? 'clear' : lit === null ? 'unknown' : lit ? 'clear' : 'raise';
  let dimMismatch: Verdict = 'clear';
  if (on) {
    if (!fresh(reported.dimLevel) || lit === false) dimMismatch = lit === false ? 'clear' : 'unknown';
    else dimMismatch = Math.abs(reported.dimLevel.value - expected.level) > o.dimTolerance ? 'raise' : 'clear';
  }
  return { dayBurner, darkLamp, dimMismatch };
}

/** The alarm message of a raised verdict. */
export function describeDetection(d: Detector, expected: Expected, reported: Reported): string {
  switch (d) {
    case 'dayBurner':
      return `lit in daylight while its program says off (power ${reported.power?.value ?? '?'} W)`;
    case 'darkLamp':
      return `dark while its program says ${expected.level} % (lampState ${reported.lampState ? Boolean(reported.lampState.value) : '?'}, power ${reported.power?.value ?? '?'} W)`;
    case 'dimMismatch':
      return `reports ${reported.dimLevel?.value ?? '?'} % while its program says ${expected.level} %`;
  }
}
