import type { ComponentType } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { restoring, session } from './api.js';
import { Layout } from './layout';
import { AcceptInvitationPage, ForgotPasswordPage, ResetPasswordPage, SignInPage } from './pages/auth';
import { match, route } from './router.js';

type Loader = () => Promise<ComponentType<{ params: Record<string, string> }>>;

/** Pages loaded on first visit: the map (Leaflet) and charts (uPlot) stay out of the initial bundle. */
const PAGES: [string, Loader][] = [
  ['/map', () => import('./pages/map').then((m) => m.MapPage)],
  ['/devices/:id', () => import('./pages/device').then((m) => m.DevicePage)],
  ['/alarms', () => import('./pages/alarms').then((m) => m.AlarmsPage)],
  ['/programs', () => import('./pages/programs').then((m) => m.ProgramsPage)],
];

const cache = new Map<Loader, ComponentType<{ params: Record<string, string> }>>();

function Lazy({ load, params }: { load: Loader; params: Record<string, string> }) {
  const [Page, setPage] = useState(() => cache.get(load) ?? null);
  const [failed, setFailed] = useState<string | null>(null);
  useEffect(() => {
    if (cache.has(load)) {
      setPage(() => cache.get(load) ?? null);
      return;
    }
    let live = true;
    load()
      .then((p) => {
        cache.set(load, p);
        if (live) setPage(() => p);
      })
      .catch((e: unknown) => live && setFailed(String(e)));
    return () => {
      live = false;
    };
  }, [load]);
  if (failed) return <p role="alert">This page could not be loaded: {failed}</p>;
  if (!Page) return <p aria-busy="true">Loading…</p>;
  return <Page params={params} />;
}

export function App() {
  const r = route.value;
  // pages reachable signed out (mailed links)
  if (r.path === '/accept-invitation') return <AcceptInvitationPage />;
  if (r.path === '/reset-password') return <ResetPasswordPage />;
  if (r.path === '/forgot-password') return <ForgotPasswordPage />;
  if (restoring.value) return <p aria-busy="true">Loading…</p>;
  if (!session.value) return <SignInPage />;
  for (const [pattern, load] of PAGES) {
    const params = match(pattern, r.path);
    if (params)
      return (
        <Layout>
          <Lazy key={pattern} load={load} params={params} />
        </Layout>
      );
  }
  // `/` and unknown routes: the fleet map
  const load = PAGES[0]?.[1] as Loader;
  return (
    <Layout>
      <Lazy key="/map" load={load} params={{}} />
    </Layout>
  );
}
