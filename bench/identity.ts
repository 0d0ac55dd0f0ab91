// Micro-benchmark of what issue 13 added to every gateway request: signing and verifying the
// request-bound identity header (per request now; the previous header was reused for a minute per
// identity and its verification cached per header), and the session check of a token that belongs
// to a sign-in session (a memory lookup while the revocation channel is heard).
// `npm run bench:identity` (BENCH_ITER sets the iterations, default 200,000) writes its section of
// bench/RESULTS.md.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { LRUCache } from 'lru-cache';
import { IdentitySigner } from '../gateway/data-sources.js';
import { SessionGuard } from '../gateway/sessions.js';
import { type Identity, verifyRequest } from '../lib/identity.js';
import { createLogger } from '../lib/logger.js';
import { createRedis } from '../lib/redis.js';
import { SessionStore } from '../subgraphs/devices/repositories/index.js';

const ITER = Number(process.env.BENCH_ITER ?? 200_000);
const SECRET = 'bench-identity-secret-0123456789-0123456789';
const RESULTS = fileURLToPath(new URL('./RESULTS.md', import.meta.url));
const URL_ = 'http://127.0.0.1:4001/graphql';
const identity: Identity = {
  kind: 'user',
  subject: '6f1c2a9e-1b7d-4c55-9a57-2f1f0d3c9b11',
  orgId: '0b7e4a52-7d8e-4f0e-8a1f-3c2b5d6e7f80',
  role: 'viewer',
  scopes: [],
  sessionId: 'AbCdEfGhIjKlMnOpQrStUv',
};

/** ns per call of `fn`, best of 5 runs of ITER calls (after a warm-up). */
function measure(fn: (i: number) => unknown): number {
  for (let i = 0; i < Math.min(ITER, 20_000); i++) fn(i);
  let best = Number.POSITIVE_INFINITY;
  for (let r = 0; r < 5; r++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < ITER; i++) fn(i);
    best = Math.min(best, Number(process.hrtime.bigint() - t) / ITER);
  }
  return best;
}

/** The header as it was before issue 13 (lib/identity.ts at 2caa344), for the comparison. */
function previousScheme() {
  const b64 = (s: string) => Buffer.from(s).toString('base64url');
  const sign = (id: Identity, now: number) => {
    const body = b64(JSON.stringify({ ...id, iat: now }));
    return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
  };
  const signed = new LRUCache<string, { header: string; at: number }>({ max: 10_000 });
  const verified = new LRUCache<string, Identity & { iat: number }>({ max: 10_000 });
  const signer = (id: Identity) => {
    const key = `${id.kind}\u0000${id.subject}\u0000${id.orgId}\u0000${id.role}\u0000${id.scopes.join(',')}`;
    const now = Date.now();
    const hit = signed.get(key);
    if (hit && now - hit.at < 60_000) return hit.header;
    const header = sign(id, now);
    signed.set(key, { header, at: now });
    return header;
  };
  const verify = (header: string) => {
    let id = verified.get(header);
    if (!id) {
      const [body = '', mac = ''] = header.split('.');
      const expected = createHmac('sha256', SECRET).update(body).digest();
      const given = Buffer.from(mac, 'base64url');
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new Error('bad');
      id = JSON.parse(Buffer.from(body, 'base64url').toString()) as Identity & { iat: number };
      verified.set(header, id);
    }
    if (Date.now() - id.iat > 300_000) throw new Error('expired');
    return id;
  };
  return { signer, verify };
}

