import { getPosition, getTimes } from 'suncalc';
import { type LocalDate, parseLocalDate, zonedInstant } from './time-zones.js';

/**
 * Sunrise, sunset and civil twilight for a place and a local date: the one computation `solarEvents`,
 * the program preview and the program scheduler share. suncalc 2 (Meeus ch. 15 and 25, the same
 * equations as NOAA's solar calculator) computes them; `lib/solar.test.ts` holds it to NOAA's values
 * within one minute, including both daylight-saving switch days and a high-latitude summer.
 *
 * Altitudes: sunrise/sunset −0.833° (refraction and the Sun's radius, as NOAA), civil dawn/dusk −6°.
 * The events are those of the solar day whose noon falls on the local date, so in Reykjavik in June
 * the sunset of the 21st is at 00:04 on the 22nd. An event the Sun does not reach that day is null:
 * in a polar day there is no sunset (the Sun stays above −0.833°), in a white night no civil dusk.
 * Pure, no I/O.
 */

export const SOLAR_EVENTS = ['sunrise', 'sunset', 'civilDawn', 'civilDusk'] as const;
export type SolarEvent = (typeof SOLAR_EVENTS)[number];

/** What a date without an event is: the Sun stays above (day) or below (night) its altitude all day. */
export type Polar = 'day' | 'night' | null;

export interface SolarDay {
  /** instants in ms; null when the event does not occur that day */
  sunrise: number | null;
  sunset: number | null;
  civilDawn: number | null;
  civilDusk: number | null;
  solarNoon: number;
  /** sunrise/sunset missing: polar day (midnight sun) or polar night */
  polar: Polar;
  /** civil dawn/dusk missing: the Sun never gets 6° below (`day`, a white night) or 6° above −6° (`night`) */
  civilPolar: Polar;
}

/** Largest |latitude| accepted: NOAA's calculator is accurate to a minute within ±72°, and works, less precisely, to the poles. */
export const MAX_LATITUDE = 90;

/** Why a coordinate pair cannot be used, or null. */
export function coordinateProblem(lat: number, lng: number): string | null {
  if (!Number.isFinite(lat) || lat < -MAX_LATITUDE || lat > MAX_LATITUDE) return 'lat must be between -90 and 90';
  if (!Number.isFinite(lng) || lng < -180 || lng > 180) return 'lng must be between -180 and 180';
  return null;
}

const at = (d: Date | null | undefined) => (d ? d.getTime() : null);

/**
 * The solar events of `date` (local) at (`lat`, `lng`) in `timeZone`. The computation is anchored at
 * local noon, which picks that local date's solar day wherever the zone's offset is within twelve
 * hours of solar time (everywhere inhabited).
 */
export function solarDay(lat: number, lng: number, date: LocalDate, timeZone: string): SolarDay {
  if (!parseLocalDate(date)) throw new RangeError(`not a date: ${date}`);
  const t = getTimes(new Date(zonedInstant(date, 12 * 60, timeZone)), lat, lng);
  const sunrise = at(t.sunrise);
  const civilDawn = at(t.dawn);
  const noon = t.solarNoon;
  return {
    sunrise,
    sunset: at(t.sunset),
    civilDawn,
    civilDusk: at(t.dusk),
    solarNoon: noon.getTime(),
    polar: sunrise === null ? (t.alwaysUp ? 'day' : 'night') : null,
    // Without civil twilight the Sun stays on one side of −6° all day: above it if it is above at noon.
    civilPolar: civilDawn === null ? (getPosition(noon, lat, lng).altitude > -6 ? 'day' : 'night') : null,
  };
}

/** One event's instant (ms) of a solar day, or null. */
export const eventOf = (day: SolarDay, e: SolarEvent): number | null => day[e];
