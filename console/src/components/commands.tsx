import { useEffect, useState } from 'preact/hooks';
import { ApiError, gql, subscribe } from '../api.js';
import { errorText, fmtTime } from '../format.js';

interface Command {
  id: string;
  name: string;
  params: Record<string, unknown>;
  status: string;
  createdAt: string;
  completedAt: string | null;
  error: string | null;
}

interface Spec {
  name: string;
  params: JsonSchema | null;
  description: string | null;
}

interface JsonSchema {
  type?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  minimum?: number;
  maximum?: number;
  enum?: unknown[];
  default?: unknown;
  description?: string;
}

interface DeviceState {
  desired: Record<string, unknown>;
  reported: Record<string, unknown>;
  delta: Record<string, unknown>;
  inSync: boolean;
  version: number;
  reportedAt: string | null;
}

/** Statuses a command never leaves. */
const ENDED = new Set(['SUCCEEDED', 'FAILED', 'EXPIRED', 'CANCELED']);
const COMMAND_FIELDS = 'id name params status createdAt completedAt error';
const PROBE = `query Commands($id: ID!) {
  device(id: $id) {
    id
    state { desired reported delta inSync version reportedAt }
    profile { commands { name params description } }
    commands(first: 20) { edges { node { ${COMMAND_FIELDS} } } }
  }
}`;

let capability: Promise<boolean> | null = null;

/**
 * Whether the API has commands: `__type(name: "DeviceState")` where introspection is on (null: no);
 * where it is off (production), the panel's own query tells (a validation error: no).
 */
function hasCommands(): Promise<boolean> {
  capability ??= gql<{ __type: { name: string } | null }>('{ __type(name: "DeviceState") { name } }')
    .then((d) => d.__type !== null)
    .catch(() => true);
  return capability;
}

type Probe = {
  device: {
    state: DeviceState | null;
    profile: { commands: Spec[] | null } | null;
    commands: { edges: { node: Command }[] } | null;
  } | null;
};

function StateTable({ state }: { state: DeviceState }) {
  const keys = [...new Set([...Object.keys(state.desired), ...Object.keys(state.reported)])].sort();
  return (
    <div class="table-wrap">
      <table aria-label="Desired and reported state" data-testid="device-state">
        <thead>
          <tr>
            <th scope="col">Key</th>
            <th scope="col">Desired</th>
            <th scope="col">Reported</th>
          </tr>
        </thead>
        <tbody>
          {keys.map((k) => (
            <tr key={k} class={k in state.delta ? 'drift' : ''}>
              <th scope="row">{k}</th>
              <td>{k in state.desired ? JSON.stringify(state.desired[k]) : '—'}</td>
              <td>
                {k in state.reported ? JSON.stringify(state.reported[k]) : '—'}
                {k in state.delta ? ' (differs)' : ''}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <p class="muted">
        {state.inSync ? 'In sync' : 'Not in sync'} · version {state.version} · reported {fmtTime(state.reportedAt)}
      </p>
    </div>
  );
}

function initial(schema: JsonSchema | null): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, p] of Object.entries(schema?.properties ?? {})) {
    if (p.default !== undefined) out[k] = p.default;
    else if (p.type === 'boolean') out[k] = false;
    else if (p.type === 'number' || p.type === 'integer') out[k] = p.minimum ?? 0;
    else if (p.enum?.length) out[k] = p.enum[0];
  }
  return out;
}

/** A form for one declared command, its inputs read from the command's JSON Schema. */
function CommandForm({ deviceId, spec, onSent }: { deviceId: string; spec: Spec; onSent: (c: Command) => void }) {
  const [params, setParams] = useState<Record<string, unknown>>(() => initial(spec.params));
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const props = Object.entries(spec.params?.properties ?? {});
  const set = (k: string, v: unknown) => setParams((p) => ({ ...p, [k]: v }));
  return (
    <form
      class="command"
      aria-label={`Command ${spec.name}`}
      onSubmit={(e) => {
        e.preventDefault();
        setBusy(true);
        setError(null);
        gql<{ sendCommand: Command }>(`mutation Send($input: SendCommandInput!) { sendCommand(input: $input) { ${COMMAND_FIELDS} } }`, {
          input: { deviceId, name: spec.name, params, idempotencyKey: crypto.randomUUID() },
        })
          .then((d) => onSent(d.sendCommand))
          .catch((err: unknown) => setError(errorText(err)))
          .finally(() => setBusy(false));
      }}
    >
      <fieldset>
        <legend>{spec.name}</legend>
        {spec.description && <p class="muted">{spec.description}</p>}
        {props.map(([k, p]) =>
          p.type === 'boolean' ? (
            <label key={k} class="inline">
              <input
                type="checkbox"
                name={k}
                checked={params[k] === true}
                onChange={(e) => set(k, (e.target as HTMLInputElement).checked)}
              />
              {k}
            </label>
          ) : p.type === 'number' || p.type === 'integer' ? (
            <label key={k}>
              {k}
              {p.minimum !== undefined && p.maximum !== undefined ? ` (${p.minimum}–${p.maximum})` : ''}
              <input
                type="number"
                name={k}
                min={p.minimum}
                max={p.maximum}
                step={p.type === 'integer' ? 1 : 'any'}
                value={String(params[k] ?? '')}
                onInput={(e) => set(k, Number((e.target as HTMLInputElement).value))}
              />
            </label>
          ) : p.enum ? (
            <label key={k}>
              {k}
              <select name={k} value={String(params[k])} onChange={(e) => set(k, (e.target as HTMLSelectElement).value)}>
                {p.enum.map((v) => (
                  <option key={String(v)}>{String(v)}</option>
                ))}
              </select>
            </label>
          ) : (
            <label key={k}>
              {k}
              <input name={k} value={String(params[k] ?? '')} onInput={(e) => set(k, (e.target as HTMLInputElement).value)} />
            </label>
          ),
        )}
        <button type="submit" disabled={busy}>
          Send {spec.name}
        </button>
        {error && (
          <p role="alert" class="error">
            {error}
          </p>
        )}
      </fieldset>
    </form>
  );
}

