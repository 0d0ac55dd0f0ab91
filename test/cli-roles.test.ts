import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROLE_NAMES, startRoles } from '../cli/roles.js';
import { freePort } from '../ingest/testing/broker.js';
import { loadConfig } from '../lib/config.js';
import { IDENTITY_HEADER, signIdentity } from '../lib/identity.js';
import { createLogger } from '../lib/logger.js';
import type { RoleHandle } from '../lib/role.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { REDIS_URL } from './support/env.js';

// `rulr start alarms rules`: each subgraph as its own HTTP role, as deploy/ runs them.
let t: TestDatabase;
let running: RoleHandle;
let ports: { alarms: number; rules: number };
let orgId: string;
const cfg = () =>
  loadConfig({ DATABASE_URL: t.url, REDIS_URL, REDIS_PREFIX: `rulr-test-${randomBytes(4).toString('hex')}:`, LOG_LEVEL: 'silent' });

beforeAll(async () => {
  t = await createTestDatabase();
  orgId = (
    await t.db
      .insertInto('organizations')
      .values({ slug: `o-${randomBytes(4).toString('hex')}`, name: 'O' })
      .returning('id')
      .executeTakeFirstOrThrow()
  ).id;
  ports = { alarms: await freePort(), rules: await freePort() };
  const c = cfg();
  running = await startRoles({ ...c, ALARMS_PORT: ports.alarms, RULES_PORT: ports.rules }, createLogger('silent'), ['alarms', 'rules']);
});

afterAll(async () => {
  await running?.close();
  await t?.drop();
});

/** Posts `query`; `sign` signs the header for exactly this body. */
const post = (port: number, query: string, sign?: (body: string) => string) => {
  const body = JSON.stringify({ query });
  return fetch(`http://127.0.0.1:${port}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(sign ? { [IDENTITY_HEADER]: sign(body) } : {}) },
    body,
  });
};

describe('rulr start alarms rules', () => {
  it('knows the alarms and rules roles', () => {
    expect(ROLE_NAMES).toEqual(expect.arrayContaining(['alarms', 'rules']));
  });

  it('serves health, readiness and Prometheus metrics on each role port', async () => {
    for (const port of [ports.alarms, ports.rules]) {
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
      expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
      expect(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()).toContain('rulr_');
    }
  });

  it('refuses a query sent straight to a subgraph without the gateway identity, and answers a signed one', async () => {
    const unsigned = await post(ports.alarms, '{ alarmCounts { active } }');
    expect(unsigned.status).toBe(401);
    const body = (await unsigned.json()) as { errors: { extensions: { code: string } }[] };
    expect(body.errors[0]?.extensions.code).toBe('UNAUTHENTICATED');
    const forged = await post(ports.rules, '{ rules { totalCount } }', (body) =>
      signIdentity({ kind: 'user', subject: randomUUID(), orgId, role: 'admin', scopes: [] }, 'not-the-secret', { body }),
    );
    expect(forged.status).toBe(401);
    const secret = cfg().RULR_SECRET;
    const identity = (body: string) =>
      signIdentity({ kind: 'user', subject: randomUUID(), orgId, role: 'viewer', scopes: [] }, secret, { body });
    expect(await (await post(ports.alarms, '{ alarmCounts { active } }', identity)).json()).toEqual({
      data: { alarmCounts: { active: 0 } },
    });
    expect(await (await post(ports.rules, '{ rules { totalCount } }', identity)).json()).toEqual({ data: { rules: { totalCount: 0 } } });
  });
});
