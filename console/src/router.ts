import { signal } from '@preact/signals';

/**
 * Hash routes (`#/map`, `#/devices/<id>`, `#/accept-invitation?token=…`): the fragment never reaches
 * a server, so mailed tokens stay out of logs (lib/contracts/console-links.ts) and every route is
 * the same `index.html`.
 */
export interface Route {
  path: string;
  params: URLSearchParams;
}

export function parseHash(hash: string): Route {
  const h = hash.replace(/^#/, '') || '/';
  const q = h.indexOf('?');
  const path = (q < 0 ? h : h.slice(0, q)) || '/';
  return { path: path.startsWith('/') ? path : `/${path}`, params: new URLSearchParams(q < 0 ? '' : h.slice(q + 1)) };
}

export const route = signal<Route>(parseHash(location.hash));
addEventListener('hashchange', () => {
  route.value = parseHash(location.hash);
});

export function navigate(path: string): void {
  location.hash = `#${path}`;
}

/** Replaces the address without the query (a token read from a mailed link leaves the address bar). */
export function dropQuery(): void {
  history.replaceState(null, '', `${location.pathname}#${route.value.path}`);
}

/** `/devices/:id` against `/devices/abc` → `{ id: 'abc' }`, or null. */
export function match(pattern: string, path: string): Record<string, string> | null {
  const a = pattern.split('/');
  const b = path.split('/');
  if (a.length !== b.length) return null;
  const out: Record<string, string> = {};
  for (let i = 0; i < a.length; i++) {
    const p = a[i] as string;
    const v = b[i] as string;
    if (p.startsWith(':')) out[p.slice(1)] = decodeURIComponent(v);
    else if (p !== v) return null;
  }
  return out;
}
