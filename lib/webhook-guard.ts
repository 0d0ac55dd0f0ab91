import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { Agent } from 'undici';

/**
 * The SSRF rule of outgoing notification requests (webhooks, chat and SMS providers; see
 * docs/notifications.md): only `http:`/`https:` URLs, and never to a private, loopback, link-local,
 * shared, multicast or reserved address unless `NOTIFY_WEBHOOK_ALLOW` lists it. The address is
 * checked where the connection is made (the resolver's answer, not the URL's name), so a name that
 * resolves to 127.0.0.1 — or is re-pointed there after the URL was saved — is refused alike.
 */

/** Ranges refused by default (RFC 6890 special-purpose blocks that are not globally reachable). */
const DENIED_V4: [string, number][] = [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
];
const DENIED_V6: [string, number][] = [
  ['::', 128],
  ['::1', 128],
  ['64:ff9b::', 96],
  ['100::', 64],
  ['2001:db8::', 32],
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
];

const denied = new BlockList();
for (const [a, p] of DENIED_V4) denied.addSubnet(a, p, 'ipv4');
for (const [a, p] of DENIED_V6) denied.addSubnet(a, p, 'ipv6');

/** Addresses the operator allows although they are private (`NOTIFY_WEBHOOK_ALLOW`). */
export interface WebhookAllowlist {
  list: BlockList;
  /** as configured, for messages */
  entries: string[];
}

/** One entry: an address or `address/prefix` (IPv4 or IPv6). */
const ENTRY_RE = /^([0-9a-fA-F:.]+)(?:\/(\d{1,3}))?$/;

/** Why an allowlist entry is unusable, or null. */
export function allowEntryProblem(entry: string): string | null {
  const m = ENTRY_RE.exec(entry);
  const family = m ? isIP(m[1] as string) : 0;
  if (!m || !family) return `${JSON.stringify(entry)} is not an IP address or CIDR range`;
  const prefix = m[2] === undefined ? (family === 4 ? 32 : 128) : Number(m[2]);
  if (prefix > (family === 4 ? 32 : 128)) return `${JSON.stringify(entry)} has a prefix longer than the address`;
  return null;
}

/** `NOTIFY_WEBHOOK_ALLOW` (comma-separated addresses and CIDR ranges) as a list; throws on a bad entry. */
export function parseAllowlist(raw: string): WebhookAllowlist {
  const entries = raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const list = new BlockList();
  for (const e of entries) {
    const problem = allowEntryProblem(e);
    if (problem) throw new Error(problem);
    const [addr, prefix] = e.split('/') as [string, string | undefined];
    const family = isIP(addr) === 4 ? 'ipv4' : 'ipv6';
    list.addSubnet(addr, prefix === undefined ? (family === 'ipv4' ? 32 : 128) : Number(prefix), family);
  }
  return { list, entries };
}

/** The IPv4 address inside an IPv4-mapped IPv6 one (`::ffff:127.0.0.1`), else the address itself. */
function unmapped(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m ? (m[1] as string) : ip;
}

/** Whether a request may connect to `ip` (a literal address). */
export function addressAllowed(ip: string, allow: WebhookAllowlist): boolean {
  const a = unmapped(ip);
  const family = isIP(a);
  if (!family) return false;
  const type = family === 4 ? 'ipv4' : 'ipv6';
  if (allow.list.check(a, type)) return true;
  return !denied.check(a, type);
}

/** The refusal message (the same wherever the rule is applied). */
export const REFUSED = 'points to a private, loopback or link-local address (allow it with NOTIFY_WEBHOOK_ALLOW)';

/**
 * Why `url` may not be used for an outgoing request, or null: not http(s), credentials in it, or a
 * literal address that is refused. Names are checked again when connecting ({@link guardedAgent}).
 */
export function webhookUrlProblem(url: string, allow: WebhookAllowlist): string | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return 'is not a URL';
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return 'must be an http or https URL';
  if (u.username || u.password) return 'may not carry credentials (use the channel secret or a header template)';
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (isIP(host) && !addressAllowed(host, allow)) return REFUSED;
  if (/^localhost\.?$/i.test(host) || /\.localhost\.?$/i.test(host)) {
    return addressAllowed('127.0.0.1', allow) ? null : REFUSED;
  }
  return null;
}

/** A refused connection (the notifier logs it as a failed attempt that is not retried). */
export class RefusedAddressError extends Error {
  readonly code = 'ERULR_REFUSED_ADDRESS';
  constructor() {
    super(`the URL ${REFUSED}`);
  }
}

type LookupCb = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * An undici Agent whose connections resolve names through a lookup that refuses denied addresses,
 * so the check applies to the address actually connected to (no time-of-check gap, no rebinding).
 * Redirects are not followed by the caller, so every hop is this one.
 */
export function guardedAgent(allow: WebhookAllowlist, o: { timeoutMs: number }): Agent {
  const lookup = (hostname: string, options: { all?: boolean }, cb: LookupCb) => {
    dnsLookup(hostname, { all: true }, (err, addresses) => {
      if (err) return cb(err, []);
      const ok = addresses.filter((a) => addressAllowed(a.address, allow));
      if (!ok.length || ok.length !== addresses.length) return cb(new RefusedAddressError(), []);
      if (options.all) return cb(null, ok);
      const first = ok[0] as LookupAddress;
      cb(null, first.address, first.family);
    });
  };
  return new Agent({ connect: { lookup, timeout: o.timeoutMs } as never, headersTimeout: o.timeoutMs, bodyTimeout: o.timeoutMs });
}
