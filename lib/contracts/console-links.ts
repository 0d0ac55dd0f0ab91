import { reject } from './contract.js';

/**
 * The links RULR mails, between the devices subgraph (which writes them into invitations and
 * password resets) and the console (served by the gateway at `/`, which reads them).
 *
 * `<console url>/#/accept-invitation?token=<token>` and `<console url>/#/reset-password?token=<token>`:
 * the token travels in the fragment, which browsers never send to a server, so it stays out of
 * access logs, proxies and `Referer` headers, and the console needs no server-side route for it.
 * The console reads it, removes it from the address bar (`history.replaceState`), and calls
 * `invitation(token)` then `acceptInvitation`, or `resetPassword`.
 */

const CONTRACT = 'console-links';

export const CONSOLE_LINK_KINDS = ['accept-invitation', 'reset-password'] as const;
export type ConsoleLinkKind = (typeof CONSOLE_LINK_KINDS)[number];

const TOKEN = /^(inv|rst)_[A-Za-z0-9_-]{43}$/;
const PREFIX: Record<ConsoleLinkKind, string> = { 'accept-invitation': 'inv', 'reset-password': 'rst' };

/** The link of `kind` carrying `token`, under the console's public URL (a trailing slash or not). */
export function consoleLink(consoleUrl: string, kind: ConsoleLinkKind, token: string): string {
  return `${consoleUrl.replace(/\/+$/, '')}/#/${kind}?token=${encodeURIComponent(token)}`;
}

/** A mailed link's kind and token; throws a counted ContractError for anything else. */
export function parseConsoleLink(link: string): { kind: ConsoleLinkKind; token: string } {
  let url: URL;
  try {
    url = new URL(link);
  } catch {
    return reject(CONTRACT, 'not a URL');
  }
  const m = /^#\/([a-z-]+)\?token=([^&]+)$/.exec(url.hash);
  const kind = m?.[1] as ConsoleLinkKind | undefined;
  if (!kind || !CONSOLE_LINK_KINDS.includes(kind)) return reject(CONTRACT, 'not an invitation or reset link');
  const token = decodeURIComponent(m?.[2] ?? '');
  if (!TOKEN.test(token) || !token.startsWith(`${PREFIX[kind]}_`)) return reject(CONTRACT, 'token malformed for its kind');
  return { kind, token };
}
