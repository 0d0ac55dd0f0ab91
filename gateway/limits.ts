import {
  type DocumentNode,
  type FieldNode,
  type FragmentDefinitionNode,
  GraphQLError,
  type GraphQLNamedType,
  type GraphQLSchema,
  getNamedType,
  getNullableType,
  isInterfaceType,
  isListType,
  isObjectType,
  Kind,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValueNode,
} from 'graphql';
import { ErrorCode } from '../lib/errors.js';

/** What one operation may ask for; the gateway fills it from `GATEWAY_MAX_*`. */
export interface QueryLimits {
  /** Deepest field nesting (a root field is depth 1). @default 12 */
  maxDepth: number;
  /** Aliased fields in one operation. @default 30 */
  maxAliases: number;
  /** Estimated field resolutions (see `measureDocument`). @default 20000 */
  maxCost: number;
  /** List size assumed when a list field has no `first`/`last`/`limit` argument. @default 50 */
  defaultListSize?: number;
  /** With a schema, list-typed fields are recognised; without one only size arguments multiply. */
  schema?: GraphQLSchema;
}

export interface QueryMeasure {
  depth: number;
  aliases: number;
  cost: number;
}

const SIZE_ARGS = new Set(['first', 'last', 'limit']);

interface Measure {
  depth: number;
  aliases: number;
  cost: number;
}

/**
 * Measures every operation of a document in one pass over its AST, fragments expanded (each
 * fragment measured once, so fragment "bombs" stay linear; cycles count once):
 * - depth: deepest field nesting;
 * - aliases: fields written with an alias;
 * - cost: every field counts 1, times the product of the list sizes above it. A field with a
 *   `first`/`last`/`limit` argument multiplies its children by that value (a variable counts its
 *   default, or `defaultListSize` when it has none); a list-typed field without such an argument
 *   multiplies by `defaultListSize`, except directly under a sized field (the `edges`/`nodes` of a
 *   connection are already counted by the connection's `first`). `__typename` is free.
 * The result is the maximum depth/cost and the largest alias count over the document's operations.
 */
export function measureDocument(document: DocumentNode, o: Pick<QueryLimits, 'defaultListSize' | 'schema'> = {}): QueryMeasure {
  const defaultSize = o.defaultListSize ?? 50;
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const d of document.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d);
  const memo = new Map<string, Measure>();
  const inProgress = new Set<string>();
  let defaults = new Map<string, ValueNode>();

  const typeNamed = (name: string | undefined): GraphQLNamedType | undefined =>
    (name && o.schema ? o.schema.getType(name) : undefined) ?? undefined;

  const sizeOf = (v: ValueNode | undefined): number | undefined => {
    if (!v) return undefined;
    if (v.kind === Kind.INT) return Math.max(0, Number(v.value));
    if (v.kind === Kind.VARIABLE) {
      const d = defaults.get(v.name.value);
      return d?.kind === Kind.INT ? Math.max(0, Number(d.value)) : defaultSize;
    }
    return undefined;
  };

  const measureSet = (set: SelectionSetNode, parent: GraphQLNamedType | undefined, sizedParent: boolean): Measure => {
    const m: Measure = { depth: 0, aliases: 0, cost: 0 };
    const add = (c: Measure) => {
      m.depth = Math.max(m.depth, c.depth);
      m.aliases += c.aliases;
      m.cost += c.cost;
    };
    for (const s of set.selections) {
      if (s.kind === Kind.FIELD) add(measureField(s, parent, sizedParent));
      else if (s.kind === Kind.INLINE_FRAGMENT)
        add(measureSet(s.selectionSet, typeNamed(s.typeCondition?.name.value) ?? parent, sizedParent));
      else {
        const name = s.name.value;
        const key = `${name}:${sizedParent}`;
        const hit = memo.get(key);
        if (hit) add(hit);
        else if (!inProgress.has(key)) {
          const f = fragments.get(name);
          if (!f) continue;
          inProgress.add(key);
          const r = measureSet(f.selectionSet, typeNamed(f.typeCondition.name.value) ?? parent, sizedParent);
          inProgress.delete(key);
          memo.set(key, r);
          add(r);
        }
      }
    }
    return m;
  };

  const measureField = (f: FieldNode, parent: GraphQLNamedType | undefined, sizedParent: boolean): Measure => {
    const aliases = f.alias ? 1 : 0;
    if (f.name.value === '__typename') return { depth: 1, aliases, cost: 0 };
    const def = parent && (isObjectType(parent) || isInterfaceType(parent)) ? parent.getFields()[f.name.value] : undefined;
    if (!f.selectionSet) return { depth: 1, aliases, cost: 1 };
    let size: number | undefined;
    for (const a of f.arguments ?? []) if (SIZE_ARGS.has(a.name.value)) size = sizeOf(a.value) ?? size;
    const isList = def ? isListType(getNullableType(def.type)) : false;
    const factor = size ?? (isList && !sizedParent ? defaultSize : 1);
    const child = measureSet(f.selectionSet, def ? getNamedType(def.type) : undefined, size !== undefined);
    return { depth: child.depth + 1, aliases: aliases + child.aliases, cost: 1 + factor * child.cost };
  };

  const total: QueryMeasure = { depth: 0, aliases: 0, cost: 0 };
  for (const d of document.definitions) {
    if (d.kind !== Kind.OPERATION_DEFINITION) continue;
    defaults = new Map((d.variableDefinitions ?? []).flatMap((v) => (v.defaultValue ? [[v.variable.name.value, v.defaultValue]] : [])));
    const m = measureSet(d.selectionSet, rootType(o.schema, d), false);
    total.depth = Math.max(total.depth, m.depth);
    total.aliases = Math.max(total.aliases, m.aliases);
    total.cost = Math.max(total.cost, m.cost);
  }
  return total;
}

function rootType(schema: GraphQLSchema | undefined, op: OperationDefinitionNode): GraphQLNamedType | undefined {
  if (!schema) return undefined;
  return (
    (op.operation === 'query'
      ? schema.getQueryType()
      : op.operation === 'mutation'
        ? schema.getMutationType()
        : schema.getSubscriptionType()) ?? undefined
  );
}

/**
 * The gateway's query limits as a pure function, shared by HTTP and graphql-ws (`onSubscribe`):
 * returns the first limit the document breaks as a GraphQLError (`QUERY_TOO_DEEP`,
 * `TOO_MANY_ALIASES`, `QUERY_TOO_COSTLY`), or null.
 */
export function checkLimits(document: DocumentNode, limits: QueryLimits): GraphQLError | null {
  const m = measureDocument(document, limits);
  if (m.depth > limits.maxDepth) {
    return new GraphQLError(`query depth ${m.depth} exceeds the limit of ${limits.maxDepth}`, {
      extensions: { code: ErrorCode.QueryTooDeep, depth: m.depth, limit: limits.maxDepth },
    });
  }
  if (m.aliases > limits.maxAliases) {
    return new GraphQLError(`query uses ${m.aliases} aliases; the limit is ${limits.maxAliases}`, {
      extensions: { code: ErrorCode.TooManyAliases, aliases: m.aliases, limit: limits.maxAliases },
    });
  }
  if (m.cost > limits.maxCost) {
    return new GraphQLError(`query cost ${m.cost} exceeds the limit of ${limits.maxCost}`, {
      extensions: { code: ErrorCode.QueryTooCostly, cost: m.cost, limit: limits.maxCost },
    });
  }
  return null;
}
