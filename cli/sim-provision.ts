import { encodeProvisionRequest } from '../lib/contracts/provisioning.js';
import { type CredentialsFile, writeCredentialsFile } from './credentials-file.js';

/**
 * `rulr simulate --provision-url`: the devices missing from the credentials file claim their own
 * credentials as real devices do, with their profile's provisioning key and secret over ingest's
 * `POST /provision` (single-use: a claimed device cannot claim again, so every answer is written to
 * the file at once, and a restart reuses it). Ingest limits claims to `PROVISION_RATE_LIMIT` per
 * source and ten times that per key per `PROVISION_RATE_WINDOW_S` (defaults 10 and 60 s): a 429 is
 * waited out (the window is the server's; the wait doubles from 5 s to 60 s), so with the defaults
 * one simulator claims about 10 devices a minute. A demo fleet of 1,000 is given its credentials
 * with `rulr credentials issue` instead (docs/commands.md, "The simulator").
 */

export interface ProvisionOptions {
  /** ingest's base URL, e.g. http://127.0.0.1:4010 */
  url: string;
  key: string;
  secret: string;
  /** the credentials file the claims are written to */
  path: string;
  log: (line: string) => void;
  signal?: AbortSignal | undefined;
  /** first wait after a 429, ms (doubles up to 60 s) @default 5000 */
  backoffMs?: number;
}

export interface ProvisionResult {
  claimed: number;
  /** serial → why the claim was refused (`refused`, `already provisioned`) */
  refused: Map<string, string>;
  /** 429 answers waited out */
  limited: number;
}

/** Claims credentials for each of `devices` the file lacks, writing each answer to the file as it comes. */
export async function provisionMissing(
  devices: readonly { id: string; serial: string }[],
  file: CredentialsFile,
  o: ProvisionOptions,
): Promise<ProvisionResult> {
  const res: ProvisionResult = { claimed: 0, refused: new Map(), limited: 0 };
  const missing = devices.filter((d) => !file.devices.has(d.id));
  if (!missing.length) return res;
  o.log(`simulate: claiming credentials for ${missing.length} devices at ${o.url}/provision`);
  const url = `${o.url.replace(/\/+$/, '')}/provision`;
  let backoff = o.backoffMs ?? 5000;
  for (let i = 0; i < missing.length && !o.signal?.aborted; ) {
    const d = missing[i] as { id: string; serial: string };
    const r = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: encodeProvisionRequest({ serial: d.serial, provisionKey: o.key, provisionSecret: o.secret }),
      ...(o.signal ? { signal: o.signal } : {}),
    });
    const body = (await r.json().catch(() => ({}))) as Record<string, unknown>;
    if (r.status === 429) {
      res.limited++;
      o.log(`simulate: provisioning limited by ingest (${String(body.error ?? 'rate limited')}), waiting ${Math.round(backoff / 1000)} s`);
      await sleep(backoff, o.signal);
      backoff = Math.min(60_000, backoff * 2);
      continue;
    }
    backoff = o.backoffMs ?? 5000;
    i++;
    if (r.status === 200 && body.status === 'SUCCESS' && typeof body.username === 'string' && typeof body.secret === 'string') {
      if (body.deviceId !== d.id) throw new Error(`provisioning ${d.serial} answered for device ${String(body.deviceId)}, not ${d.id}`);
      file.devices.set(d.id, { deviceId: d.id, serial: d.serial, username: body.username, secret: body.secret });
      writeCredentialsFile(o.path, file);
      res.claimed++;
    } else if (r.status === 403) {
      res.refused.set(d.serial, String(body.error ?? 'refused'));
    } else {
      throw new Error(`provisioning ${d.serial}: HTTP ${r.status} ${JSON.stringify(body).slice(0, 200)}`);
    }
  }
  const why = [...res.refused].slice(0, 10).map(([s, e]) => `${s} (${e})`);
  o.log(
    `simulate: ${res.claimed} devices claimed their credentials (written to ${o.path})${res.refused.size ? `; ${res.refused.size} refused: ${why.join(', ')}${res.refused.size > 10 ? ', …' : ''} (an already provisioned device needs \`rulr credentials issue\`; another profile's device another key)` : ''}`,
  );
  return res;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });
