/**
 * The reference for lib/solar.ts: NOAA's Solar Calculator (Global Monitoring Laboratory,
 * https://gml.noaa.gov/grad/solcalc/, its calculation functions in main.js and the same equations
 * in its spreadsheet NOAA_Solar_Calculations_day.xls, after Meeus, "Astronomical Algorithms"),
 * written out here independently of suncalc: Julian day of the local date at 0h UT, the Sun's
 * declination and the equation of time, the hour angle at zenith 90.833° (96° for civil twilight),
 * and NOAA's second pass at the first estimate's time. Accurate to a minute within ±72° latitude
 * (NOAA's own statement). Test-only.
 */

const rad = Math.PI / 180;

/** NOAA's `getJD`: the Julian day at 0h UT of a Gregorian date. */
export function julianDay(year: number, month: number, day: number): number {
  let y = year;
  let m = month;
  if (m <= 2) {
    y -= 1;
    m += 12;
  }
  const a = Math.floor(y / 100);
  const b = 2 - a + Math.floor(a / 4);
  return Math.floor(365.25 * (y + 4716)) + Math.floor(30.6001 * (m + 1)) + day + b - 1524.5;
}

/** Declination (degrees) and equation of time (minutes) at Julian century `t` since J2000. */
function sunAt(t: number): { declination: number; equationOfTime: number } {
  const meanLong = (((280.46646 + t * (36000.76983 + t * 0.0003032)) % 360) + 360) % 360;
  const anomaly = 357.52911 + t * (35999.05029 - 0.0001537 * t);
  const eccentricity = 0.016708634 - t * (0.000042037 + 0.0000001267 * t);
  const center =
    Math.sin(anomaly * rad) * (1.914602 - t * (0.004817 + 0.000014 * t)) +
    Math.sin(2 * anomaly * rad) * (0.019993 - 0.000101 * t) +
    Math.sin(3 * anomaly * rad) * 0.000289;
  const omega = 125.04 - 1934.136 * t;
  const apparentLong = meanLong + center - 0.00569 - 0.00478 * Math.sin(omega * rad);
  const meanObliquity = 23 + (26 + (21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))) / 60) / 60;
  const obliquity = meanObliquity + 0.00256 * Math.cos(omega * rad);
  const declination = Math.asin(Math.sin(obliquity * rad) * Math.sin(apparentLong * rad)) / rad;
  const y = Math.tan((obliquity * rad) / 2) ** 2;
  const l2 = 2 * meanLong * rad;
  const m = anomaly * rad;
  const eot =
    y * Math.sin(l2) -
    2 * eccentricity * Math.sin(m) +
    4 * eccentricity * y * Math.sin(m) * Math.cos(l2) -
    0.5 * y * y * Math.sin(2 * l2) -
    1.25 * eccentricity * eccentricity * Math.sin(2 * m);
  return { declination, equationOfTime: (eot / rad) * 4 };
}

/** Minutes after 0h UT of the date of `jd` when the Sun crosses `zenith` (NOAA's `calcSunriseSetUTC`); NaN when it does not. */
function crossingUtcMinutes(rising: boolean, jd: number, lat: number, lng: number, zenith: number): number {
  const { declination, equationOfTime } = sunAt((jd - 2451545) / 36525);
  const cosHa =
    Math.cos(zenith * rad) / (Math.cos(lat * rad) * Math.cos(declination * rad)) - Math.tan(lat * rad) * Math.tan(declination * rad);
  const ha = Math.acos(cosHa) / rad;
  return 720 - 4 * (lng + (rising ? ha : -ha)) - equationOfTime;
}

/**
 * NOAA's sunrise (`rising`) or sunset of a local date, as an instant (ms), or null when the Sun does
 * not cross `zenith` that day. Like the calculator page: the Julian day of the local date, a first
 * estimate, then the same computation at the estimate's time.
 */
export function noaaCrossing(rising: boolean, date: string, lat: number, lng: number, zenith = 90.833): number | null {
  const [y, m, d] = date.split('-').map(Number) as [number, number, number];
  const jd = julianDay(y, m, d);
  const first = crossingUtcMinutes(rising, jd, lat, lng, zenith);
  const second = crossingUtcMinutes(rising, jd + first / 1440, lat, lng, zenith);
  if (Number.isNaN(second)) return null;
  return Date.UTC(y, m - 1, d) + Math.round(second * 60_000);
}
