import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { configSpec, loadConfig } from '../lib/config.js';
import { portVar, SUBGRAPH_NAMES, urlVar } from '../lib/subgraphs.js';

const root = fileURLToPath(new URL('..', import.meta.url));

interface Service {
  image?: string;
  build?: unknown;
  command?: string[];
  restart?: string;
  environment?: Record<string, string>;
  ports?: string[];
  volumes?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
}

const compose = parse(readFileSync(`${root}/docker-compose.yml`, 'utf8'), { merge: true }) as { services: Record<string, Service> };
const services = compose.services;
const defaults = loadConfig({});

/** The config variable holding each role's port (the subgraphs' from lib/subgraphs.ts). */
const ROLE_PORT: Record<string, keyof typeof configSpec> = {
  gateway: 'GATEWAY_PORT',
  ...Object.fromEntries(SUBGRAPH_NAMES.map((n) => [n, portVar(n)])),
  ingest: 'INGEST_PORT',
  workers: 'WORKERS_PORT',
};
const rulrServices = Object.entries(services).filter(([, s]) => s.build !== undefined);
const roleServices = rulrServices.filter(([, s]) => s.command?.[0] === 'start');
const oneShot = (s: Service) => s.restart === 'no';

describe('docker-compose.yml', () => {
  it('gives every service an image or a build', () => {
    for (const [name, s] of Object.entries(services)) expect(s.image ?? s.build, name).toBeDefined();
  });

  it('runs the infrastructure and every platform role from the one image', () => {
    for (const name of ['postgres', 'redis', 'mosquitto', 'migrate', 'gateway', ...SUBGRAPH_NAMES, 'ingest', 'workers']) {
      expect(services[name], name).toBeDefined();
    }
    for (const [name, s] of roleServices) {
      expect(s.command, name).toEqual(['start', name]);
      expect(Object.keys(ROLE_PORT)).toContain(name);
    }
    expect(services.migrate?.command).toEqual(['migrate']);
  });

  it('health-checks every long-running service', () => {
    for (const [name, s] of Object.entries(services)) {
      if (oneShot(s)) continue;
      expect(s.healthcheck?.test?.length, name).toBeGreaterThan(0);
    }
    expect(services.postgres?.healthcheck?.test).toContain('pg_isready');
    expect(services.redis?.healthcheck?.test.join(' ')).toContain('redis-cli ping');
  });

  it('checks each role on /healthz at the port its config declares by default', () => {
    for (const [name, s] of roleServices) {
      const port = defaults[ROLE_PORT[name]!];
      expect(s.healthcheck?.test.join(' '), name).toContain(`http://127.0.0.1:${port}/healthz`);
      for (const p of s.ports ?? []) expect(p.split(':').at(-1), name).toBe(String(port));
    }
  });

  it('waits only for services that exist, healthy or (one-shot) completed', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const [dep, { condition }] of Object.entries(s.depends_on ?? {})) {
        const target = services[dep];
        expect(target, `${name} depends on ${dep}`).toBeDefined();
        if (oneShot(target!)) expect(condition, `${name} → ${dep}`).toBe('service_completed_successfully');
        else {
          expect(condition, `${name} → ${dep}`).toBe('service_healthy');
          expect(target!.healthcheck, `${dep} has a healthcheck`).toBeDefined();
        }
      }
    }
    for (const [name, s] of roleServices) {
      expect(s.depends_on?.migrate?.condition, name).toBe('service_completed_successfully');
      expect(s.depends_on?.postgres?.condition, name).toBe('service_healthy');
    }
  });

  it('sets only environment variables declared in lib/config.ts on the platform containers', () => {
    const declared = Object.keys(configSpec);
    for (const [name, s] of rulrServices) {
      for (const key of Object.keys(s.environment ?? {})) expect(declared, `${name}: ${key}`).toContain(key);
    }
  });

  it('points the gateway at subgraph services that exist on their default ports', () => {
    const env = services.gateway?.environment ?? {};
    for (const [key, value] of Object.entries(env).filter(([k]) => k.endsWith('_URL') && ROLE_PORT[k.slice(0, -4).toLowerCase()])) {
      const role = key.slice(0, -4).toLowerCase();
      const url = new URL(value);
      expect(services[url.hostname], key).toBeDefined();
      expect(url.port, key).toBe(String(defaults[ROLE_PORT[role]!]));
    }
  });

  it('runs every subgraph of lib/subgraphs.ts and points the gateway at it with its URL variable', () => {
    const env = services.gateway?.environment ?? {};
    for (const name of SUBGRAPH_NAMES) {
      expect(services[name]?.command, `a "${name}" service running \`start ${name}\``).toEqual(['start', name]);
      const url = env[urlVar(name)];
      expect(url, `${urlVar(name)} in the gateway's environment`).toBeDefined();
      expect(new URL(url!).hostname, urlVar(name)).toBe(name);
    }
  });

  it('points the platform at the compose services for PostgreSQL, Redis and MQTT', () => {
    const env = services.gateway?.environment ?? {};
    for (const key of ['DATABASE_URL', 'REDIS_URL', 'MQTT_URL']) {
      const host = new URL(env[key]!.replace(/\$\{[^}]+\}/g, 'x')).hostname;
      expect(services[host], key).toBeDefined();
    }
  });

  it('mounts broker configuration files that exist (certificates: made by scripts/dev-certs.sh)', () => {
    for (const v of services.mosquitto?.volumes ?? []) {
      const src = v.split(':')[0]!;
      if (src.startsWith('./deploy/certs')) expect(existsSync(`${root}/scripts/dev-certs.sh`)).toBe(true);
      else if (src.startsWith('./')) expect(existsSync(`${root}/${src.slice(2)}`), src).toBe(true);
    }
  });

  it('publishes only the TLS port of the broker and gives the platform its service accounts', () => {
    expect(services.mosquitto?.ports).toEqual(['8883:8883']);
    const env = services.ingest?.environment ?? {};
    expect(new URL(env.MQTT_URL ?? '').protocol).toBe('mqtts:');
    for (const k of ['MQTT_CA_FILE', 'MQTT_INGEST_PASSWORD', 'MQTT_WORKERS_PASSWORD', 'DYNSEC_ADMIN_PASSWORD'])
      expect(env[k], k).toBeTruthy();
    expect(env.DYNSEC_ENABLED).toBe('true');
  });
  it('is scraped by deploy/prometheus/prometheus.yml at every role service and port', () => {
    const prom = parse(readFileSync(`${root}/deploy/prometheus/prometheus.yml`, 'utf8')) as {
      scrape_configs: { static_configs?: { targets: string[] }[] }[];
    };
    const targets = prom.scrape_configs.flatMap((c) => (c.static_configs ?? []).flatMap((s) => s.targets));
    for (const [name] of roleServices) expect(targets).toContain(`${name}:${defaults[ROLE_PORT[name]!]}`);
    for (const name of SUBGRAPH_NAMES) expect(targets, `a prometheus target for ${name}`).toContain(`${name}:${defaults[portVar(name)]}`);
  });
});
