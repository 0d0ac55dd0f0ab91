/**
 * How the gateway matches real-time events (the envelope is a contract: lib/contracts/events.ts)
 * with its subscribers' root-field arguments.
 */

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
