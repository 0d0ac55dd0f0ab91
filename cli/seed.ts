import { createHash, randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { hashPassword } from '../lib/auth.js';
import type { Config } from '../lib/config.js';
import { createDb, type Db } from '../lib/db.js';
import { parseProgram } from '../lib/programs.js';
import { siteLabel } from '../lib/sites.js';

/** What `seedDemo` created or found, for scripts and tests. */
export interface SeedSummary {
  orgId: string;
  sites: number;
  devices: number;
  email: string;
  password: string;
}

export interface SeedOptions {
  /** street-light controllers to create (`SL-000001` …) @default 1000 */
  devices: number;
  /** admin password; otherwise `RULR_DEMO_PASSWORD`, otherwise generated */
  password?: string | undefined;
  /** reuse this database handle instead of connecting to `DATABASE_URL` */
  db?: Db | undefined;
  /** do not print the login */
  quiet?: boolean | undefined;
}

export const DEMO_EMAIL = 'admin@demo.rulr.io';
const CITY = { name: 'Lumen City', lat: 52.3702, lng: 4.8952, timeZone: 'Europe/Amsterdam' };
/** Coordinates to 6 decimals (about 0.1 m): no float noise such as 52.374199999999995 in answers. */
const deg = (x: number) => Math.round(x * 1e6) / 1e6;
const DISTRICTS = ['Old Town', 'Harbour', 'University', 'Riverside'];
const STREETS = ['Main Street', 'Canal Road', 'Market Lane', 'Station Avenue'];
const CONCENTRATORS_PER_DISTRICT = 1;
const CHUNK = 2000;

/** Ids derived from a name, so re-running the seed finds the rows it made before instead of duplicating them. */
function stableId(name: string): string {
  const h = createHash('sha256').update(`rulr-demo:${name}`).digest('hex');
  const variant = ((Number.parseInt(h[16] ?? '0', 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** Deterministic pseudo-random numbers (mulberry32) so the demo city looks the same on every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The demo street-light controller's metric definitions (the simulator publishes exactly these). */
export const STREET_LIGHT_METRICS = [
  { name: 'voltage', type: 'number', unit: 'V', min: 0, max: 300 },
  { name: 'current', type: 'number', unit: 'A', min: 0, max: 10 },
  { name: 'power', type: 'number', unit: 'W', min: 0, max: 1000 },
  { name: 'energy', type: 'number', unit: 'kWh', min: 0, counter: true },
  { name: 'dimLevel', type: 'number', unit: '%', min: 0, max: 100 },
  { name: 'lampState', type: 'boolean' },
  { name: 'lampFault', type: 'boolean' },
];
/**
 * The commands the demo street-light controller accepts (`setProfileCommands` declarations, checked
 * by `checkCommandSpecs`); `rulr simulate` obeys them (cli/sim-commands.ts).
 */
export const STREET_LIGHT_COMMANDS = [
  {
    name: 'setDim',
    description: 'Dim the lamp to a level (%); 0 switches it off.',
    params: {
      type: 'object',
      properties: { level: { type: 'integer', minimum: 0, maximum: 100 } },
      required: ['level'],
      additionalProperties: false,
    },
    timeoutSeconds: 30,
  },
  {
    name: 'switch',
    description: 'Switch the lamp on or off (on keeps the dim level; a lamp dimmed to 0 comes on at 100 %).',
    params: { type: 'object', properties: { on: { type: 'boolean' } }, required: ['on'], additionalProperties: false },
    timeoutSeconds: 30,
  },
  {
    name: 'reboot',
    description: 'Restart the controller (the lamp keeps its state).',
    params: { type: 'object', additionalProperties: false },
    timeoutSeconds: 120,
  },
];
/** Rules the demo organization starts with: the simulator's lamp faults raise "Lamp failure" alarms. */
export const DEMO_RULES = [
  {
    name: 'Lamp failure',
    description: 'The controller reports a lamp or driver fault.',
    metric: 'lampFault',
    operator: 'eq',
    threshold: 1,
    clearThreshold: null,
    severity: 'major',
  },
  {
    name: 'Overvoltage',
    description: 'Mains above 230 V + 10 % (EN 50160); clears below 250 V.',
    metric: 'voltage',
    operator: 'gt',
    threshold: 253,
    clearThreshold: 250,
    severity: 'critical',
  },
  {
    name: 'Undervoltage',
    description: 'Mains below 230 V - 10 % (EN 50160); clears above 210 V.',
    metric: 'voltage',
    operator: 'lt',
    threshold: 207,
    clearThreshold: 210,
    severity: 'major',
  },
] as const;
/** The demo city's lighting program: on at sunset −10 min, 50 % at 00:30, off at sunrise +10 min. */
export const DEMO_PROGRAM = {
  name: 'Street lighting',
  description: 'On at sunset −10 min, 50 % at 00:30, off at sunrise +10 min.',
  switchPoints: [
    { at: 'sunset', offsetMinutes: -10, level: 100, rampSeconds: 5 },
    { at: 'fixed', time: '00:30', level: 50, rampSeconds: 60 },
    { at: 'sunrise', offsetMinutes: 10, level: 0, rampSeconds: 5 },
  ],
};
const CONCENTRATOR_METRICS = [
  { name: 'connectedChildren', type: 'number', min: 0 },
  { name: 'rssi', type: 'number', unit: 'dBm', min: -150, max: 0 },
];

/**
 * Creates (or completes) the `demo` organization: a city → districts → streets site tree, a
 * street-light and a concentrator profile, `devices` street lights spread over the streets, a few
 * concentrators with children, the street-lighting program assigned to the city, and `admin@demo.rulr.io`. Safe to re-run: rows are keyed by stable
 * ids and serials, and the admin's password is reset to the one printed.
 */
export async function seedDemo(cfg: Config, o: SeedOptions): Promise<SeedSummary> {
  const count = o.devices;
  if (!Number.isInteger(count) || count < 0 || count > 1_000_000) throw new Error('--devices must be an integer between 0 and 1000000');
  const password = o.password ?? process.env.RULR_DEMO_PASSWORD ?? randomBytes(12).toString('base64url');
  const db = o.db ?? createDb({ url: cfg.DATABASE_URL, poolSize: 2 });
  try {
    const summary = await db.transaction().execute(async (tx) => {
      const org = await tx
        .insertInto('organizations')
        .values({ slug: 'demo', name: 'Demo City Lighting' })
        .onConflict((oc) => oc.column('slug').doUpdateSet({ name: 'Demo City Lighting' }))
        .returning('id')
        .executeTakeFirstOrThrow();
      const orgId = org.id;
      const key = (s: string) => stableId(`${orgId}:${s}`);

      // Sites: one city, its districts, their streets.
      const cityId = key('site:city');
      const sites: { id: string; parent_id: string | null; name: string; path: string }[] = [
        { id: cityId, parent_id: null, name: CITY.name, path: siteLabel(cityId) },
      ];
      const streets: { id: string; district: number; lat: number; lng: number }[] = [];
      DISTRICTS.forEach((d, di) => {
        const districtId = key(`site:${d}`);
        sites.push({ id: districtId, parent_id: cityId, name: d, path: `${siteLabel(cityId)}.${siteLabel(districtId)}` });
        STREETS.forEach((s, si) => {
          const streetId = key(`site:${d}:${s}`);
          sites.push({
            id: streetId,
            parent_id: districtId,
            name: `${s} (${d})`,
            path: `${siteLabel(cityId)}.${siteLabel(districtId)}.${siteLabel(streetId)}`,
          });
          // Districts are the four quadrants around the centre; streets are bands within them.
          const lat = deg(CITY.lat + (di < 2 ? 1 : -1) * (0.004 + si * 0.006));
          const lng = deg(CITY.lng + (di % 2 === 0 ? -1 : 1) * 0.012);
          streets.push({ id: streetId, district: di, lat, lng });
        });
      });
      await tx
        .insertInto('sites')
        .values(sites.map((s) => ({ ...s, org_id: orgId })))
        .onConflict((oc) => oc.column('id').doNothing())
        .execute();
      // The city's time zone and location: its lighting program runs there (docs/programs.md).
      await sql`update sites set time_zone = ${CITY.timeZone},
          location = st_setsrid(st_makepoint(${CITY.lng}, ${CITY.lat}), 4326)::geography
        where id = ${cityId} and org_id = ${orgId}`.execute(tx);

      const profileIds: Record<string, string> = {};
      for (const p of [
        {
          name: 'Street-light controller',
          description: 'Dimmable LED luminaire controller with an energy meter.',
          metrics: STREET_LIGHT_METRICS,
          commands: STREET_LIGHT_COMMANDS,
          silence_timeout_s: 900,
          is_gateway: false,
          auto_create_children: false,
        },
        {
          name: 'Concentrator',
          description: 'Segment controller that speaks for the luminaires behind it (PLC/RF mesh).',
          metrics: CONCENTRATOR_METRICS,
          commands: [] as typeof STREET_LIGHT_COMMANDS,
          silence_timeout_s: 300,
          is_gateway: true,
          auto_create_children: true,
        },
      ]) {
        const row = await tx
          .insertInto('device_profiles')
          .values({ ...p, org_id: orgId, metrics: JSON.stringify(p.metrics), commands: JSON.stringify(p.commands) })
          .onConflict((oc) =>
            oc.columns(['org_id', 'name']).doUpdateSet({
              description: p.description,
              metrics: JSON.stringify(p.metrics),
              commands: JSON.stringify(p.commands),
              is_gateway: p.is_gateway,
              auto_create_children: p.auto_create_children,
            }),
          )
          .returning('id')
          .executeTakeFirstOrThrow();
        profileIds[p.name] = row.id;
      }

      // Concentrators first (their ids are parents of street lights on the first street of each district).
      const gateways = DISTRICTS.flatMap((d, di) =>
        Array.from({ length: CONCENTRATORS_PER_DISTRICT }, (_, k) => {
          const street = streets[di * STREETS.length] ?? streets[0];
          const serial = `GW-${String(di * CONCENTRATORS_PER_DISTRICT + k + 1).padStart(4, '0')}`;
          return {
            id: key(`device:${serial}`),
            serial,
            name: `Concentrator ${d}${CONCENTRATORS_PER_DISTRICT > 1 ? ` ${k + 1}` : ''}`,
            site_id: street?.id ?? cityId,
            profile_id: profileIds.Concentrator ?? null,
            parent_id: null as string | null,
            lat: street?.lat ?? CITY.lat,
            lng: street?.lng ?? CITY.lng,
            attributes: { vendor: 'Lumen', firmware: '3.2.1', channel: 'PLC' },
          };
        }),
      );
      const rand = prng(20260101);
      const lights = Array.from({ length: count }, (_, i) => {
        const street = streets[i % streets.length] ?? streets[0];
        const serial = `SL-${String(i + 1).padStart(6, '0')}`;
        const onGatewayStreet = street ? streets.indexOf(street) % STREETS.length === 0 : false;
        const gateway = onGatewayStreet && street ? gateways[street.district * CONCENTRATORS_PER_DISTRICT] : undefined;
        const along = Math.floor(i / streets.length);
        return {
          id: key(`device:${serial}`),
          serial,
          name: `Light ${serial.slice(3)}`,
          site_id: street?.id ?? cityId,
          profile_id: profileIds['Street-light controller'] ?? null,
          parent_id: gateway?.id ?? null,
          lat: deg((street?.lat ?? CITY.lat) + (rand() - 0.5) * 0.002),
          lng: deg((street?.lng ?? CITY.lng) + (along % 200) * 0.00012 * (rand() > 0.5 ? 1 : -1) + (rand() - 0.5) * 0.0004),
          attributes: {
            lampType: 'LED',
            ratedPowerW: [60, 90, 120][i % 3],
            installedYear: 2015 + (i % 10),
            pole: `P-${String(i + 1).padStart(6, '0')}`,
          },
        };
      });
      const all = [...gateways, ...lights];
      for (let i = 0; i < all.length; i += CHUNK) {
        await tx
          .insertInto('devices')
          .values(
            all.slice(i, i + CHUNK).map((d) => ({
              id: d.id,
              org_id: orgId,
              serial: d.serial,
              name: d.name,
              site_id: d.site_id,
              profile_id: d.profile_id,
              parent_id: d.parent_id,
              location: sql<string>`st_setsrid(st_makepoint(${d.lng}, ${d.lat}), 4326)::geography`,
              attributes: JSON.stringify(d.attributes),
            })),
          )
          .onConflict((oc) => oc.columns(['org_id', 'serial']).doNothing())
          .execute();
      }

      // Demo rules, evaluated by the workers role on every committed reading (docs/alarms-rules.md).
      const lightProfile = profileIds['Street-light controller'] ?? null;
      for (const r of DEMO_RULES) {
        await sql`
          insert into rules (org_id, name, description, metric, operator, threshold, clear_threshold, severity, alarm_type, profile_id, created_by)
          select ${orgId}, ${r.name}, ${r.description}, ${r.metric}, ${r.operator}, ${r.threshold}, ${r.clearThreshold},
                 ${r.severity}, ${r.name}, ${lightProfile}, 'system:seed'
          where not exists (select 1 from rules where org_id = ${orgId} and lower(name) = lower(${r.name}) and deleted_at is null)`.execute(
          tx,
        );
      }

      // The street-lighting program, assigned to the whole city.
      const program = await sql<{ id: string }>`
        insert into programs (org_id, name, description, switch_points, created_by)
        select ${orgId}, ${DEMO_PROGRAM.name}, ${DEMO_PROGRAM.description}, ${JSON.stringify(parseProgram(DEMO_PROGRAM).switchPoints)}::jsonb, 'system:seed'
        where not exists (select 1 from programs where org_id = ${orgId} and lower(name) = lower(${DEMO_PROGRAM.name}) and deleted_at is null)
        returning id`.execute(tx);
      const programId =
        program.rows[0]?.id ??
        (
          await tx
            .selectFrom('programs')
            .select('id')
            .where('org_id', '=', orgId)
            .where(sql`lower(name)`, '=', DEMO_PROGRAM.name.toLowerCase())
            .where('deleted_at', 'is', null)
            .executeTakeFirstOrThrow()
        ).id;
      await sql`
        insert into program_assignments (org_id, program_id, site_id, created_by)
        select ${orgId}, ${programId}, ${cityId}, 'system:seed'
        where not exists (
          select 1 from program_assignments where org_id = ${orgId} and site_id = ${cityId} and profile_id is null and device_id is null)`.execute(
        tx,
      );

      const passwordHash = await hashPassword(password);
      const existing = await tx.selectFrom('users').select('id').where(sql`lower(email)`, '=', DEMO_EMAIL).executeTakeFirst();
      const userId = existing
        ? (
            await tx
              .updateTable('users')
              .set({ password_hash: passwordHash, disabled_at: null })
              .where('id', '=', existing.id)
              .returning('id')
              .executeTakeFirstOrThrow()
          ).id
        : (
            await tx
              .insertInto('users')
              .values({ email: DEMO_EMAIL, name: 'Demo admin', password_hash: passwordHash })
              .returning('id')
              .executeTakeFirstOrThrow()
          ).id;
      await tx
        .insertInto('memberships')
        .values({ org_id: orgId, user_id: userId, role: 'admin' })
        .onConflict((oc) => oc.columns(['org_id', 'user_id']).doUpdateSet({ role: 'admin' }))
        .execute();
      await tx
        .insertInto('audit_logs')
        .values({
          org_id: orgId,
          actor: 'system:seed',
          action: 'seed.demo',
          entity_type: 'organization',
          entity_id: orgId,
          after: JSON.stringify({ devices: count }),
        })
        .execute();

      const n = await tx
        .selectFrom('devices')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('org_id', '=', orgId)
        .executeTakeFirstOrThrow();
      return { orgId, sites: sites.length, devices: Number(n.n), email: DEMO_EMAIL, password };
    });
    // Fresh statistics, or the planner keeps estimating an empty table and sorts instead of walking the serial index.
    await sql`analyze devices, sites, device_profiles`.execute(db);
    if (!o.quiet) {
      console.log(`demo organization "demo": ${summary.sites} sites, ${summary.devices} devices`);
      console.log(`login: ${summary.email}`);
      console.log(`password: ${summary.password}`);
    }
    return summary;
  } finally {
    if (!o.db) await db.destroy();
  }
}
