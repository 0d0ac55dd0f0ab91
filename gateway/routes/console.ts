import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../../lib/logger.js';
import { counter } from '../../lib/metrics.js';

const served = counter('rulr_console_requests_total', 'Console (static web app) requests by outcome', ['outcome']);

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.map': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
};

/** Paths the console never answers: the API and the service endpoints keep their own 404s and methods. */
const NOT_OURS = /^\/(graphql|healthz|readyz|metrics)(\/|$)/;

/** A hashed asset name (Vite's `name-<hash>.ext` under `assets/`): safe to cache for a year. */
const HASHED = /^\/assets\/[^/]+-[A-Za-z0-9_-]{8,}\.[a-z0-9]+$/;

/**
 * The console's built files: `dist/console` beside the sources (run with tsx) or beside the compiled
 * gateway (`dist/gateway/routes` → `dist/console`); null when neither holds an `index.html`.
 */
export function defaultConsoleDir(): string | null {
  const here = fileURLToPath(new URL('.', import.meta.url));
  for (const d of [join(here, '..', '..', 'dist', 'console'), join(here, '..', '..', 'console')]) {
    if (existsSync(join(d, 'index.html')) && existsSync(join(d, 'assets'))) return d;
  }
  return null;
}

/**
 * The CSP source of a tile URL template (`https://{s}.tile.example.org/{z}/{x}/{y}.png` →
 * `https://*.tile.example.org`), or null when there is none or it is not http(s).
 */
export function tileOrigin(tileUrl: string | undefined): string | null {
  const m = tileUrl ? /^(https?):\/\/([^/?#]+)/.exec(tileUrl) : null;
  if (!m) return null;
  const host = (m[2] as string).replace(/^\{s\}\./, '*.');
  if (!/^(\*\.)?[A-Za-z0-9.-]+(:\d{1,5})?$/.test(host)) return null;
  return `${m[1]}://${host}`;
}

/**
 * The content-security policy of every console answer: only this origin's scripts and styles (no
 * inline ones), API calls and graphql-ws to this origin, images from this origin and the tile server.
 */
export function consoleCsp(tileUrl?: string): string {
  const tiles = tileOrigin(tileUrl);
  return [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    `img-src 'self' data:${tiles ? ` ${tiles}` : ''}`,
    "connect-src 'self' ws: wss:",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join('; ');
}

export interface ConsoleRouteOptions {
  /** The built console (`index.html` + `assets/`); null: the route answers 404 with a hint. */
  dir: string | null;
  /** Tile URL template given to the map (`https://tile.example.org/{z}/{x}/{y}.png`); unset: no tiles. */
  tileUrl?: string | undefined;
  logger: Logger;
}

const escapeAttr = (s: string) => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');

/**
 * GET/HEAD of the operations console: hashed assets (`Cache-Control: immutable`), and `index.html`
 * (`no-cache`) for `/` and every other path without a file (the single-page fallback). `/graphql`,
 * `/healthz`, `/readyz` and `/metrics` are never answered here. The tile URL reaches the app in a
 * `<meta name="rulr-tile-url">` tag (no inline script).
 */
export function consoleRoute(o: ConsoleRouteOptions): (req: IncomingMessage, res: ServerResponse) => boolean {
  const csp = consoleCsp(o.tileUrl);
  const common = {
    'content-security-policy': csp,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'x-frame-options': 'DENY',
  };
  let index: Buffer | null = null;
  if (o.dir) {
    const html = readFileSync(join(o.dir, 'index.html'), 'utf8').replace(
      '<meta name="rulr-tile-url" content="">',
      `<meta name="rulr-tile-url" content="${escapeAttr(o.tileUrl ?? '')}">`,
    );
    index = Buffer.from(html);
  } else {
    o.logger.warn('console not built (npm run build): / answers 404');
  }
  const root = o.dir ? normalize(o.dir + sep) : '';

  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (NOT_OURS.test(path)) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    if (!index) {
      served.inc({ outcome: 'not_built' });
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8', ...common });
      res.end('The console is not built: run `npm run build`.\n');
      return true;
    }
    let decoded: string;
    try {
      decoded = decodeURIComponent(path);
    } catch {
      decoded = '';
    }
    const file = decoded && decoded !== '/' && !decoded.includes('\0') ? normalize(join(root, decoded)) : null;
    const inside = file?.startsWith(root) && file !== join(root, 'index.html');
    const stat = inside && file ? statSync(file, { throwIfNoEntry: false }) : undefined;
    if (file && stat?.isFile()) {
      served.inc({ outcome: 'asset' });
      res.writeHead(200, {
        'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
        'content-length': String(stat.size),
        'cache-control': HASHED.test(decoded) ? 'public, max-age=31536000, immutable' : 'no-cache',
        ...common,
      });
      if (req.method === 'HEAD') res.end();
      else createReadStream(file).pipe(res);
      return true;
    }
    // a missing hashed asset is a 404 (an old page asking for a file of a previous build), not the page
    if (decoded.startsWith('/assets/')) {
      served.inc({ outcome: 'missing' });
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-cache', ...common });
      res.end('not found\n');
      return true;
    }
    served.inc({ outcome: 'index' });
    res.writeHead(200, {
      'content-type': TYPES['.html'] as string,
      'content-length': String(index.length),
      'cache-control': 'no-cache',
      ...common,
    });
    res.end(req.method === 'HEAD' ? undefined : index);
    return true;
  };
}
