import { Fragment } from 'preact';
import { useEffect, useMemo, useState } from 'preact/hooks';
import { ApiError, canWrite, gql, subscribe } from '../api.js';
import { Chart } from '../components/chart';
import { CommandPanel } from '../components/commands';
import { errorText, fmtNumber, fmtTime } from '../format.js';

interface Reading {
  metric: string;
  ts: string;
  value: number | null;
  text: string | null;
}

interface DeviceInfo {
  id: string;
  serial: string;
  name: string;
  attributes: Record<string, unknown>;
  createdAt: string;
  location: { lat: number; lng: number } | null;
  site: { id: string; name: string; path: { id: string; name: string }[] } | null;
  profile: { id: string; name: string; metrics: { name: string; unit: string | null; type: string; counter: boolean }[] } | null;
  status: { online: boolean; lastSeen: string | null } | null;
  latest: Reading[] | null;
  alarms:
    | { id: string; type: string; severity: string; status: string; message: string; raisedAt: string; clearedAt: string | null }[]
    | null;
}

const DEVICE = `query Device($id: ID!) {
  device(id: $id) {
    id serial name attributes createdAt location { lat lng }
    site { id name path { id name } }
    profile { id name metrics { name unit type counter } }
    status { online lastSeen }
    latest { metric ts value text }
    alarms(first: 50) { id type severity status message raisedAt clearedAt }
  }
}`;

const RANGES: [string, number][] = [
  ['Last hour', 3600],
  ['Last 6 hours', 6 * 3600],
  ['Last 24 hours', 86400],
  ['Last 7 days', 7 * 86400],
  ['Last 30 days', 30 * 86400],
  ['Last 365 days', 365 * 86400],
];

