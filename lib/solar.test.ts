import { describe, expect, it } from 'vitest';
import { noaaCrossing } from '../test/support/noaa-solar.js';
import { coordinateProblem, solarDay } from './solar.js';
import { wallClock } from './time-zones.js';

/**
 * Reference values: NOAA's Solar Calculator (https://gml.noaa.gov/grad/solcalc/), local times as its
 * page shows them (HH:MM, seconds rounded), for sunrise, sunset, and civil dawn/dusk (its zenith
 * 90.833° replaced by 96°, as in NOAA's spreadsheet NOAA_Solar_Calculations_day.xls). This machine
 * cannot reach NOAA's site, so the table was produced with NOAA's published algorithm as written out
 * in test/support/noaa-solar.ts, and the test recomputes it with that algorithm too: the table pins
 * the reference, the algorithm gives it to the second. `null`: the event does not occur that day.
 * Dates include both daylight-saving switch days of each hemisphere and a high-latitude summer
 * (Reykjavik's sunset after midnight, Tromsø before and in the midnight sun, and its polar night).
 */
const NOAA: [
  city: string,
  lat: number,
  lng: number,
  tz: string,
  date: string,
  sunrise: string | null,
  sunset: string | null,
  dawn: string | null,
  dusk: string | null,
][] = [
  ['Amsterdam', 52.3676, 4.9041, 'Europe/Amsterdam', '2026-03-29', '03-29 07:22', '03-29 20:09', '03-29 06:48', '03-29 20:44'],
  ['Amsterdam', 52.3676, 4.9041, 'Europe/Amsterdam', '2026-10-25', '10-25 07:23', '10-25 17:25', '10-25 06:48', '10-25 18:00'],
  ['Amsterdam', 52.3676, 4.9041, 'Europe/Amsterdam', '2026-06-21', '06-21 05:18', '06-21 22:06', '06-21 04:28', '06-21 22:56'],
  ['Amsterdam', 52.3676, 4.9041, 'Europe/Amsterdam', '2026-12-21', '12-21 08:48', '12-21 16:29', '12-21 08:07', '12-21 17:10'],
  ['New York', 40.7128, -74.006, 'America/New_York', '2026-03-08', '03-08 07:19', '03-08 18:55', '03-08 06:52', '03-08 19:23'],
  ['New York', 40.7128, -74.006, 'America/New_York', '2026-11-01', '11-01 06:26', '11-01 16:52', '11-01 05:58', '11-01 17:21'],
  ['Sydney', -33.8688, 151.2093, 'Australia/Sydney', '2026-04-05', '04-05 06:10', '04-05 17:45', '04-05 05:45', '04-05 18:10'],
  ['Sydney', -33.8688, 151.2093, 'Australia/Sydney', '2026-10-04', '10-04 06:29', '10-04 19:00', '10-04 06:04', '10-04 19:25'],
  ['Reykjavik', 64.1466, -21.9426, 'Atlantic/Reykjavik', '2026-06-21', '06-21 02:55', '06-22 00:04', null, null],
  ['Tromsø', 69.6492, 18.9553, 'Europe/Oslo', '2026-05-10', '05-10 02:25', '05-10 23:02', null, null],
  ['Tromsø', 69.6492, 18.9553, 'Europe/Oslo', '2026-06-21', null, null, null, null],
  ['Tromsø', 69.6492, 18.9553, 'Europe/Oslo', '2026-12-21', null, null, '12-21 09:31', '12-21 13:53'],
  ['Quito', -0.1807, -78.4678, 'America/Guayaquil', '2026-09-23', '09-23 06:03', '09-23 18:09', '09-23 05:42', '09-23 18:30'],
];

