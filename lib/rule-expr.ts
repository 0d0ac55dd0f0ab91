/**
 * The condition language of compound rules: comparisons of a device's metrics joined with AND / OR /
 * NOT, e.g. `power < 5 and lampState == 1`, `voltage > 253 or voltage < 207`, `rate(energy) > 2`.
 * A small hand-written recursive-descent parser (no `eval`, no dependency): the grammar is a dozen
 * lines, and a hand parser gives the exact position and a plain message for every error
 * (docs/decisions.md). Pure: no I/O. See docs/alarms-rules.md.
 *
 * ```
 * expr    := or
 * or      := and (("or" | "||") and)*
 * and     := not (("and" | "&&") not)*
 * not     := ("not" | "!") not | compare
 * compare := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?
 * sum     := product (("+" | "-") product)*
 * product := unary (("*" | "/") unary)*
 * unary   := "-" unary | primary
 * primary := number | "true" | "false" | metric | fn "(" metric ")" | "abs" "(" sum ")" | "(" expr ")"
 * fn      := "rate"      (change per minute since the device's previous reading of the metric)
 * ```
 * `true`/`false` are the numbers 1 and 0 (booleans are stored as 1/0). The whole expression, and each
 * operand of and/or/not, must be a comparison (a bare metric is refused: compare it).
 */

/**
 * Longest expression accepted, in characters.
 * @default 1000
 */
export const MAX_EXPRESSION_LENGTH = 1000;
/**
 * Most distinct metrics one expression may use.
 * @default 20
 */
export const MAX_EXPRESSION_METRICS = 20;
const MAX_DEPTH = 40;

export type Cmp = '<' | '<=' | '>' | '>=' | '==' | '!=';

/** The parsed expression. */
export type Expr =
  | { t: 'num'; v: number }
  | { t: 'metric'; name: string }
  | { t: 'rate'; name: string }
  | { t: 'abs'; e: Expr }
  | { t: 'neg'; e: Expr }
  | { t: 'arith'; op: '+' | '-' | '*' | '/'; l: Expr; r: Expr }
  | { t: 'cmp'; op: Cmp; l: Expr; r: Expr }
  | { t: 'and' | 'or'; l: Expr; r: Expr }
  | { t: 'not'; e: Expr };

/** A syntax or type error, with the 1-based column where it was found. */
export class ExpressionError extends Error {
  constructor(
    readonly position: number,
    readonly reason: string,
  ) {
    super(`at position ${position}: ${reason}`);
    this.name = 'ExpressionError';
  }
}

interface Token {
  k: 'num' | 'id' | 'op' | 'end';
  v: string;
  pos: number;
}

const METRIC = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;
const KEYWORDS = new Set(['and', 'or', 'not', 'true', 'false']);
const FUNCTIONS = new Set(['rate', 'abs']);

function tokenize(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i] as string;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    const pos = i + 1;
    if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(src[i + 1] ?? ''))) {
      const m = /^(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?/.exec(src.slice(i)) as RegExpExecArray;
      out.push({ k: 'num', v: m[0], pos });
      i += m[0].length;
      continue;
    }
    if (/[A-Za-z]/.test(c)) {
      const m = /^[A-Za-z][A-Za-z0-9_.-]*/.exec(src.slice(i)) as RegExpExecArray;
      // a trailing '-' or '.' belongs to the next token (`a-1` is a minus, not a name)
      let word = m[0];
      while (/[.-]$/.test(word)) word = word.slice(0, -1);
      out.push({ k: 'id', v: word, pos });
      i += word.length;
      continue;
    }
    const two = src.slice(i, i + 2);
    if (['<=', '>=', '==', '!=', '&&', '||'].includes(two)) {
      out.push({ k: 'op', v: two, pos });
      i += 2;
      continue;
    }
    if ('<>()+-*/!'.includes(c)) {
      out.push({ k: 'op', v: c, pos });
      i++;
      continue;
    }
    if (c === '=') throw new ExpressionError(pos, "'=' is not an operator: use '==' to compare");
    throw new ExpressionError(pos, `unexpected character '${c}'`);
  }
  out.push({ k: 'end', v: '', pos: src.length + 1 });
  return out;
}

type Kind = 'num' | 'bool';
interface Typed {
  e: Expr;
  kind: Kind;
  pos: number;
}

class Parser {
  private i = 0;
  private depth = 0;
  constructor(private readonly toks: Token[]) {}

  private peek(): Token {
    return this.toks[this.i] as Token;
  }
  private next(): Token {
    return this.toks[this.i++] as Token;
  }
  private isOp(...ops: string[]): boolean {
    const t = this.peek();
    return (t.k === 'op' && ops.includes(t.v)) || (t.k === 'id' && ops.includes(t.v.toLowerCase()));
  }
  private describe(t: Token): string {
    return t.k === 'end' ? 'the end of the expression' : `'${t.v}'`;
  }
  private expect(op: string): void {
    const t = this.next();
    if (!(t.k === 'op' && t.v === op)) throw new ExpressionError(t.pos, `expected '${op}' but found ${this.describe(t)}`);
  }
  private deeper<T>(f: () => T): T {
    if (++this.depth > MAX_DEPTH) throw new ExpressionError(this.peek().pos, `nested more than ${MAX_DEPTH} levels deep`);
    try {
      return f();
    } finally {
      this.depth--;
    }
  }