function LatestValues({ device }: { device: DeviceInfo }) {
  const [latest, setLatest] = useState<Map<string, Reading>>(() => new Map((device.latest ?? []).map((r) => [r.metric, r])));
  const [online, setOnline] = useState(device.status?.online ?? false);
  const [lastSeen, setLastSeen] = useState(device.status?.lastSeen ?? null);
  useEffect(() => {
    const offT = subscribe<{ telemetryUpdated: { readings: Reading[] } }>(
      'subscription Live($ids: [ID!]) { telemetryUpdated(deviceIds: $ids) { readings { metric ts value text } } }',
      { ids: [device.id] },
      (d) =>
        setLatest((m) => {
          const next = new Map(m);
          for (const r of d.telemetryUpdated.readings) {
            const old = next.get(r.metric);
            if (!old || old.ts <= r.ts) next.set(r.metric, r);
          }
          return next;
        }),
    );
    const offS = subscribe<{ deviceStatusChanged: { online: boolean; lastSeen: string | null } }>(
      'subscription St($ids: [ID!]) { deviceStatusChanged(deviceIds: $ids) { online lastSeen } }',
      { ids: [device.id] },
      (d) => {
        setOnline(d.deviceStatusChanged.online);
        setLastSeen(d.deviceStatusChanged.lastSeen);
      },
    );
    return () => {
      offT();
      offS();
    };
  }, [device.id]);
  const units = new Map((device.profile?.metrics ?? []).map((m) => [m.name, m.unit]));
  const rows = [...latest.values()].sort((a, b) => a.metric.localeCompare(b.metric));
  return (
    <section class="panel" aria-labelledby="latest-h">
      <h2 id="latest-h">Latest values</h2>
      <p>
        <span class="badge" data-testid="device-online">
          {online ? 'online' : 'offline'}
        </span>{' '}
        <span class="muted">last seen {fmtTime(lastSeen)}</span>
      </p>
      {rows.length === 0 ? (
        <p class="muted">No readings yet.</p>
      ) : (
        <table aria-label="Latest values" data-testid="latest-values">
          <thead>
            <tr>
              <th scope="col">Metric</th>
              <th scope="col">Value</th>
              <th scope="col">At</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((r) => (
              <tr key={r.metric} data-metric={r.metric}>
                <th scope="row">{r.metric}</th>
                <td data-testid={`latest-${r.metric}`}>
                  {r.value !== null ? fmtNumber(r.value) : r.text}
                  {units.get(r.metric) ? ` ${units.get(r.metric)}` : ''}
                </td>
                <td>{fmtTime(r.ts)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function MetricChart({ device }: { device: DeviceInfo }) {
  const numeric = (device.profile?.metrics ?? []).filter((m) => m.type === 'NUMBER').map((m) => m.name);
  const names = numeric.length ? numeric : [...new Set((device.latest ?? []).filter((r) => r.value !== null).map((r) => r.metric))];
  const [metric, setMetric] = useState(names[0] ?? '');
  const [range, setRange] = useState(86400);
  const [data, setData] = useState<{ ts: string; value: number | null }[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    if (!metric) return;
    const to = new Date();
    const from = new Date(to.getTime() - range * 1000);
    setError(null);
    // the API picks the interval (raw rows for short ranges, hourly or daily rollups for long ones)
    gql<{ device: { series: { ts: string; value: number | null }[] | null } | null }>(
      'query Series($id: ID!, $m: String!, $from: DateTime!, $to: DateTime!) { device(id: $id) { series(metric: $m, from: $from, to: $to) { ts value } } }',
      { id: device.id, m: metric, from: from.toISOString(), to: to.toISOString() },
    )
      .then((d) => setData(d.device?.series ?? []))
      .catch((e: unknown) => setError(errorText(e)));
  }, [device.id, metric, range]);
  const x = useMemo(() => (data ?? []).map((p) => new Date(p.ts).getTime() / 1000), [data]);
  const series = useMemo(() => [{ label: metric, colour: '#1864ab', values: (data ?? []).map((p) => p.value) }], [data, metric]);
  if (!names.length) return null;
  return (
    <section class="panel" aria-labelledby="chart-h">
      <h2 id="chart-h">Chart</h2>
      <div class="toolbar">
        <label>
          Metric
          <select value={metric} onChange={(e) => setMetric((e.target as HTMLSelectElement).value)}>
            {names.map((n) => (
              <option key={n}>{n}</option>
            ))}
          </select>
        </label>
        <label>
          Range
          <select value={String(range)} onChange={(e) => setRange(Number((e.target as HTMLSelectElement).value))}>
            {RANGES.map(([l, s]) => (
              <option key={s} value={String(s)}>
                {l}
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
      {data && data.length === 0 && <p class="muted">No readings in this range.</p>}
      {data && data.length > 0 && <Chart x={x} series={series} label={`${metric} over the chosen range`} testId="metric-chart" />}
    </section>
  );
}

function Energy({ device }: { device: DeviceInfo }) {
  const [days, setDays] = useState<{ ts: string; kwh: number }[] | null>(null);
  const hasEnergy = (device.profile?.metrics ?? []).some((m) => m.counter);
  useEffect(() => {
    if (!hasEnergy) return;
    const to = new Date();
    const from = new Date(to.getTime() - 30 * 86400_000);
    gql<{ device: { energy: { ts: string; kwh: number }[] | null } | null }>(
      'query Energy($id: ID!, $from: DateTime!, $to: DateTime!) { device(id: $id) { energy(from: $from, to: $to, interval: "1d") { ts kwh } } }',
      { id: device.id, from: from.toISOString(), to: to.toISOString() },
    )
      .then((d) => setDays(d.device?.energy ?? []))
      .catch(() => setDays([]));
  }, [device.id, hasEnergy]);
  const x = useMemo(() => (days ?? []).map((p) => new Date(p.ts).getTime() / 1000), [days]);
  const series = useMemo(() => [{ label: 'kWh per day', colour: '#2b8a3e', values: (days ?? []).map((p) => p.kwh), bars: true }], [days]);
  if (!hasEnergy) return null;
  return (
    <section class="panel" aria-labelledby="energy-h">
      <h2 id="energy-h">Energy per day (30 days)</h2>
      {days && days.length === 0 && <p class="muted">No energy readings.</p>}
      {days && days.length > 0 && <Chart x={x} series={series} label="Energy per day" height={200} testId="energy-chart" />}
    </section>
  );
}

function AlarmHistory({ device }: { device: DeviceInfo }) {
  const alarms = device.alarms ?? [];
  return (
    <section class="panel" aria-labelledby="alarms-h">
      <h2 id="alarms-h">Alarm history</h2>
      {alarms.length === 0 ? (
        <p class="muted">No alarms.</p>
      ) : (
        <div class="table-wrap">
          <table aria-label="Alarm history">
            <thead>
              <tr>
                <th scope="col">Severity</th>
                <th scope="col">Type</th>
                <th scope="col">Status</th>
                <th scope="col">Raised</th>
                <th scope="col">Cleared</th>
              </tr>
            </thead>
            <tbody>
              {alarms.map((a) => (
                <tr key={a.id}>
                  <td>
                    <span class={`badge sev-${a.severity}`}>{a.severity.toLowerCase()}</span>
                  </td>
                  <td title={a.message}>{a.type}</td>
                  <td>{a.status.toLowerCase().replace('_', ', ')}</td>
                  <td>{fmtTime(a.raisedAt)}</td>
                  <td>{fmtTime(a.clearedAt)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <p>
        <a href={`#/alarms?device=${device.id}`}>All alarms of this device</a>
      </p>
    </section>
  );
}

/** One device: attributes, live values, a chart, energy, alarms, state and commands. */
export function DevicePage({ params }: { params: Record<string, string> }) {
  const [device, setDevice] = useState<DeviceInfo | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    setDevice(null);
    setError(null);
    gql<{ device: DeviceInfo | null }>(DEVICE, { id: params.id })
      .then((d) => (d.device ? setDevice(d.device) : setError('No such device (or not in this organization).')))
      .catch((e: unknown) => setError(e instanceof ApiError && e.code === 'BAD_USER_INPUT' ? 'No such device.' : errorText(e)));
  }, [params.id]);
  if (error)
    return (
      <p role="alert" class="error">
        {error}
      </p>
    );
  if (!device) return <p aria-busy="true">Loading…</p>;
  const attrs = Object.entries(device.attributes ?? {});
  return (
    <article data-testid="device-page" data-device-id={device.id}>
      <p class="muted">
        <a href="#/map">Map</a>
        {device.site?.path.map((s) => (
          <span key={s.id}>
            {' › '}
            <a href={`#/map?site=${s.id}`}>{s.name}</a>
          </span>
        ))}
      </p>
      <h1>{device.name}</h1>
      <div class="grid">
        <section class="panel" aria-labelledby="attrs-h">
          <h2 id="attrs-h">Attributes</h2>
          <dl class="attrs">
            <dt>Serial</dt>
            <dd>{device.serial}</dd>
            <dt>Profile</dt>
            <dd>{device.profile?.name ?? '—'}</dd>
            <dt>Location</dt>
            <dd>{device.location ? `${device.location.lat.toFixed(5)}, ${device.location.lng.toFixed(5)}` : '—'}</dd>
            <dt>Created</dt>
            <dd>{fmtTime(device.createdAt)}</dd>
            {attrs.map(([k, v]) => (
              <Fragment key={k}>
                <dt>{k}</dt>
                <dd>{typeof v === 'string' ? v : JSON.stringify(v)}</dd>
              </Fragment>
            ))}
          </dl>
        </section>
        <LatestValues device={device} />
      </div>
      <MetricChart device={device} />
      <Energy device={device} />
      <CommandPanel deviceId={device.id} writable={canWrite()} />
      <AlarmHistory device={device} />
    </article>
  );
}
