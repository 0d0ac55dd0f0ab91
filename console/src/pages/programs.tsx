import { useEffect, useMemo, useState } from 'preact/hooks';
import { getTimes } from 'suncalc';
import { canWrite, gql, session } from '../api.js';
import { Chart, type ChartSeries } from '../components/chart';
import { errorText, fmtTime } from '../format.js';
import { route } from '../router.js';
import { flatten, loadSites, type SiteNode } from '../sites.js';

interface SwitchPoint {
  at: string;
  time: string | null;
  offsetMinutes: number;
  level: number;
  rampSeconds: number;
}
interface Program {
  id: string;
  name: string;
  switchPoints: SwitchPoint[];
}
interface Assignment {
  id: string;
  program: Program | null;
  calendar: {
    id: string;
    name: string;
    defaultProgram: { name: string } | null;
    rules: {
      kind: string;
      program: { name: string } | null;
      from: string | null;
      to: string | null;
      month: number | null;
      day: number | null;
      weekdays: number[] | null;
    }[];
  } | null;
}
interface PreviewLocation {
  lat: number;
  lng: number;
  timeZone: string;
  devices: number;
  events: { at: string; level: number; overridden: boolean }[];
  conflicts: { kind: string; message: string; from: string; to: string; days: number }[];
}
interface Override {
  id: string;
  level: number;
  startsAt: string;
  expiresAt: string;
  reason: string;
  status: string;
  site: { id: string; name: string } | null;
  device: { id: string; name: string } | null;
}
interface Rule {
  id: string;
  name: string;
  kind: 'THRESHOLD' | 'EXPRESSION' | 'NO_DATA';
  metric: string;
  operator: string | null;
  threshold: number | null;
  clearThreshold: number | null;
  expression: string | null;
  forSeconds: number | null;
  repeatCount: number | null;
  windowSeconds: number | null;
  noDataSeconds: number | null;
  severity: string;
  alarmType: string;
  autoClear: boolean;
  site: { id: string } | null;
  profile: { id: string } | null;
}

const DAY = 86_400;

