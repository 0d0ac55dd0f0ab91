import { useEffect, useRef, useState } from 'preact/hooks';
import { canWrite, gql, session, subscribe } from '../api.js';
import { errorText, fmtTime, SEVERITIES, type Severity } from '../format.js';
import { route } from '../router.js';
import { flatten, loadSites, type SiteNode } from '../sites.js';

interface Alarm {
  id: string;
  type: string;
  severity: Severity;
  status: string;
  active: boolean;
  acknowledged: boolean;
  message: string;
  raisedAt: string;
  lastSeenAt: string;
  occurrences: number;
  assignedTo: string | null;
  device: { id: string; name: string; site: { id: string; name: string } | null } | null;
}

interface Counts {
  active: number;
  unacknowledged: number;
  critical: number;
  major: number;
  minor: number;
  warning: number;
}

const ALARM_FIELDS = `id type severity status active acknowledged message raisedAt lastSeenAt occurrences assignedTo
  device { id name site { id name } }`;
const LIST = `query Alarms($filter: AlarmFilter) { alarms(first: 50, filter: $filter) { totalCount edges { node { ${ALARM_FIELDS} } } } }`;
/** Sites whose counts one request asks for (each an alias; the gateway allows 30). */
const MAX_COUNTED = 25;

/** A member of the organization, as `users` lists them (any member may read the list). */
interface Member {
  id: string;
  name: string;
  email: string;
}

/** `user:<id>` → the member's name (or the raw value for a key or someone who left). */
function assigneeName(assignedTo: string | null, members: Member[]): string {
  if (!assignedTo) return 'unassigned';
  const m = members.find((u) => `user:${u.id}` === assignedTo);
  return m ? m.name || m.email : assignedTo;
}

function AlarmRow({
  alarm,
  writable,
  members,
  onChanged,
}: {
  alarm: Alarm;
  writable: boolean;
  members: Member[];
  onChanged: (a: Alarm) => void;
}) {
  const [note, setNote] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [history, setHistory] = useState<{ at: string; kind: string; actor: string; note: string | null }[] | null>(null);
  const act = (mutation: string, vars: Record<string, unknown>) => {
    setError(null);
    gql<Record<string, Alarm>>(mutation, vars)
      .then((d) => {
        const a = Object.values(d)[0];
        if (a) onChanged(a);
        setNote('');
      })
      .catch((e: unknown) => setError(errorText(e)));
  };
  return (
    <li class="alarm panel" data-testid="alarm" data-alarm-id={alarm.id} data-status={alarm.status}>
      <div class="alarm-head">
        <span class={`badge sev-${alarm.severity}`}>{alarm.severity.toLowerCase()}</span> <strong>{alarm.type}</strong>{' '}
        <span class="muted" data-testid="alarm-status">
          {alarm.active ? 'active' : 'cleared'}, {alarm.acknowledged ? 'acknowledged' : 'unacknowledged'}
        </span>
      </div>
      <p>{alarm.message}</p>
      <p class="muted">
        {alarm.device ? <a href={`#/devices/${alarm.device.id}`}>{alarm.device.name}</a> : 'unknown device'}
        {alarm.device?.site ? ` · ${alarm.device.site.name}` : ''} · raised {fmtTime(alarm.raisedAt)} · last {fmtTime(alarm.lastSeenAt)} · ×
        {alarm.occurrences} · <span data-testid="alarm-assignee">{assigneeName(alarm.assignedTo, members)}</span>
      </p>
      {writable && (
        <div class="toolbar">
          {!alarm.acknowledged && (
            <button
              type="button"
              onClick={() =>
                act(`mutation Ack($id: ID!, $n: String) { acknowledgeAlarm(id: $id, note: $n) { ${ALARM_FIELDS} } }`, {
                  id: alarm.id,
                  n: note || null,
                })
              }
            >
              Acknowledge
            </button>
          )}
          {alarm.active && (
            <button
              type="button"
              class="secondary"
              onClick={() =>
                act(`mutation Clear($id: ID!, $n: String) { clearAlarm(id: $id, note: $n) { ${ALARM_FIELDS} } }`, {
                  id: alarm.id,
                  n: note || null,
                })
              }
            >
              Clear
            </button>
          )}
          <label>
            <span class="sr-only">Assign {alarm.type} to</span>
            <select
              aria-label={`Assign ${alarm.type} to`}
              value={alarm.assignedTo?.replace(/^user:/, '') ?? ''}
              onChange={(e) =>
                act(
                  `mutation Assign($id: ID!, $a: ID, $n: String) { assignAlarm(id: $id, assigneeId: $a, note: $n) { ${ALARM_FIELDS} } }`,
                  {
                    id: alarm.id,
                    a: (e.target as HTMLSelectElement).value || null,
                    n: note || null,
                  },
                )
              }
            >
              <option value="">Unassigned</option>
              {members.map((m) => (
                <option key={m.id} value={m.id}>
                  {m.name || m.email}
                </option>
              ))}
            </select>
          </label>
          <label>
            <span class="sr-only">Comment on {alarm.type}</span>
            <input
              aria-label={`Comment on ${alarm.type}`}
              placeholder="Comment or note"
              value={note}
              onInput={(e) => setNote((e.target as HTMLInputElement).value)}
            />
          </label>
          <button
            type="button"
            class="secondary"
            disabled={!note.trim()}
            onClick={() =>
              act(`mutation Comment($id: ID!, $t: String!) { commentAlarm(id: $id, text: $t) { ${ALARM_FIELDS} } }`, {
                id: alarm.id,
                t: note.trim(),
              })
            }
          >
            Comment
          </button>
        </div>
      )}
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      <button
        type="button"
        class="link secondary"
        aria-expanded={history !== null}
        onClick={() =>
          history
            ? setHistory(null)
            : gql<{ alarm: { history: { at: string; kind: string; actor: string; note: string | null }[] } | null }>(
                'query H($id: ID!) { alarm(id: $id) { history { at kind actor note } } }',
                { id: alarm.id },
              )
                .then((d) => setHistory(d.alarm?.history ?? []))
                .catch((e: unknown) => setError(errorText(e)))
        }
      >
        History
      </button>
      {history && (
        <ol class="history">
          {history.map((h) => (
            <li key={`${h.at}-${h.kind}`}>
              {fmtTime(h.at)} — {h.kind.toLowerCase()} by {h.actor}
              {h.note ? `: ${h.note}` : ''}
            </li>
          ))}
        </ol>
      )}
    </li>
  );
}