/**
 * Desired vs reported state and the command panel, shown when the API has commands (a capability
 * check: a schema without `Device.state` answers GRAPHQL_VALIDATION_FAILED and the panel stays hidden).
 * Each command's status moves live (`commandUpdated`). Viewers see no forms.
 */
export function CommandPanel({ deviceId, writable }: { deviceId: string; writable: boolean }) {
  const [available, setAvailable] = useState<boolean | null>(null);
  const [state, setState] = useState<DeviceState | null>(null);
  const [specs, setSpecs] = useState<Spec[]>([]);
  const [commands, setCommands] = useState<Command[]>([]);
  const [error, setError] = useState<string | null>(null);

  const upsert = (c: Command) =>
    setCommands((l) => {
      const i = l.findIndex((x) => x.id === c.id);
      if (i < 0) return [c, ...l].slice(0, 50);
      const old = l[i] as Command;
      // answers race: sendCommand's own answer (QUEUED) may arrive after the live SUCCEEDED; an ended command stays ended
      if (ENDED.has(old.status) && !ENDED.has(c.status)) return l;
      const next = [...l];
      next[i] = { ...old, ...c };
      return next;
    });

  useEffect(() => {
    let live = true;
    let off: (() => void) | undefined;
    hasCommands()
      .then((has) => {
        if (!has) throw new ApiError('no commands in this API', 'GRAPHQL_VALIDATION_FAILED');
        return gql<Probe>(PROBE, { id: deviceId });
      })
      .then((d) => {
        if (!live) return;
        setAvailable(true);
        setState(d.device?.state ?? null);
        setSpecs(d.device?.profile?.commands ?? []);
        setCommands((d.device?.commands?.edges ?? []).map((e) => e.node));
        off = subscribe<{ commandUpdated: { status: string; command: Command | null } }>(
          `subscription Cmd($ids: [ID!]) { commandUpdated(deviceIds: $ids) { status at command { ${COMMAND_FIELDS} } } }`,
          { ids: [deviceId] },
          (ev) => {
            if (ev.commandUpdated.command) upsert({ ...ev.commandUpdated.command, status: ev.commandUpdated.status });
          },
        );
      })
      .catch((e: unknown) => {
        if (!live) return;
        if (e instanceof ApiError && e.code === 'GRAPHQL_VALIDATION_FAILED') setAvailable(false);
        else {
          setAvailable(true);
          setError(errorText(e));
        }
      });
    return () => {
      live = false;
      off?.();
    };
  }, [deviceId]);

  if (available === null || available === false) return null;
  return (
    <section class="panel" aria-labelledby="commands-h" data-testid="command-panel">
      <h2 id="commands-h">State and commands</h2>
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      {state && <StateTable state={state} />}
      {writable && specs.length > 0 && (
        <div class="commands">
          {specs.map((s) => (
            <CommandForm key={s.name} deviceId={deviceId} spec={s} onSent={upsert} />
          ))}
        </div>
      )}
      {writable && specs.length === 0 && <p class="muted">This device's profile declares no commands.</p>}
      <h3>Recent commands</h3>
      {commands.length === 0 ? (
        <p class="muted">No commands yet.</p>
      ) : (
        <div class="table-wrap">
          <table aria-label="Recent commands">
            <thead>
              <tr>
                <th scope="col">Command</th>
                <th scope="col">Parameters</th>
                <th scope="col">Status</th>
                <th scope="col">Created</th>
                <th scope="col">Completed</th>
              </tr>
            </thead>
            <tbody aria-live="polite">
              {commands.map((c) => (
                <tr key={c.id} data-command-id={c.id}>
                  <td>{c.name}</td>
                  <td>
                    <code>{JSON.stringify(c.params)}</code>
                  </td>
                  <td data-testid="command-status">
                    {c.status}
                    {c.error ? ` — ${c.error}` : ''}
                  </td>
                  <td>{fmtTime(c.createdAt)}</td>
                  <td>{fmtTime(c.completedAt)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
