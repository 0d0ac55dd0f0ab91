import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const deploy = fileURLToPath(new URL('../deploy/', import.meta.url));

/** mosquitto.conf as option → value (the last occurrence wins, as in Mosquitto). */
function mosquittoOptions(file: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const raw of readFileSync(file, 'utf8').split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const [key, ...rest] = line.split(/\s+/);
    out.set(key!, rest.join(' '));
  }
  return out;
}

describe('deploy/mosquitto/mosquitto.conf', () => {
  const o = mosquittoOptions(`${deploy}mosquitto/mosquitto.conf`);

  it('never drops QoS 1 messages queued for a lagging subscriber', () => {
    expect(o.has('max_queued_messages')).toBe(true);
    const queued = Number(o.get('max_queued_messages'));
    expect(queued === 0 || queued >= 100_000).toBe(true);
    const bytes = Number(o.get('max_queued_bytes') ?? '0');
    expect(bytes === 0 || bytes >= 1024 ** 3).toBe(true);
    expect(o.has('max_inflight_messages')).toBe(true);
  });

  it('keeps sessions and queued messages across a restart, and expires abandoned sessions', () => {
    expect(o.get('persistence')).toBe('true');
    expect(o.get('persistence_location')).toBeTruthy();
    expect(o.get('persistent_client_expiration')).toMatch(/^\d+[hdwmy]$/);
  });

  it('listens on the MQTT port docker-compose.yml publishes', () => {
    expect(o.get('listener')).toMatch(/^1883\b/);
  });
});

describe('deploy/emqx/emqx.conf', () => {
  const text = readFileSync(`${deploy}emqx/emqx.conf`, 'utf8');

  it('does not limit the session queue and redispatches unacknowledged shared-subscription messages', () => {
    expect(text).toMatch(/^mqtt\.max_mqueue_len = 0/m);
    expect(text).toMatch(/^broker\.shared_dispatch_ack_enabled = true/m);
  });

  it('points at no RULR endpoint (RULR answers no broker authentication yet)', () => {
    const settings = text.split('\n').filter((l) => l.trim() && !l.trim().startsWith('#'));
    expect(settings.length).toBeGreaterThan(5);
    for (const l of settings) expect(l).not.toMatch(/rulr-|\/mqtt\/(auth|acl)/);
  });
});
