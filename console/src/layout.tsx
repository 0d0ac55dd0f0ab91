import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { gql, session, signOut, switchOrganization } from './api.js';
import { errorText } from './format.js';
import { route } from './router.js';

interface Membership {
  organization: { id: string; slug: string; name: string };
  role: string;
  current: boolean;
}

const NAV = [
  ['#/map', 'Map'],
  ['#/alarms', 'Alarms'],
  ['#/programs', 'Programs'],
] as const;

function OrgSwitcher() {
  const [list, setList] = useState<Membership[]>([]);
  const [error, setError] = useState<string | null>(null);
  const current = session.value?.organization;
  useEffect(() => {
    gql<{ memberships: Membership[] | null }>('{ memberships { organization { id slug name } role current } }')
      .then((d) => setList(d.memberships ?? []))
      .catch(() => setList([]));
  }, [current?.id]);
  if (list.length < 2) return <span data-testid="org-name">{current?.name}</span>;
  return (
    <label class="org">
      <span class="sr-only">Organization</span>
      <select
        aria-label="Organization"
        data-testid="org-switcher"
        value={current?.slug}
        onChange={(e) => {
          const slug = (e.target as HTMLSelectElement).value;
          switchOrganization(slug)
            .then(() => {
              location.hash = '#/map';
            })
            .catch((err: unknown) => setError(errorText(err)));
        }}
      >
        {list.map((m) => (
          <option key={m.organization.id} value={m.organization.slug}>
            {m.organization.name} ({m.role.toLowerCase()})
          </option>
        ))}
      </select>
      {error && <span role="alert">{error}</span>}
    </label>
  );
}

/** The frame of every signed-in page: navigation, organization, role and sign out. */
export function Layout({ children }: { children: ComponentChildren }) {
  const path = route.value.path;
  return (
    <div class="shell">
      <button type="button" class="skip" onClick={() => document.getElementById('main')?.focus()}>
        Skip to content
      </button>
      <header class="top">
        <strong class="brand">RULR</strong>
        <nav aria-label="Main">
          <ul>
            {NAV.map(([href, label]) => (
              <li key={href}>
                <a href={href} aria-current={path === href.slice(1) || (href === '#/map' && path === '/') ? 'page' : undefined}>
                  {label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div class="who">
          <OrgSwitcher />
          <span class="role" data-testid="role">
            {session.value?.role.toLowerCase()}
          </span>
          <button type="button" onClick={() => void signOut()}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {children}
      </main>
    </div>
  );
}
