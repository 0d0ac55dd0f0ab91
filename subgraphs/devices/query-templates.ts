import type { Compilable, CompiledQuery } from 'kysely';

/** What `tenantRead` sends: SQL text with `$n` placeholders and their values. */
export type Statement = Pick<CompiledQuery, 'sql' | 'parameters'>;

/** Stands in for the request value at `index` while a shape's queries are built and compiled. */
class Slot {
  constructor(readonly index: number) {}
}

/**
 * Kysely queries built and compiled once per shape (which filters are present, what is selected),
 * then reused with each request's values: building a Kysely query costs more CPU than PostgreSQL
 * spends answering the page. The queries of a shape are built from placeholders that `bind`
 * hands out; every parameter of the compiled SQL must be one of them (a value that is not bound
 * would be frozen into every later request of the shape, so building throws instead).
 */
export class QueryTemplates {
  private readonly shapes = new Map<string, Statement[]>();

  /** @param maxShapes shapes kept; past that, queries are built per request @default 256 */
  constructor(private readonly maxShapes = 256) {}

  /**
   * The statements of `shape` for this request. `args` wraps every request value that reaches SQL
   * in `bind` (and must call it in an order that depends on the shape only); `build` makes the
   * queries from what `args` returned, and runs only for a shape not seen yet.
   */
  statements<A>(shape: string, args: (bind: <T>(value: T) => T) => A, build: (a: A) => Compilable[]): Statement[] {
    const cached = this.shapes.get(shape);
    const values: unknown[] = [];
    if (cached) {
      args((v) => {
        values.push(v);
        return v;
      });
      return fill(cached, values);
    }
    const a = args(<T>(v: T): T => {
      values.push(v);
      return new Slot(values.length - 1) as unknown as T;
    });
    const compiled = build(a).map((q) => {
      const c = q.compile();
      if (!c.parameters.every((p) => p instanceof Slot)) throw new Error(`QueryTemplates: a parameter of shape ${shape} is not bound`);
      return { sql: c.sql, parameters: c.parameters };
    });
    if (this.shapes.size < this.maxShapes) this.shapes.set(shape, compiled);
    return fill(compiled, values);
  }
}

/** A shape's statements with this request's values in place of their slots (every parameter is one). */
const fill = (statements: Statement[], values: unknown[]): Statement[] =>
  statements.map((s) => ({ sql: s.sql, parameters: s.parameters.map((p) => values[(p as Slot).index]) }));
