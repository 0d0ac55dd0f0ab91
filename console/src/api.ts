import { signal } from '@preact/signals';
import { type Client, createClient } from 'graphql-ws';

/**
 * The console's only way to the platform: the public GraphQL API over HTTP (`POST /graphql`) and
 * graphql-ws on the same path, exactly as an integrator uses them. Every request carries the
 * signed-in user's access token; the refresh token (rotated on each use) is kept in localStorage
 * so a reload stays signed in.
 */

export type Role = 'ADMIN' | 'OPERATOR' | 'VIEWER';

export interface Session {
  token: string;
  expiresAt: string;
  role: Role;
  organization: { id: string; slug: string; name: string };
  sessionId: string;
}

/** A GraphQL error as the API answers it (`extensions.code`, and the field for BAD_USER_INPUT). */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

const REFRESH_KEY = 'rulr.refreshToken';
const AUTH_FIELDS = 'token expiresAt role refreshToken sessionId organization { id slug name }';

/** The signed-in session (null: signed out). */
export const session = signal<Session | null>(null);
/** Whether the stored refresh token is still being exchanged at start-up. */
export const restoring = signal(true);

export const canWrite = (): boolean => session.value?.role === 'ADMIN' || session.value?.role === 'OPERATOR';

interface GqlResponse<T> {
  data?: T | null;
  errors?: { message: string; extensions?: { code?: string; field?: string } }[];
}

async function post<T>(query: string, variables: Record<string, unknown> | undefined, token: string | null): Promise<T> {
  const res = await fetch('/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  let body: GqlResponse<T>;
  try {
    body = (await res.json()) as GqlResponse<T>;
  } catch {
    throw new ApiError(`the API answered ${res.status}`, 'INTERNAL_SERVER_ERROR');
  }
  const e = body.errors?.[0];
  if (e && (body.data == null || Object.values(body.data as object).every((v) => v == null))) {
    throw new ApiError(e.message, e.extensions?.code ?? 'INTERNAL_SERVER_ERROR', e.extensions?.field);
  }
  return body.data as T;
}

type AuthPayload = Omit<Session, never> & { refreshToken: string };

let refreshTimer: ReturnType<typeof setTimeout> | undefined;

function adopt(p: AuthPayload): Session {
  localStorage.setItem(REFRESH_KEY, p.refreshToken);
  const s: Session = { token: p.token, expiresAt: p.expiresAt, role: p.role, organization: p.organization, sessionId: p.sessionId };
  session.value = s;
  clearTimeout(refreshTimer);
  // renew a minute before the access token expires (at least 10 s from now)
  const ms = Math.max(10_000, new Date(p.expiresAt).getTime() - Date.now() - 60_000);
  refreshTimer = setTimeout(() => void refresh(), Math.min(ms, 2 ** 31 - 1));
  return s;
}

function forget(): void {
  clearTimeout(refreshTimer);
  localStorage.removeItem(REFRESH_KEY);
  session.value = null;
  closeRealtime();
}

let refreshing: Promise<Session | null> | null = null;

/** Exchanges the refresh token for a new pair, once at a time (a refresh token works only once). */
export function refresh(): Promise<Session | null> {
  refreshing ??= (async () => {
    const refreshToken = localStorage.getItem(REFRESH_KEY);
    if (!refreshToken) return null;
    try {
      const d = await post<{ refreshSession: AuthPayload }>(
        `mutation Refresh($t: String!) { refreshSession(refreshToken: $t) { ${AUTH_FIELDS} } }`,
        { t: refreshToken },
        null,
      );
      const s = adopt(d.refreshSession);
      reconnectRealtime();
      return s;
    } catch (e) {
      if (e instanceof ApiError && e.code !== 'INTERNAL_SERVER_ERROR' && e.code !== 'RATE_LIMITED') forget();
      return null;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

/** Runs one operation with the user's token; an expired token is refreshed once and the call retried. */
export async function gql<T>(query: string, variables?: Record<string, unknown>): Promise<T> {
  try {
    return await post<T>(query, variables, session.value?.token ?? null);
  } catch (e) {
    if (e instanceof ApiError && e.code === 'UNAUTHENTICATED' && session.value) {
      const s = await refresh();
      if (s) return post<T>(query, variables, s.token);
    }
    throw e;
  }
}

export async function signIn(email: string, password: string, organization?: string): Promise<Session> {
  const d = await post<{ login: AuthPayload }>(
    `mutation Login($e: String!, $p: String!, $o: String) { login(email: $e, password: $p, organization: $o) { ${AUTH_FIELDS} } }`,
    { e: email, p: password, o: organization || null },
    null,
  );
  return adopt(d.login);
}

/** Signs out: the API revokes the session (its refresh token stops working), then local state goes. */
export async function signOut(): Promise<void> {
  const refreshToken = localStorage.getItem(REFRESH_KEY);
  try {
    if (session.value) await post('mutation Logout($t: String) { logout(refreshToken: $t) }', { t: refreshToken }, session.value.token);
  } finally {
    forget();
  }
}

export async function switchOrganization(slug: string): Promise<Session> {
  const d = await gql<{ switchOrganization: AuthPayload }>(
    `mutation Switch($o: String!) { switchOrganization(organization: $o) { ${AUTH_FIELDS} } }`,
    { o: slug },
  );
  const s = adopt(d.switchOrganization);
  reconnectRealtime();
  return s;
}

export async function acceptInvitation(token: string, password: string, name?: string): Promise<Session> {
  const d = await post<{ acceptInvitation: AuthPayload }>(
    `mutation Accept($t: String!, $p: String!, $n: String) { acceptInvitation(token: $t, password: $p, name: $n) { ${AUTH_FIELDS} } }`,
    { t: token, p: password, n: name || null },
    null,
  );
  return adopt(d.acceptInvitation);
}

/** At start-up: a stored refresh token becomes a session again. */
export async function restore(): Promise<void> {
  try {
    await refresh();
  } finally {
    restoring.value = false;
  }
}

// --- graphql-ws

let ws: Client | null = null;

function realtime(): Client {
  ws ??= createClient({
    url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql`,
    lazy: true,
    // the current token at every (re)connection: a refreshed one replaces an expired one
    connectionParams: () => ({ authorization: `Bearer ${session.value?.token ?? ''}` }),
    retryAttempts: Number.POSITIVE_INFINITY,
    shouldRetry: () => session.value !== null,
  });
  return ws;
}

function closeRealtime(): void {
  const c = ws;
  ws = null;
  void c?.dispose();
}

/** After a refresh or an organization switch: reconnect with the new token (subscriptions resume). */
function reconnectRealtime(): void {
  // graphql-ws resubscribes on its own after a reconnect; terminate() forces one now
  ws?.terminate();
}

/** Subscribes with the user's token; returns the unsubscribe function. */
export function subscribe<T>(
  query: string,
  variables: Record<string, unknown>,
  onData: (d: T) => void,
  onError?: (e: unknown) => void,
): () => void {
  return realtime().subscribe<T>(
    { query, variables },
    {
      next: (r) => {
        if (r.data) onData(r.data as T);
      },
      error: (e) => onError?.(e),
      complete: () => undefined,
    },
  );
}