/** Hours after local midnight of `d` in `timeZone` (e.g. 18.5 for 18:30). */
function localHours(d: Date, timeZone: string): number {
  const parts = new Intl.DateTimeFormat('en-GB', { timeZone, hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).formatToParts(d);
  const h = Number(parts.find((p) => p.type === 'hour')?.value ?? 0);
  const m = Number(parts.find((p) => p.type === 'minute')?.value ?? 0);
  return h + m / 60;
}

const localDate = (d: Date, timeZone: string) =>
  new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' }).format(d);
const fmtHours = (v: number) => `${String(Math.floor(v)).padStart(2, '0')}:${String(Math.round((v % 1) * 60)).padStart(2, '0')}`;

/** The year chart: each day's switch-on and switch-off times against sunrise and sunset, conflicts marked. */
function YearChart({ loc, from }: { loc: PreviewLocation; from: Date }) {
  const { x, series } = useMemo(() => {
    const days = 366;
    const x: number[] = [];
    const sunrise: (number | null)[] = [];
    const sunset: (number | null)[] = [];
    const on: (number | null)[] = [];
    const off: (number | null)[] = [];
    const conflict: (number | null)[] = [];
    const index = new Map<string, number>();
    for (let i = 0; i < days; i++) {
      const noon = new Date(from.getTime() + i * DAY * 1000 + 12 * 3600 * 1000);
      const key = localDate(noon, loc.timeZone);
      if (index.has(key)) continue;
      index.set(key, x.length);
      x.push(Math.floor(noon.getTime() / 1000 / DAY) * DAY);
      const t = getTimes(noon, loc.lat, loc.lng);
      const hours = (d: Date | null) => (d && !Number.isNaN(d.getTime()) ? localHours(d, loc.timeZone) : null);
      sunrise.push(hours(t.sunrise));
      sunset.push(hours(t.sunset));
      on.push(null);
      off.push(null);
      conflict.push(null);
    }
    for (const e of loc.events) {
      if (e.overridden) continue;
      const at = new Date(e.at);
      const i = index.get(localDate(at, loc.timeZone));
      if (i === undefined) continue;
      const h = localHours(at, loc.timeZone);
      // the first switch-on of the evening and the switch-off of the morning stand for the day
      if (e.level > 0) on[i] = on[i] === null || (on[i] as number) < 12 ? h : (on[i] ?? h);
      else off[i] = off[i] ?? h;
    }
    for (const c of loc.conflicts) {
      for (const [key, i] of index) if (key >= c.from && key <= c.to) conflict[i] = 12;
    }
    const series: ChartSeries[] = [
      { label: 'sunrise', colour: '#f08c00', values: sunrise },
      { label: 'sunset', colour: '#5f3dc4', values: sunset },
      { label: 'switch on', colour: '#2b8a3e', values: on, points: true },
      { label: 'switch off', colour: '#495057', values: off, points: true },
      { label: 'conflict', colour: '#c0162c', values: conflict, points: true },
    ];
    return { x, series };
  }, [loc, from]);
  return (
    <Chart
      x={x}
      series={series}
      label="Switch times against sunrise and sunset over the year"
      height={320}
      yFormat={fmtHours}
      testId="year-chart"
    />
  );
}

/** The rule as `dryRunRule` takes it back: what each kind needs (docs/alarms-rules.md). */
function ruleInput(r: Rule): Record<string, unknown> {
  const common = {
    name: r.name,
    kind: r.kind,
    severity: r.severity,
    alarmType: r.alarmType,
    autoClear: r.autoClear,
    siteId: r.site?.id ?? null,
    profileId: r.profile?.id ?? null,
    forSeconds: r.forSeconds,
    repeatCount: r.repeatCount,
    windowSeconds: r.windowSeconds,
  };
  if (r.kind === 'EXPRESSION') return { ...common, expression: r.expression };
  if (r.kind === 'NO_DATA') return { ...common, metric: r.metric, noDataSeconds: r.noDataSeconds };
  return { ...common, metric: r.metric, operator: r.operator, threshold: r.threshold, clearThreshold: r.clearThreshold };
}

interface DryRunAnswer {
  devicesInScope: number;
  evaluated: number;
  matching: number;
  truncated: boolean;
  readings: number;
  raises: number;
}

const describeDryRun = (d: DryRunAnswer) =>
  `${d.raises} alarm(s) on ${d.matching} of ${d.evaluated} devices over the last 24 hours ` +
  `(${d.readings.toLocaleString()} stored readings replayed, ${d.devicesInScope} devices in scope${d.truncated ? '; truncated' : ''})`;

/** One click: the rule replayed over the last day of stored readings (`dryRunRule` with a window); nothing is saved. */
function DryRun({ rules }: { rules: Rule[] }) {
  const [results, setResults] = useState<Record<string, string>>({});
  if (!rules.length) return <p class="muted">No rules.</p>;
  return (
    <ul class="rules">
      {rules.map((r) => (
        <li key={r.id}>
          <strong>{r.name}</strong>{' '}
          <span class="muted">
            {r.kind === 'THRESHOLD'
              ? `${r.metric} ${r.operator} ${r.threshold}`
              : r.kind === 'EXPRESSION'
                ? r.expression
                : `no ${r.metric} data`}{' '}
            → {r.severity.toLowerCase()}
          </span>{' '}
          <button
            type="button"
            class="secondary"
            onClick={() => {
              setResults((m) => ({ ...m, [r.id]: 'running…' }));
              const to = new Date();
              const from = new Date(to.getTime() - DAY * 1000);
              gql<{ dryRunRule: DryRunAnswer }>(
                `mutation Dry($input: CreateRuleInput!, $window: DryRunWindow) {
                  dryRunRule(input: $input, first: 10, window: $window) { devicesInScope evaluated matching truncated readings raises }
                }`,
                { input: ruleInput(r), window: { from: from.toISOString(), to: to.toISOString() } },
              )
                .then((d) => setResults((m) => ({ ...m, [r.id]: describeDryRun(d.dryRunRule) })))
                .catch((e: unknown) => setResults((m) => ({ ...m, [r.id]: errorText(e) })));
            }}
          >
            Dry run {r.name}
          </button>
          {results[r.id] && (
            <span role="status" data-testid="dry-run-result">
              {' '}
              {results[r.id]}
            </span>
          )}
        </li>
      ))}
    </ul>
  );
}

function describePoint(p: SwitchPoint): string {
  const when =
    p.at === 'FIXED'
      ? (p.time ?? '')
      : `${p.at.toLowerCase().replace('_', ' ')} ${p.offsetMinutes >= 0 ? '+' : '−'}${Math.abs(p.offsetMinutes)} min`;
  return `${when}: ${p.level === 0 ? 'off' : `${p.level} %`}${p.rampSeconds ? ` (ramp ${p.rampSeconds} s)` : ''}`;
}

/** Programs: a site's program and calendar, the year preview, active overrides, rules' dry runs. */
export function ProgramsPage(_props: { params: Record<string, string> }) {
  const orgId = session.value?.organization.id ?? '';
  const [sites, setSites] = useState<SiteNode[]>([]);
  const [siteId, setSiteId] = useState(route.value.params.get('site') ?? '');
  const [assignments, setAssignments] = useState<Assignment[]>([]);
  const [preview, setPreview] = useState<{
    devices: number;
    unassignedDevices: number;
    locationCount: number;
    locations: PreviewLocation[];
  } | null>(null);
  const [overrides, setOverrides] = useState<Override[]>([]);
  const [rules, setRules] = useState<Rule[]>([]);
  const [error, setError] = useState<string | null>(null);
  const from = useMemo(() => new Date(Date.UTC(new Date().getUTCFullYear(), 0, 1)), []);

  useEffect(() => {
    loadSites(orgId)
      .then((roots) => {
        setSites(roots);
        if (!siteId && roots[0]) setSiteId(roots[0].id);
      })
      .catch((e: unknown) => setError(errorText(e)));
    gql<{ programOverrides: Override[] | null; rules: { edges: { node: Rule }[] } | null }>(
      `{ programOverrides(active: true, first: 100) { id level startsAt expiresAt reason status site { id name } device { id name } }
         rules(first: 50) { edges { node { id name kind metric operator threshold clearThreshold expression forSeconds repeatCount windowSeconds noDataSeconds
           severity alarmType autoClear site { id } profile { id } } } } }`,
    )
      .then((d) => {
        setOverrides(d.programOverrides ?? []);
        setRules((d.rules?.edges ?? []).map((e) => e.node));
      })
      .catch((e: unknown) => setError(errorText(e)));
  }, [orgId]);

  useEffect(() => {
    if (!siteId) return;
    setPreview(null);
    const to = new Date(from.getTime() + 365 * DAY * 1000);
    gql<{ programAssignments: Assignment[] | null }>(
      `query Assignments($site: ID!) {
        programAssignments(siteId: $site) {
          id
          program { id name switchPoints { at time offsetMinutes level rampSeconds } }
          calendar { id name defaultProgram { name } }
        }
      }`,
      { site: siteId },
    )
      .then(async (d) => {
        const list = d.programAssignments ?? [];
        // the calendars' rules in a query of their own (one query for both is over the gateway's cost limit)
        if (list.some((a) => a.calendar)) {
          const c = await gql<{ programCalendars: { id: string; rules: NonNullable<Assignment['calendar']>['rules'] }[] | null }>(
            '{ programCalendars { id rules { kind program { name } from to month day } } }',
          );
          const rules = new Map((c.programCalendars ?? []).map((x) => [x.id, x.rules]));
          for (const a of list) if (a.calendar) a.calendar.rules = rules.get(a.calendar.id) ?? [];
        }
        setAssignments(list);
      })
      .catch((e: unknown) => setError(errorText(e)));
    gql<{ programPreview: typeof preview }>(
      `query Preview($site: ID!, $from: DateTime!, $to: DateTime!) {
        programPreview(siteId: $site, from: $from, to: $to, firstLocations: 1) {
          devices unassignedDevices locationCount
          locations { lat lng timeZone events { at level overridden } conflicts { kind from to days } }
        }
      }`,
      { site: siteId, from: from.toISOString(), to: to.toISOString() },
    )
      .then((d) => {
        setPreview(d.programPreview);
        setError(null);
      })
      .catch((e: unknown) => setError(errorText(e)));
  }, [siteId, from]);

  const all = flatten(sites);
  const loc = preview?.locations[0];
  return (
    <div>
      <h1>Programs</h1>
      <div class="toolbar">
        <label>
          Site
          <select value={siteId} onChange={(e) => setSiteId((e.target as HTMLSelectElement).value)}>
            {all.map((s) => (
              <option key={s.id} value={s.id}>
                {s.name}
              </option>
            ))}
          </select>
        </label>
      </div>
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      <div class="grid">
        <section class="panel" aria-labelledby="assign-h">
          <h2 id="assign-h">Program and calendar</h2>
          {assignments.length === 0 && <p class="muted">Nothing assigned to this site itself (it may inherit from a parent).</p>}
          {assignments.map((a) => (
            <div key={a.id} data-testid="assignment">
              {a.program && (
                <>
                  <h3>Program: {a.program.name}</h3>
                  <ul>
                    {a.program.switchPoints.map((p) => (
                      <li key={`${p.at}-${p.time}-${p.offsetMinutes}-${p.level}`}>{describePoint(p)}</li>
                    ))}
                  </ul>
                </>
              )}
              {a.calendar && (
                <>
                  <h3>Calendar: {a.calendar.name}</h3>
                  <p>Default program: {a.calendar.defaultProgram?.name ?? '—'}</p>
                  <ul>
                    {(a.calendar.rules ?? []).map((r) => (
                      <li key={JSON.stringify(r)}>
                        {r.kind.toLowerCase()} {r.from ?? ''}
                        {r.to ? `–${r.to}` : ''} {r.month ? `month ${r.month}` : ''} {r.day ? `day ${r.day}` : ''}→ {r.program?.name ?? '—'}
                      </li>
                    ))}
                  </ul>
                </>
              )}
            </div>
          ))}
        </section>
        <section class="panel" aria-labelledby="overrides-h">
          <h2 id="overrides-h">Overrides</h2>
          {overrides.length === 0 ? (
            <p class="muted">No active or scheduled overrides.</p>
          ) : (
            <ul data-testid="overrides">
              {overrides.map((o) => (
                <li key={o.id}>
                  {o.level} % on {o.site?.name ?? o.device?.name ?? '—'} ({o.status.toLowerCase()}) until{' '}
                  <strong>{fmtTime(o.expiresAt)}</strong>
                  {o.reason ? ` — ${o.reason}` : ''}
                </li>
              ))}
            </ul>
          )}
        </section>
      </div>
      <section class="panel" aria-labelledby="year-h">
        <h2 id="year-h">Year preview {from.getUTCFullYear()}</h2>
        {!preview && !error && <p aria-busy="true">Computing the preview…</p>}
        {preview && (
          <p class="muted" data-testid="preview-summary">
            {preview.devices} devices, {preview.unassignedDevices} without a program, {preview.locationCount} location(s)
            {loc ? ` — shown: ${loc.lat.toFixed(4)}, ${loc.lng.toFixed(4)} (${loc.timeZone})` : ''}
          </p>
        )}
        {loc && <YearChart loc={loc} from={from} />}
        {loc && loc.conflicts.length > 0 && (
          <>
            <h3>Conflicts</h3>
            <ul data-testid="conflicts">
              {loc.conflicts.map((c) => (
                <li key={`${c.kind}-${c.from}`}>
                  <strong>{c.kind.toLowerCase().replaceAll('_', ' ')}</strong> {c.from} – {c.to} ({c.days} days)
                </li>
              ))}
            </ul>
          </>
        )}
      </section>
      <section class="panel" aria-labelledby="dry-h">
        <h2 id="dry-h">Rules: dry run</h2>
        <p class="muted">Replays a rule over the last day of stored readings without saving anything.</p>
        {canWrite() ? <DryRun rules={rules} /> : <p class="muted">Dry runs need the operator role.</p>}
      </section>
    </div>
  );
}
