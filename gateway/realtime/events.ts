/**
 * The real-time event envelope every producer (ingest, workers) publishes on the Redis channel
 * `<prefix>events:<orgId>`. The gateway needs no code per subscription field: `field` names the
 * Subscription root field, `data` is its value (entity references as `{ id }`), and `filter` is
 * what subscribers' arguments are matched against.
 */
export interface RealtimeEvent {
  field: string;
  orgId: string;
  /**
   * Matched against the subscriber's root-field arguments by name: an argument `xIds: [ID!]`
   * matches when `filter.xId` (or any of `filter.xPath`) is in the list; an argument `xId` matches
   * `filter.xId` or any of `filter.xPath` (ancestors, so a site matches its whole subtree); any other
   * argument must equal `filter[name]`. An argument left out (or null) matches everything.
   */
  filter: Record<string, unknown>;
  data: unknown;
  /**
   * Events with the same coalesce key may be merged to the newest one for a subscriber that lags
   * (telemetry of one device). Events without it are never dropped.
   */
  coalesce?: string;
  /** producer's timestamp (ms), for latency measurement */
  at?: number;
}

export const eventsChannel = (prefix: string, orgId: string) => `${prefix}events:${orgId}`;

const isEvent = (e: unknown): e is RealtimeEvent => {
  const x = e as RealtimeEvent | null;
  return typeof x?.field === 'string' && typeof x.orgId === 'string' && typeof x.filter === 'object' && x.filter !== null;
};

/**
 * One channel message: an envelope, or a JSON array of envelopes in publish order (ingest sends one
 * array per organization per committed batch: one PUBLISH and one parse instead of one per device).
 * Malformed elements are counted in `invalid` and skipped; the others are kept.
 */
export function parseEvents(raw: string): { events: RealtimeEvent[]; invalid: number } {
  let doc: unknown;
  try {
    doc = JSON.parse(raw);
  } catch {
    return { events: [], invalid: 1 };
  }
  if (!Array.isArray(doc)) return isEvent(doc) ? { events: [doc], invalid: 0 } : { events: [], invalid: 1 };
  const events: RealtimeEvent[] = [];
  for (const e of doc) if (isEvent(e)) events.push(e);
  return { events, invalid: doc.length - events.length };
}

const asList = (v: unknown): unknown[] => (Array.isArray(v) ? v : v === undefined || v === null ? [] : [v]);

/** Does a subscriber with these root-field arguments receive this event? */
export function matches(args: Record<string, unknown>, filter: Record<string, unknown>): boolean {
  for (const [name, value] of Object.entries(args)) {
    if (value === undefined || value === null) continue;
    const plural = /^(.*)Ids$/.exec(name);
    const single = /^(.*)Id$/.exec(name);
    const base = plural?.[1] ?? single?.[1];
    if (base !== undefined) {
      const have = [...asList(filter[`${base}Id`]), ...asList(filter[`${base}Path`])].map(String);
      const want = asList(value).map(String);
      if (!want.some((w) => have.includes(w))) return false;
    } else if (String(filter[name]) !== String(value)) return false;
  }
  return true;
}

/** Index keys of a subscriber (its first id-like argument's values) so an event visits only candidates. */
export function subscriberKeys(args: Record<string, unknown>): string[] | null {
  for (const [name, value] of Object.entries(args)) {
    if (value === undefined || value === null) continue;
    const base = /^(.*)Ids?$/.exec(name)?.[1];
    if (base !== undefined) return asList(value).map((v) => `${base}:${String(v)}`);
  }
  return null;
}

/** The index keys an event can be found under. */
export function eventKeys(filter: Record<string, unknown>): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(filter)) {
    const base = /^(.*)(Id|Path)$/.exec(k)?.[1];
    if (base !== undefined) for (const x of asList(v)) out.push(`${base}:${String(x)}`);
  }
  return out;
}