  parse(): Typed {
    const e = this.or();
    const t = this.peek();
    if (t.k !== 'end') throw new ExpressionError(t.pos, `unexpected ${this.describe(t)}: expected and, or, or the end`);
    return e;
  }

  private bool(x: Typed, what: string): Expr {
    if (x.kind !== 'bool') {
      const hint = x.e.t === 'metric' ? `: compare it, e.g. ${x.e.name} == 1` : '';
      throw new ExpressionError(x.pos, `${what} needs a comparison, not a number${hint}`);
    }
    return x.e;
  }
  private num(x: Typed, what: string): Expr {
    if (x.kind !== 'num') throw new ExpressionError(x.pos, `${what} needs a number, not a condition`);
    return x.e;
  }

  private or(): Typed {
    let l = this.and();
    while (this.isOp('or', '||')) {
      this.next();
      const r = this.and();
      l = { e: { t: 'or', l: this.bool(l, 'or'), r: this.bool(r, 'or') }, kind: 'bool', pos: l.pos };
    }
    return l;
  }
  private and(): Typed {
    let l = this.not();
    while (this.isOp('and', '&&')) {
      this.next();
      const r = this.not();
      l = { e: { t: 'and', l: this.bool(l, 'and'), r: this.bool(r, 'and') }, kind: 'bool', pos: l.pos };
    }
    return l;
  }
  private not(): Typed {
    if (this.isOp('not', '!')) {
      const t = this.next();
      const x = this.deeper(() => this.not());
      return { e: { t: 'not', e: this.bool(x, 'not') }, kind: 'bool', pos: t.pos };
    }
    return this.compare();
  }
  private compare(): Typed {
    const l = this.sum();
    if (this.isOp('<', '<=', '>', '>=', '==', '!=')) {
      const op = this.next().v as Cmp;
      const r = this.sum();
      return { e: { t: 'cmp', op, l: this.num(l, op), r: this.num(r, op) }, kind: 'bool', pos: l.pos };
    }
    return l;
  }
  private sum(): Typed {
    let l = this.product();
    while (this.isOp('+', '-')) {
      const op = this.next().v as '+' | '-';
      const r = this.product();
      l = { e: { t: 'arith', op, l: this.num(l, op), r: this.num(r, op) }, kind: 'num', pos: l.pos };
    }
    return l;
  }
  private product(): Typed {
    let l = this.unary();
    while (this.isOp('*', '/')) {
      const op = this.next().v as '*' | '/';
      const r = this.unary();
      l = { e: { t: 'arith', op, l: this.num(l, op), r: this.num(r, op) }, kind: 'num', pos: l.pos };
    }
    return l;
  }
  private unary(): Typed {
    if (this.isOp('-')) {
      const t = this.next();
      const x = this.deeper(() => this.unary());
      return { e: { t: 'neg', e: this.num(x, '-') }, kind: 'num', pos: t.pos };
    }
    return this.primary();
  }
  private primary(): Typed {
    const t = this.next();
    if (t.k === 'num') {
      const v = Number(t.v);
      if (!Number.isFinite(v)) throw new ExpressionError(t.pos, `${t.v} is not a finite number`);
      return { e: { t: 'num', v }, kind: 'num', pos: t.pos };
    }
    if (t.k === 'op' && t.v === '(') {
      const x = this.deeper(() => this.or());
      this.expect(')');
      return { ...x, pos: t.pos };
    }
    if (t.k === 'id') {
      const word = t.v.toLowerCase();
      if (word === 'true' || word === 'false') return { e: { t: 'num', v: word === 'true' ? 1 : 0 }, kind: 'num', pos: t.pos };
      if (KEYWORDS.has(word)) throw new ExpressionError(t.pos, `'${t.v}' needs a condition before it`);
      if (FUNCTIONS.has(word) && this.isOp('(')) {
        this.next();
        if (word === 'abs') {
          const x = this.deeper(() => this.sum());
          this.expect(')');
          return { e: { t: 'abs', e: this.num(x, 'abs') }, kind: 'num', pos: t.pos };
        }
        const m = this.next();
        if (m.k !== 'id' || KEYWORDS.has(m.v.toLowerCase()))
          throw new ExpressionError(m.pos, `rate() takes a metric name, found ${this.describe(m)}`);
        this.checkMetric(m);
        this.expect(')');
        return { e: { t: 'rate', name: m.v }, kind: 'num', pos: t.pos };
      }
      this.checkMetric(t);
      return { e: { t: 'metric', name: t.v }, kind: 'num', pos: t.pos };
    }
    throw new ExpressionError(t.pos, `expected a number, a metric or '(' but found ${this.describe(t)}`);
  }
  private checkMetric(t: Token): void {
    if (!METRIC.test(t.v)) throw new ExpressionError(t.pos, `'${t.v}' is not a metric name (a letter, then up to 63 of A-Z a-z 0-9 _ . -)`);
  }
}