async function main(): Promise<void> {
  const started = new Date();
  const load = os.loadavg()[0] ?? 0;
  const bodies = [
    [
      'page query (193 B)',
      JSON.stringify({
        query:
          'query Page { devices(first: 50) { edges { cursor node { id serial name createdAt site { id name } profile { id name } } } pageInfo { hasNextPage endCursor } } }',
      }),
    ],
    ['a 2 KiB body', JSON.stringify({ query: `{ devices { totalCount } }`, variables: { pad: 'x'.repeat(2000) } })],
    ['a 16 KiB body', JSON.stringify({ query: `{ devices { totalCount } }`, variables: { pad: 'x'.repeat(16_000) } })],
  ] as const;
  const rows: string[] = [];
  const old = previousScheme();
  const oldHeader = old.signer(identity);
  const oldSign = measure(() => old.signer(identity));
  const oldVerify = measure(() => old.verify(oldHeader));
  rows.push(
    `| before (reused header, cached verification) | any | ${oldSign.toFixed(0)} | ${oldVerify.toFixed(0)} | ${(oldSign + oldVerify).toFixed(0)} |`,
  );
  const signer = new IdentitySigner(SECRET);
  for (const [label, body] of bodies) {
    const raw = Buffer.from(body);
    const headers = Array.from({ length: 1024 }, () => signer.sign(identity, URL_, body));
    const sign = measure(() => signer.sign(identity, URL_, body));
    const verify = measure((i) =>
      verifyRequest(headers[i & 1023], { method: 'POST', path: '/graphql', body: raw }, SECRET, { maxAgeMs: 3_600_000 }),
    );
    rows.push(
      `| now (one HMAC-SHA256 over the request, each end) | ${label} (${raw.length} B) | ${sign.toFixed(0)} | ${verify.toFixed(0)} | ${(sign + verify).toFixed(0)} |`,
    );
  }

  // The session check: a token of a live session, cached while the revocation channel is heard.
  const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const prefix = `bench:identity:${process.pid}:`;
  const redis = createRedis(redisUrl);
  const guard = new SessionGuard(redis, createRedis(redisUrl), prefix, createLogger('silent'));
  await new Promise((r) => setTimeout(r, 200));
  guard.start();
  for (let i = 0; i < 100 && !guard.listening; i++) await new Promise((r) => setTimeout(r, 20));
  const store = new SessionStore(redis, prefix, { idleMs: 600_000, maxAgeMs: 600_000 });
  const s = (await store.create({ userId: identity.subject, orgId: identity.orgId, role: 'viewer', platform: false })).session;
  await guard.check(s.id, identity.subject);
  const live = measure(() => guard.isKnownLive(s.id, identity.subject));
  const lookups = 2_000;
  let t = process.hrtime.bigint();
  const cold = new SessionGuard(redis, createRedis(redisUrl), prefix, createLogger('silent'));
  for (let i = 0; i < lookups; i++) await cold.check(s.id, identity.subject);
  const lookupUs = Number(process.hrtime.bigint() - t) / lookups / 1000;
  t = process.hrtime.bigint();
  await store.revoke([s]);
  for (let i = 0; i < 200 && guard.isKnownLive(s.id, identity.subject); i++) await new Promise((r) => setImmediate(r));
  const noticeUs = Number(process.hrtime.bigint() - t) / 1000;
  await guard.close();
  await cold.close();
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length) await redis.del(...keys);
  await redis.quit();

  const lines = [
    '## Identity header and session check (`npm run bench:identity`)',
    '',
    `Run ${started.toISOString()} · ${os.availableParallelism()} cores (${os.cpus()[0]?.model ?? 'unknown cpu'}) · Node ${process.version} · ` +
      `${ITER.toLocaleString('en')} calls per measurement, best of 5 · 1-minute load average ${load.toFixed(1)} before the run.`,
    '',
    'What issue 13 added to each gateway → subgraph request over HTTP (in-process subgraphs get no header: nothing is signed or verified):',
    '',
    '| header | body | sign ns | verify ns | ns per request |',
    '| --- | --- | ---: | ---: | ---: |',
    ...rows,
    '',
    'A mutation also claims its nonce in Redis (`SET NX`, one round trip, at the subgraph). The session check of a token that',
    `belongs to a sign-in session: **${live.toFixed(0)} ns** when known live (memory, while the revocation channel is heard);`,
    `a Redis lookup (first request of a session on a replica, or any request while the channel is lost): **${lookupUs.toFixed(0)} µs** round trip;`,
    `a revocation reached the replica's memory **${noticeUs.toFixed(0)} µs** after \`revoke\` was called (delete, publish, notice).`,
  ];
  const start = '<!-- bench:identity:start -->';
  const end = '<!-- bench:identity:end -->';
  const block = `${start}\n${lines.join('\n')}\n${end}`;
  const current = existsSync(RESULTS) ? readFileSync(RESULTS, 'utf8') : '# Benchmark results\n';
  const i = current.indexOf(start);
  const j = current.indexOf(end);
  writeFileSync(
    RESULTS,
    i >= 0 && j > i ? current.slice(0, i) + block + current.slice(j + end.length) : `${current.trimEnd()}\n\n${block}\n`,
  );
  console.log(lines.join('\n'));
  process.exit(0);
}

void main();
