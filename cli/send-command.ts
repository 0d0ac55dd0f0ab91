import type { Config } from '../lib/config.js';
import { isFinalStatus } from '../lib/contracts/commands.js';

/**
 * `rulr send-command`: sends one command to a device through the public GraphQL API (the gateway)
 * and follows it to its end, printing each status with its evidence as the platform records it
 * (QUEUED → SENT → DELIVERED → SUCCEEDED). The quick start runs it once against a demo lamp.
 */

export interface SendCommandOptions {
  /** the gateway's GraphQL endpoint, `http://127.0.0.1:3000/graphql` */
  url: string;
  token: string;
  /** the device, by serial */
  serial: string;
  name: string;
  params: Record<string, unknown>;
  /** give up following after this long (the command goes on) @default 30000 */
  waitMs?: number;
  /** output @default console.log */
  log?: (line: string) => void;
}

export interface SentCommand {
  id: string;
  deviceId: string;
  status: string;
  statuses: string[];
}

interface HistoryEntry {
  status: string;
  at: string;
  evidence: Record<string, unknown> | null;
}

async function gql<T>(url: string, token: string, query: string, variables: Record<string, unknown>): Promise<T> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await res.json().catch(() => ({}))) as { data?: T; errors?: { message: string }[] };
  if (body.errors?.length || !body.data)
    throw new Error(`GraphQL: ${body.errors?.map((e) => e.message).join('; ') ?? `HTTP ${res.status}`}`);
  return body.data;
}

/** One history entry as a line: the status, ms after the first one, and what proves it. */
export function describeStep(h: HistoryEntry, firstAt: number): string {
  const ms = Date.parse(h.at) - firstAt;
  const e = h.evidence ?? {};
  const why =
    h.status === 'QUEUED'
      ? `stored, by ${String(e.by ?? '?')}`
      : h.status === 'SENT'
        ? `broker ${String(e.broker ?? 'PUBACK')} on ${String(e.topic ?? '?')}`
        : h.status === 'DELIVERED' || h.status === 'SUCCEEDED' || (h.status === 'FAILED' && e.reply)
          ? `the device answered ${String(e.reply ?? 'received')} on ${String(e.topic ?? '?')}`
          : JSON.stringify(e).slice(0, 200);
  return `  ${h.status.padEnd(10)} +${String(ms).padStart(5)} ms  ${why}`;
}

/** Sends the command and prints its statuses until it ends or `waitMs` passes. */
export async function sendAndFollow(o: SendCommandOptions): Promise<SentCommand> {
  const log = o.log ?? ((l: string) => console.log(l));
  const found = await gql<{ devices: { edges: { node: { id: string; serial: string } }[] } }>(
    o.url,
    o.token,
    'query($s: String!) { devices(first: 5, filter: {search: $s}) { edges { node { id serial } } } }',
    { s: o.serial },
  );
  const device = found.devices.edges.map((e) => e.node).find((d) => d.serial === o.serial);
  if (!device) throw new Error(`no device with serial ${o.serial}`);
  const sent = await gql<{ sendCommand: { id: string } }>(
    o.url,
    o.token,
    'mutation($i: SendCommandInput!) { sendCommand(input: $i) { id } }',
    { i: { deviceId: device.id, name: o.name, params: o.params } },
  );
  const id = sent.sendCommand.id;
  log(`[rulr] sendCommand ${o.name} ${JSON.stringify(o.params)} to ${o.serial} (command ${id}):`);
  const end = Date.now() + (o.waitMs ?? 30_000);
  let shown = 0;
  let firstAt = 0;
  let status = 'QUEUED';
  const statuses: string[] = [];
  for (;;) {
    const { command } = await gql<{ command: { status: string; result: unknown; error: string | null; history: HistoryEntry[] } }>(
      o.url,
      o.token,
      'query($id: ID!) { command(id: $id) { status result error history { status at evidence } } }',
      { id },
    );
    status = command.status;
    for (const h of command.history.slice(shown)) {
      firstAt ||= Date.parse(h.at);
      statuses.push(h.status);
      log(describeStep(h, firstAt));
    }
    shown = command.history.length;
    if (isFinalStatus(status)) {
      if (status === 'SUCCEEDED') log(`  result: ${JSON.stringify(command.result)}`);
      else if (command.error) log(`  error: ${command.error}`);
      break;
    }
    if (Date.now() > end) {
      log(`  still ${status} after ${Math.round((o.waitMs ?? 30_000) / 1000)} s (the platform keeps following it)`);
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { id, deviceId: device.id, status, statuses };
}

/** `rulr send-command`: a token from `--token`, or an operator token of `--org` issued here. */
export async function sendCommandCli(
  cfg: Config,
  o: { serial: string; name: string; params: string; url?: string; token?: string; org: string; wait: string },
): Promise<void> {
  let params: unknown;
  try {
    params = JSON.parse(o.params);
  } catch {
    throw new Error('--params must be a JSON object');
  }
  if (typeof params !== 'object' || params === null || Array.isArray(params)) throw new Error('--params must be a JSON object');
  const wait = Number(o.wait);
  if (!(wait > 0)) throw new Error('--wait must be a positive number of seconds');
  const base = o.url ?? `http://127.0.0.1:${cfg.GATEWAY_PORT}`;
  let token = o.token;
  if (!token) {
    const { printToken } = await import('./token.js');
    token = await printToken(cfg, { org: o.org, role: 'operator', quiet: true });
  }
  const r = await sendAndFollow({
    url: `${base.replace(/\/$/, '')}/graphql`,
    token,
    serial: o.serial,
    name: o.name,
    params: params as Record<string, unknown>,
    waitMs: wait * 1000,
  });
  console.log(`  in the console: ${base.replace(/\/$/, '')}/#/devices/${r.deviceId}`);
  if (r.status !== 'SUCCEEDED') process.exitCode = 2;
}