/** A parsed condition and the metrics it reads. */
export interface ParsedExpression {
  source: string;
  ast: Expr;
  /** metrics read, in order of first use */
  metrics: string[];
  /** metrics read through `rate()` (these need the previous reading) */
  rates: string[];
}

/** Parses and type-checks a condition; throws {@link ExpressionError} with the position of the first problem. */
export function parseExpression(source: string): ParsedExpression {
  if (source.length > MAX_EXPRESSION_LENGTH)
    throw new ExpressionError(MAX_EXPRESSION_LENGTH + 1, `longer than ${MAX_EXPRESSION_LENGTH} characters`);
  if (!source.trim()) throw new ExpressionError(1, 'the expression is empty');
  const top = new Parser(tokenize(source)).parse();
  if (top.kind !== 'bool') {
    const hint = top.e.t === 'metric' ? `: compare it, e.g. ${top.e.name} == 1` : '';
    throw new ExpressionError(top.pos, `the expression must be a condition (a comparison), not a number${hint}`);
  }
  const metrics: string[] = [];
  const rates: string[] = [];
  const walk = (e: Expr): void => {
    switch (e.t) {
      case 'metric':
        if (!metrics.includes(e.name)) metrics.push(e.name);
        return;
      case 'rate':
        if (!metrics.includes(e.name)) metrics.push(e.name);
        if (!rates.includes(e.name)) rates.push(e.name);
        return;
      case 'num':
        return;
      case 'abs':
      case 'neg':
      case 'not':
        walk(e.e);
        return;
      default:
        walk(e.l);
        walk(e.r);
    }
  };
  walk(top.e);
  if (!metrics.length) throw new ExpressionError(1, 'the expression reads no metric');
  if (metrics.length > MAX_EXPRESSION_METRICS) throw new ExpressionError(1, `reads more than ${MAX_EXPRESSION_METRICS} metrics`);
  return { source, ast: top.e, metrics, rates };
}

/** A metric's value at a device time (ms). */
export type Sample = readonly [ts: number, value: number];

/** What an evaluation reads: each metric's latest sample and, for `rate()`, the one before it. */
export interface ExprInput {
  latest: Readonly<Record<string, Sample | undefined>>;
  previous?: Readonly<Record<string, Sample | undefined>>;
}

/**
 * Evaluates a parsed condition. Three-valued: `null` when a metric it needs has no value yet (or a
 * rate has no previous reading, or a division by zero), so a rule never decides on missing data;
 * `false and null` is false and `true or null` is true.
 */
export function evaluate(e: Expr, input: ExprInput): boolean | null {
  const v = value(e, input);
  return v === null ? null : v !== 0;
}

function value(e: Expr, x: ExprInput): number | null {
  switch (e.t) {
    case 'num':
      return e.v;
    case 'metric':
      return x.latest[e.name]?.[1] ?? null;
    case 'rate': {
      const a = x.previous?.[e.name];
      const b = x.latest[e.name];
      if (!a || !b || b[0] <= a[0]) return null;
      return ((b[1] - a[1]) / (b[0] - a[0])) * 60_000;
    }
    case 'abs': {
      const v = value(e.e, x);
      return v === null ? null : Math.abs(v);
    }
    case 'neg': {
      const v = value(e.e, x);
      return v === null ? null : -v;
    }
    case 'arith': {
      const l = value(e.l, x);
      const r = value(e.r, x);
      if (l === null || r === null) return null;
      if (e.op === '/' && r === 0) return null;
      const out = e.op === '+' ? l + r : e.op === '-' ? l - r : e.op === '*' ? l * r : l / r;
      return Number.isFinite(out) ? out : null;
    }
    case 'cmp': {
      const l = value(e.l, x);
      const r = value(e.r, x);
      if (l === null || r === null) return null;
      const ok =
        e.op === '<' ? l < r : e.op === '<=' ? l <= r : e.op === '>' ? l > r : e.op === '>=' ? l >= r : e.op === '==' ? l === r : l !== r;
      return ok ? 1 : 0;
    }
    case 'not': {
      const v = value(e.e, x);
      return v === null ? null : v ? 0 : 1;
    }
    case 'and': {
      const l = value(e.l, x);
      if (l === 0) return 0;
      const r = value(e.r, x);
      if (r === 0) return 0;
      return l === null || r === null ? null : 1;
    }
    case 'or': {
      const l = value(e.l, x);
      if (l !== null && l !== 0) return 1;
      const r = value(e.r, x);
      if (r !== null && r !== 0) return 1;
      return l === null || r === null ? null : 0;
    }
  }
}
