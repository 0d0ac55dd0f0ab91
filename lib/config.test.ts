import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { acceptedSecrets, ConfigError, configMarkdown, configSpec, loadConfig, redactedConfig, subgraphUrls } from './config.js';

const root = fileURLToPath(new URL('..', import.meta.url));

function configError(env: NodeJS.ProcessEnv): ConfigError {
  try {
    loadConfig(env);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('loadConfig accepted the environment');
}

describe('loadConfig', () => {
  it('loads the documented defaults from an empty environment', () => {
    const cfg = loadConfig({});
    expect(cfg.NODE_ENV).toBe('development');
    expect(cfg.GATEWAY_PORT).toBe(3000);
    expect(cfg.DEVICES_PORT).toBe(4001);
    expect(cfg.DATABASE_URL).toBe('postgres://postgres@127.0.0.1:5432/rulr');
    expect(cfg.REDIS_URL).toBe('redis://127.0.0.1:6379');
    expect(cfg.MQTT_URL).toBe('mqtt://127.0.0.1:1883');
    expect(cfg.GATEWAY_IN_PROCESS).toBe(true);
    expect(cfg.DATABASE_READ_URL).toBeUndefined();
  });

  it('treats an empty variable as unset', () => {
    expect(loadConfig({ GATEWAY_PORT: '' }).GATEWAY_PORT).toBe(3000);
  });

  it('coerces numbers and booleans from strings', () => {
    const cfg = loadConfig({ GATEWAY_PORT: '8080', GATEWAY_IN_PROCESS: 'no', GATEWAY_DEV_INTROSPECT: '1' });
    expect(cfg.GATEWAY_PORT).toBe(8080);
    expect(cfg.GATEWAY_IN_PROCESS).toBe(false);
    expect(cfg.GATEWAY_DEV_INTROSPECT).toBe(true);
  });

  it('rejects a non-numeric port with a ConfigError naming the variable', () => {
    const e = configError({ GATEWAY_PORT: 'abc' });
    expect(e.issues).toHaveLength(1);
    expect(e.issues[0]).toMatch(/^GATEWAY_PORT=/);
    expect(e.message).toContain('GATEWAY_PORT');
  });

  it('rejects a malformed DATABASE_URL with a ConfigError naming the variable', () => {
    const e = configError({ DATABASE_URL: 'nope' });
    expect(e.issues[0]).toMatch(/^DATABASE_URL=/);
  });

  it('reports every bad variable at once', () => {
    const e = configError({ GATEWAY_PORT: '70000', LOG_LEVEL: 'loud', RULR_SECRET: 'short' });
    expect(e.issues.map((i) => i.split('=')[0]).sort()).toEqual(['GATEWAY_PORT', 'LOG_LEVEL', 'RULR_SECRET']);
  });

  it('refuses to start in production with the development secret', () => {
    const e = configError({ NODE_ENV: 'production' });
    expect(e.message).toMatch(/RULR_SECRET/);
    expect(e.message).toMatch(/production/);
  });

  it('starts in production with a secret of its own', () => {
    const cfg = loadConfig({ NODE_ENV: 'production', RULR_SECRET: 'x'.repeat(48) });
    expect(cfg.NODE_ENV).toBe('production');
  });

  it('prints no secret: passwords, tokens, API keys and RULR_SECRET(_PREVIOUS) only as set, URL passwords masked', () => {
    const cfg = loadConfig({
      RULR_SECRET: 'n'.repeat(40),
      RULR_SECRET_PREVIOUS: 'o'.repeat(40),
      MQTT_INGEST_PASSWORD: 'ingest-password-0123',
      DYNSEC_ADMIN_PASSWORD: 'dynsec-password-0123',
      EMQX_API_SECRET: 'emqx-api-secret-0123',
      DATABASE_URL: 'postgres://rulr:db-password-0123@db.internal:5432/rulr',
      SMTP_URL: 'smtps://mailer:smtp-password-0123@smtp.example.test:465',
    });
    const printed = JSON.stringify(redactedConfig(cfg));
    for (const secret of ['n'.repeat(40), 'o'.repeat(40), 'ingest-password-0123', 'dynsec-password-0123', 'emqx-api-secret-0123']) {
      expect(printed).not.toContain(secret);
    }
    expect(printed).not.toContain('db-password-0123');
    expect(printed).not.toContain('smtp-password-0123');
    const r = redactedConfig(cfg);
    expect(r.RULR_SECRET).toBe('(set)');
    expect(r.MQTT_INGEST_PASSWORD).toBe('(set)');
    expect(r.DATABASE_URL).toBe('postgres://rulr:***@db.internal:5432/rulr');
    // what is not a secret is printed as it is, and an unset secret as unset
    expect(r.DEVICE_AUTH_CACHE_TTL_S).toBe(cfg.DEVICE_AUTH_CACHE_TTL_S);
    expect(r.RESET_TOKEN_TTL_S).toBe(cfg.RESET_TOKEN_TTL_S);
    expect(r.MQTT_WORKERS_PASSWORD).toBeUndefined();
  });

  it('takes the secrets RULR_SECRET replaces while it is rotated, and refuses short ones, itself, or the development one in production', () => {
    const cfg = loadConfig({ RULR_SECRET: 'n'.repeat(40), RULR_SECRET_PREVIOUS: ` ${'o'.repeat(40)}, ${'p'.repeat(32)} ,` });
    expect(acceptedSecrets(cfg)).toEqual(['n'.repeat(40), 'o'.repeat(40), 'p'.repeat(32)]);
    expect(loadConfig({}).RULR_SECRET_PREVIOUS).toEqual([]);
    expect(configError({ RULR_SECRET_PREVIOUS: 'short' }).issues[0]).toMatch(/^RULR_SECRET_PREVIOUS=.*at least 32/);
    expect(configError({ RULR_SECRET: 'n'.repeat(40), RULR_SECRET_PREVIOUS: 'n'.repeat(40) }).message).toMatch(
      /RULR_SECRET_PREVIOUS: must not contain RULR_SECRET/,
    );
    const dev = loadConfig({}).RULR_SECRET;
    expect(configError({ NODE_ENV: 'production', RULR_SECRET: 'x'.repeat(48), RULR_SECRET_PREVIOUS: dev }).message).toMatch(
      /RULR_SECRET_PREVIOUS: the development default/,
    );
  });

  it('builds subgraph URLs from SUBGRAPH_HOST and the ports unless a URL is given', () => {
    const urls = subgraphUrls(loadConfig({ SUBGRAPH_HOST: 'devices.internal', DEVICES_PORT: '5001', METRICS_URL: 'http://m:9/graphql' }));
    expect(urls.devices).toBe('http://devices.internal:5001/graphql');
    expect(urls.metrics).toBe('http://m:9/graphql');
  });
});

describe('configMarkdown', () => {
  it('has one row per declared variable', () => {
    const rows = configMarkdown().split('\n').slice(2);
    expect(rows).toHaveLength(Object.keys(configSpec).length);
    for (const name of Object.keys(configSpec)) expect(rows.some((r) => r.startsWith(`| \`${name}\` |`))).toBe(true);
  });
});

// cli/main.ts loads every role's modules through tsx: seconds on a busy 2-core CI machine.
describe('rulr config', () => {
  it('exits non-zero and names the variable when the environment is invalid', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'cli/main.ts', 'config'], {
      cwd: root,
      env: { ...process.env, GATEWAY_PORT: 'abc' },
      encoding: 'utf8',
      timeout: 80_000,
    });
    expect(r.status).not.toBe(0);
    expect(r.status).not.toBeNull();
    expect(r.stderr).toContain('GATEWAY_PORT');
  }, 90_000);

  it('prints the effective configuration without the secret when the environment is valid', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'cli/main.ts', 'config'], {
      cwd: root,
      env: { ...process.env, GATEWAY_PORT: '3999', RULR_SECRET: 's'.repeat(40) },
      encoding: 'utf8',
      timeout: 80_000,
    });
    expect(r.status).toBe(0);
    const printed = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(printed.GATEWAY_PORT).toBe(3999);
    expect(r.stdout).not.toContain('s'.repeat(40));
  }, 90_000);
});
