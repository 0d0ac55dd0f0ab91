/**
 * Calls `f` until `ok` accepts its value (every `everyMs`), and returns that value; past `ms` throws
 * with `what` and the last value, so a failing test says what it was still seeing.
 */
export async function poll<T>(what: string, f: () => Promise<T>, ok: (v: T) => boolean, ms = 60_000, everyMs = 200): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`${what}: still ${JSON.stringify(v).slice(0, 400)}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