/** An instant as NOAA's page shows it: local `MM-DD HH:MM`, seconds rounded. */
function shown(t: number | null, tz: string): string | null {
  if (t === null) return null;
  const w = wallClock(Math.round(t / 60_000) * 60_000, tz);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${p(w.month)}-${p(w.day)} ${p(w.hour)}:${p(w.minute)}`;
}

const MINUTE = 60_000;

describe('solar events', () => {
  for (const [city, lat, lng, tz, date, sunrise, sunset, dawn, dusk] of NOAA) {
    it(`${city} on ${date}: sunrise, sunset and civil twilight within one minute of NOAA`, () => {
      const day = solarDay(lat, lng, date, tz);
      const cases = [
        ['sunrise', day.sunrise, sunrise, noaaCrossing(true, date, lat, lng)],
        ['sunset', day.sunset, sunset, noaaCrossing(false, date, lat, lng)],
        ['civilDawn', day.civilDawn, dawn, noaaCrossing(true, date, lat, lng, 96)],
        ['civilDusk', day.civilDusk, dusk, noaaCrossing(false, date, lat, lng, 96)],
      ] as const;
      for (const [name, ours, table, exact] of cases) {
        expect(shown(exact, tz), `${name}: the table is NOAA's`).toBe(table);
        if (exact === null) {
          expect(ours, name).toBeNull();
          continue;
        }
        expect(ours, name).not.toBeNull();
        expect(Math.abs((ours as number) - exact), `${name} vs NOAA, ms`).toBeLessThanOrEqual(MINUTE);
        // and within a minute of the minute NOAA's page displays
        const [hh, mm] = (table as string).slice(6).split(':').map(Number) as [number, number];
        const w = wallClock(ours as number, tz);
        const minutes = (w.hour * 60 + w.minute + w.second / 60 - (hh * 60 + mm) + 1440 * 1.5) % 1440;
        expect(Math.abs(minutes - 720), `${name} vs NOAA's displayed minute`).toBeLessThanOrEqual(1);
      }
    });
  }

  it("reports a sunset after local midnight as that date's sunset (Reykjavik, June)", () => {
    const day = solarDay(64.1466, -21.9426, '2026-06-21', 'Atlantic/Reykjavik');
    expect(new Date(day.sunset as number).toISOString().slice(0, 10)).toBe('2026-06-22');
  });

  it('marks a midnight-sun day as polar day and a dark one as polar night, and white nights as civil day', () => {
    expect(solarDay(69.6492, 18.9553, '2026-06-21', 'Europe/Oslo')).toMatchObject({ polar: 'day', civilPolar: 'day' });
    expect(solarDay(69.6492, 18.9553, '2026-12-21', 'Europe/Oslo')).toMatchObject({ polar: 'night', civilPolar: null });
    expect(solarDay(69.6492, 18.9553, '2026-05-10', 'Europe/Oslo')).toMatchObject({ polar: null, civilPolar: 'day' });
    expect(solarDay(89.9, 0, '2026-12-21', 'UTC')).toMatchObject({ polar: 'night', civilPolar: 'night' });
  });

  it('picks the local date in zones far from Greenwich (Sydney, Honolulu, Kiritimati at UTC+14)', () => {
    for (const [lat, lng, tz] of [
      [-33.8688, 151.2093, 'Australia/Sydney'],
      [21.3069, -157.8583, 'Pacific/Honolulu'],
      [1.8721, -157.4278, 'Pacific/Kiritimati'],
    ] as const) {
      const day = solarDay(lat, lng, '2026-07-01', tz);
      expect(shown(day.sunrise, tz)?.slice(0, 5)).toBe('07-01');
      expect(shown(day.solarNoon, tz)?.slice(0, 5)).toBe('07-01');
    }
  });

  it('refuses coordinates off the globe and dates that do not exist', () => {
    expect(coordinateProblem(91, 0)).toMatch(/lat/);
    expect(coordinateProblem(0, -181)).toMatch(/lng/);
    expect(coordinateProblem(Number.NaN, 0)).toMatch(/lat/);
    expect(coordinateProblem(52, 4)).toBeNull();
    expect(() => solarDay(52, 4, '2026-02-30', 'UTC')).toThrow(/not a date/);
  });
});
