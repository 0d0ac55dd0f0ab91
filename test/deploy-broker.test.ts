import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { AUTHN_PATH, AUTHZ_PATH } from '../ingest/broker-auth/index.js';
import { loadConfig } from '../lib/config.js';
import { normalizeFingerprint } from '../lib/device-credentials.js';
import { mosquittoAclFile } from '../lib/mqtt-policy.js';

const deploy = fileURLToPath(new URL('../deploy/', import.meta.url));

/** mosquitto.conf as option → values, in order (options such as `listener` repeat). */
function mosquittoOptions(file: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const raw of readFileSync(file, 'utf8').split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const [key, ...rest] = line.split(/\s+/);
    out.set(key!, [...(out.get(key!) ?? []), rest.join(' ')]);
  }
  return out;
}
const last = (o: Map<string, string[]>, k: string) => o.get(k)?.at(-1);

describe('deploy/mosquitto/mosquitto.conf', () => {
  const o = mosquittoOptions(`${deploy}mosquitto/mosquitto.conf`);

  it('never drops QoS 1 messages queued for a lagging subscriber', () => {
    expect(o.has('max_queued_messages')).toBe(true);
    const queued = Number(last(o, 'max_queued_messages'));
    expect(queued === 0 || queued >= 100_000).toBe(true);
    const bytes = Number(last(o, 'max_queued_bytes') ?? '0');
    expect(bytes === 0 || bytes >= 1024 ** 3).toBe(true);
    expect(o.has('max_inflight_messages')).toBe(true);
  });

  it('keeps sessions and queued messages across a restart, and expires abandoned sessions', () => {
    expect(last(o, 'persistence')).toBe('true');
    expect(last(o, 'persistence_location')).toBeTruthy();
    expect(last(o, 'persistent_client_expiration')).toMatch(/^\d+[hdwmy]$/);
  });

  it('turns anonymous access off and leaves identity to dynamic security and the generated ACL file', () => {
    expect(o.get('allow_anonymous')).toEqual(['false']);
    expect(last(o, 'plugin')).toMatch(/mosquitto_dynamic_security\.so$/);
    expect(last(o, 'plugin_opt_config_file')).toBeTruthy();
    expect(last(o, 'acl_file')).toBeTruthy();
    expect(o.get('password_file')).toBeUndefined();
  });

  it('listens with TLS on 8883 and in plain text on localhost only', () => {
    expect(o.get('listener')).toEqual(['1883 127.0.0.1', '8883']);
    for (const k of ['cafile', 'certfile', 'keyfile']) expect(last(o, k), k).toMatch(/^\/mosquitto\/certs\//);
  });

  it('ships the ACL file lib/mqtt-policy.ts generates (npx tsx scripts/broker-config.ts)', () => {
    expect(readFileSync(`${deploy}mosquitto/acl`, 'utf8')).toBe(mosquittoAclFile());
  });
});

describe('deploy/emqx/emqx.conf', () => {
  const text = readFileSync(`${deploy}emqx/emqx.conf`, 'utf8');
  const ingestPort = loadConfig({}).INGEST_PORT;

  it('does not limit the session queue and redispatches unacknowledged shared-subscription messages', () => {
    expect(text).toMatch(/^mqtt\.max_mqueue_len = 0/m);
    expect(text).toMatch(/^broker\.shared_dispatch_ack_enabled = true/m);
  });

  it('fails closed: denies what no source matches, disconnects on deny, and has no allow-all file source', () => {
    expect(text).toMatch(/^\s*no_match = deny$/m);
    expect(text).toMatch(/^\s*deny_action = disconnect$/m);
    expect(text).not.toMatch(/type = file/);
    expect(text.match(/^\s*type = http$/gm)).toHaveLength(1);
    expect(text.match(/^\s*backend = http$/gm)).toHaveLength(1);
  });

  it("asks ingest's authentication and authorization endpoints, with the bearer token header", () => {
    expect(text).toContain(`url = "http://rulr-ingest:${ingestPort}${AUTHN_PATH}"`);
    expect(text).toContain(`url = "http://rulr-ingest:${ingestPort}${AUTHZ_PATH}"`);
    expect(text.match(/"authorization" = "Bearer /g)).toHaveLength(2);
  });

  it('listens with TLS on 8883 and in plain text on localhost only', () => {
    expect(text).toMatch(/^listeners\.tcp\.default\.bind = "127\.0\.0\.1:1883"$/m);
    expect(text).toMatch(/bind = "0\.0\.0\.0:8883"/);
    expect(text).toMatch(/verify = verify_peer/);
  });
});

describe('scripts/dev-certs.sh', () => {
  it("makes a CA, a broker certificate for the brokers' names, and device certificates whose fingerprint it prints", () => {
    const dir = mkdtempSync(join(tmpdir(), 'rulr-certs-'));
    const script = fileURLToPath(new URL('../scripts/dev-certs.sh', import.meta.url));
    try {
      execFileSync('bash', [script, dir], { env: { ...process.env, RULR_CERT_HOSTS: 'broker.example.org,10.0.0.5' }, stdio: 'ignore' });
      const ca = new X509Certificate(readFileSync(join(dir, 'ca.crt')));
      const server = new X509Certificate(readFileSync(join(dir, 'server.crt')));
      expect(ca.ca).toBe(true);
      expect(server.checkIssued(ca) && server.verify(ca.publicKey)).toBe(true);
      for (const name of [
        'DNS:localhost',
        'IP Address:127.0.0.1',
        'DNS:mosquitto',
        'DNS:emqx',
        'DNS:broker.example.org',
        'IP Address:10.0.0.5',
      ]) {
        expect(server.subjectAltName).toContain(name);
      }
      const id = '0b0c4a6e-2d0a-4d6f-9a57-1f0b7c3a9e10';
      const printed = execFileSync('bash', [script, 'device', id, dir], { encoding: 'utf8' }).trim().split('\n').at(-1);
      const device = new X509Certificate(readFileSync(join(dir, `device-${id}.crt`)));
      expect(device.checkIssued(ca) && device.verify(ca.publicKey)).toBe(true);
      expect(printed).toBe(normalizeFingerprint(device.toString()));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