/** Alarms: a live list filtered by severity and site subtree, with acknowledge, clear, assign and comment, and counts per site. */
export function AlarmsPage(_props: { params: Record<string, string> }) {
  const orgId = session.value?.organization.id ?? '';
  const deviceId = route.value.params.get('device');
  const [sites, setSites] = useState<SiteNode[]>([]);
  const [members, setMembers] = useState<Member[]>([]);
  const [siteId, setSiteId] = useState<string>(route.value.params.get('site') ?? '');
  const [severities, setSeverities] = useState<Severity[]>([]);
  const [activeOnly, setActiveOnly] = useState(true);
  const [alarms, setAlarms] = useState<Alarm[]>([]);
  const [total, setTotal] = useState(0);
  const [counts, setCounts] = useState<{ site: SiteNode; c: Counts | null }[]>([]);
  const [error, setError] = useState<string | null>(null);
  const reload = useRef<() => void>(() => undefined);

  useEffect(() => {
    loadSites(orgId)
      .then(setSites)
      .catch(() => setSites([]));
    gql<{ users: Member[] | null }>('query Members { users { id name email } }')
      .then((d) => setMembers(d.users ?? []))
      .catch(() => setMembers([]));
  }, [orgId]);

  useEffect(() => {
    const filter = {
      ...(severities.length ? { severity: severities } : {}),
      ...(siteId ? { siteId } : {}),
      ...(deviceId ? { deviceId } : {}),
      ...(activeOnly ? { status: ['ACTIVE_UNACK', 'ACTIVE_ACK'] } : {}),
    };
    let live = true;
    const load = () =>
      gql<{ alarms: { totalCount: number; edges: { node: Alarm }[] } | null }>(LIST, { filter })
        .then((d) => {
          if (!live) return;
          setAlarms((d.alarms?.edges ?? []).map((e) => e.node));
          setTotal(d.alarms?.totalCount ?? 0);
          setError(null);
        })
        .catch((e: unknown) => live && setError(errorText(e)));
    reload.current = () => void load();
    void load();
    // live: any change under the filter reloads the list (at most twice a second)
    let timer: ReturnType<typeof setTimeout> | undefined;
    const off = subscribe(
      'subscription Live($siteId: ID, $ids: [ID!]) { alarmChanged(siteId: $siteId, deviceIds: $ids) { kind at } }',
      { siteId: siteId || null, ids: deviceId ? [deviceId] : null },
      () => {
        clearTimeout(timer);
        timer = setTimeout(() => void load(), 500);
      },
    );
    return () => {
      live = false;
      clearTimeout(timer);
      off();
    };
  }, [siteId, severities.join(','), activeOnly, deviceId]);

  // counts per site: the selected site's children (or the top-level sites)
  useEffect(() => {
    const all = flatten(sites);
    const parent = all.find((s) => s.id === siteId);
    const list = (parent ? [parent, ...parent.children] : sites).slice(0, MAX_COUNTED);
    if (!list.length) return setCounts([]);
    // ids travel as variables, never spliced into the query text
    const q = `query Counts(${list.map((_s, i) => `$s${i}: ID`).join(', ')}) { ${list
      .map((_s, i) => `s${i}: alarmCounts(siteId: $s${i}) { active unacknowledged critical major minor warning }`)
      .join(' ')} }`;
    gql<Record<string, Counts | null>>(q, Object.fromEntries(list.map((s, i) => [`s${i}`, s.id])))
      .then((d) => setCounts(list.map((site, i) => ({ site, c: d[`s${i}`] ?? null }))))
      .catch(() => setCounts([]));
  }, [sites, siteId, alarms]);

  const all = flatten(sites);
  const depth = (s: SiteNode): number => {
    let n = 0;
    let p = s.parentId;
    while (p) {
      n++;
      p = all.find((x) => x.id === p)?.parentId ?? null;
    }
    return n;
  };
  const writable = canWrite();
  return (
    <div>
      <h1>Alarms</h1>
      <form class="toolbar" aria-label="Alarm filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          Site
          <select value={siteId} onChange={(e) => setSiteId((e.target as HTMLSelectElement).value)}>
            <option value="">All sites</option>
            {all.map((s) => (
              <option key={s.id} value={s.id}>
                {'\u2003'.repeat(depth(s))}
                {s.name}
              </option>
            ))}
          </select>
        </label>
        <fieldset class="severities">
          <legend>Severity</legend>
          {SEVERITIES.map((s) => (
            <label key={s} class="inline">
              <input
                type="checkbox"
                checked={severities.includes(s)}
                onChange={(e) => setSeverities((l) => ((e.target as HTMLInputElement).checked ? [...l, s] : l.filter((x) => x !== s)))}
              />
              {s.toLowerCase()}
            </label>
          ))}
        </fieldset>
        <label class="inline">
          <input type="checkbox" checked={activeOnly} onChange={(e) => setActiveOnly((e.target as HTMLInputElement).checked)} />
          Active only
        </label>
      </form>
      {deviceId && (
        <p>
          One device only. <a href="#/alarms">Show all</a>
        </p>
      )}
      {counts.length > 0 && (
        <section class="panel" aria-labelledby="counts-h">
          <h2 id="counts-h">Counts per site</h2>
          <div class="table-wrap">
            <table aria-label="Alarm counts per site" data-testid="alarm-counts">
              <thead>
                <tr>
                  <th scope="col">Site</th>
                  <th scope="col">Active</th>
                  <th scope="col">Unacknowledged</th>
                  <th scope="col">Critical</th>
                  <th scope="col">Major</th>
                  <th scope="col">Minor</th>
                  <th scope="col">Warning</th>
                </tr>
              </thead>
              <tbody>
                {counts.map(({ site, c }) => (
                  <tr key={site.id}>
                    <th scope="row">
                      <button type="button" class="link" onClick={() => setSiteId(site.id)}>
                        {site.name}
                      </button>
                    </th>
                    <td>{c?.active ?? '—'}</td>
                    <td>{c?.unacknowledged ?? '—'}</td>
                    <td>{c?.critical ?? '—'}</td>
                    <td>{c?.major ?? '—'}</td>
                    <td>{c?.minor ?? '—'}</td>
                    <td>{c?.warning ?? '—'}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </section>
      )}
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      <p role="status" data-testid="alarm-total">
        {total} alarm{total === 1 ? '' : 's'}
        {total > alarms.length ? ` (showing the newest ${alarms.length})` : ''}
      </p>
      <ul class="alarms" aria-label="Alarm list">
        {alarms.map((a) => (
          <AlarmRow
            key={a.id}
            alarm={a}
            writable={writable}
            members={members}
            onChanged={(n) => setAlarms((l) => l.map((x) => (x.id === n.id ? n : x)))}
          />
        ))}
      </ul>
    </div>
  );
}
