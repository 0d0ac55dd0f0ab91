import { createRequire } from 'node:module';
import { ERRORS } from '@apollo/federation-internals';
import {
  type FragmentDefinitionNode,
  type GraphQLEnumType,
  type GraphQLError,
  type GraphQLField,
  GraphQLList,
  GraphQLNonNull,
  GraphQLObjectType,
  type GraphQLOutputType,
  GraphQLScalarType,
  type GraphQLSchema,
  isEnumType,
  isObjectType,
  Kind,
  type OperationDefinitionNode,
  type SelectionSetNode,
} from 'graphql';

/**
 * The last step of every multi-subgraph answer: Apollo's `computeResponse` (@apollo/gateway
 * `resultShaping.js`) walks the merged subgraph data along the operation to keep only what the
 * client asked for, in its order, checking nullability and leaf values. It interprets the operation
 * on every request, through federation-internals' re-export getters; a profile of the gateway on a
 * page of 50 devices with a field from a second subgraph put a quarter of its CPU there.
 *
 * Here the walk is compiled once per operation into a tree of field plans and run as plain loops,
 * with Apollo's exact semantics for the operations it accepts (object types only, no @skip/@include,
 * no introspection fields; anything else returns null from {@link compileShaper} and Apollo's own
 * function runs). The gateway hands the compiled shaper to the patched `computeResponse` through the
 * request's variables object (see {@link installShaping}). Equivalence with Apollo's function is
 * tested on the same inputs, null bubbling and invalid values included (result-shaping.test.ts).
 */

export interface Shaped {
  data: Record<string, unknown> | null | undefined;
  errors: GraphQLError[];
}
export type Shaper = (input: Record<string, unknown> | null | undefined) => Shaped;

interface FieldPlan {
  responseName: string;
  typename: boolean;
  type: GraphQLOutputType;
  /** the selections on the field's object type (composite fields) */
  sub?: FieldPlan[];
}

const INTEGER = /^-?(?:0|[1-9][0-9]*)$/;
const BUILT_IN = new Set(['Int', 'Float', 'String', 'Boolean', 'ID']);

class Unsupported extends Error {}

function collect(parent: GraphQLObjectType, sets: SelectionSetNode[], fragments: Record<string, FragmentDefinitionNode>): FieldPlan[] {
  const plans = new Map<string, FieldPlan>();
  const subSets = new Map<string, SelectionSetNode[]>();
  const visit = (set: SelectionSetNode) => {
    for (const sel of set.selections) {
      if (sel.directives?.length) throw new Unsupported('directives');
      if (sel.kind === Kind.FIELD) {
        const name = sel.name.value;
        const responseName = sel.alias?.value ?? name;
        if (name.startsWith('__') && name !== '__typename') throw new Unsupported('introspection');
        let plan = plans.get(responseName);
        if (!plan) {
          if (name === '__typename') plan = { responseName, typename: true, type: parent };
          else {
            const def: GraphQLField<unknown, unknown> | undefined = parent.getFields()[name];
            if (!def) throw new Unsupported(`unknown field ${parent.name}.${name}`);
            plan = { responseName, typename: false, type: def.type };
          }
          plans.set(responseName, plan);
        }
        if (sel.selectionSet) {
          const list = subSets.get(responseName) ?? [];
          list.push(sel.selectionSet);
          subSets.set(responseName, list);
        }
      } else {
        const typeCondition = sel.kind === Kind.INLINE_FRAGMENT ? sel.typeCondition : fragments[sel.name.value]?.typeCondition;
        const set = sel.kind === Kind.INLINE_FRAGMENT ? sel.selectionSet : fragments[sel.name.value]?.selectionSet;
        if (!set) throw new Unsupported('unknown fragment');
        if (typeCondition && typeCondition.name.value !== parent.name) throw new Unsupported('type condition');
        visit(set);
      }
    }
  };
  for (const s of sets) visit(s);
  for (const plan of plans.values()) {
    const sets2 = subSets.get(plan.responseName);
    if (!sets2 || plan.typename) continue;
    let named: GraphQLOutputType = plan.type;
    while (named instanceof GraphQLNonNull || named instanceof GraphQLList) named = named.ofType;
    if (!isObjectType(named)) throw new Unsupported('abstract type');
    plan.sub = collect(named, sets2, fragments);
  }
  return [...plans.values()];
}

/** A compiled shaper for this operation, or null when Apollo's `computeResponse` must run. */
export function compileShaper(
  schema: GraphQLSchema,
  operation: OperationDefinitionNode,
  fragments: Record<string, FragmentDefinitionNode>,
): Shaper | null {
  const root = schema.getRootType(operation.operation);
  if (!root) return null;
  let plans: FieldPlan[];
  try {
    plans = collect(root, [operation.selectionSet], fragments);
  } catch (e) {
    if (e instanceof Unsupported) return null;
    throw e;
  }
  return (input) => {
    if (!input) return { data: input, errors: [] };
    const errors: GraphQLError[] = [];
    const data: Record<string, unknown> = {};
    const ok = applyObject(input, plans, data, root, [], errors);
    return { data: ok ? data : null, errors };
  };
}

const own = (o: Record<string, unknown>, k: string): unknown => (Object.hasOwn(o, k) ? o[k] : undefined);

const describe = (path: (string | number)[], type: GraphQLOutputType, parent: GraphQLObjectType) => {
  const last = path[path.length - 1];
  return typeof last === 'string' ? `field ${parent.name}.${last}` : `array element of type ${String(type)} at index ${last}`;
};

/** false: a non-null field was null (the object becomes null) */
function applyObject(
  input: Record<string, unknown>,
  plans: FieldPlan[],
  output: Record<string, unknown>,
  parent: GraphQLObjectType,
  path: (string | number)[],
  errors: GraphQLError[],
): boolean {
  for (const p of plans) {
    if (p.typename) {
      output[p.responseName] = parent.name;
      continue;
    }
    path.push(p.responseName);
    const r = value(p.type, own(input, p.responseName) ?? null, p.sub, path, parent, errors);
    output[p.responseName] = r.value;
    path.pop();
    if (r.invalid) return false;
  }
  return true;
}

interface Result {
  value: unknown;
  invalid?: boolean;
  hasErrors?: boolean;
}

function value(
  type: GraphQLOutputType,
  input: unknown,
  sub: FieldPlan[] | undefined,
  path: (string | number)[],
  parent: GraphQLObjectType,
  errors: GraphQLError[],
): Result {
  if (type instanceof GraphQLNonNull) {
    const r = value(type.ofType, input, sub, path, parent, errors);
    if (r.value === null) {
      if (!r.hasErrors)
        errors.push(
          ERRORS.INVALID_GRAPHQL.err(`Cannot return null for non-nullable ${describe(path, type.ofType, parent)}.`, { path: [...path] }),
        );
      return { value: null, invalid: true, hasErrors: true };
    }
    return { value: r.value };
  }
  if (input === null) return { value: null };
  if (type instanceof GraphQLList) {
    if (!Array.isArray(input)) throw new Error(`Invalid non-list value ${input} returned by subgraph for list type ${type}`);
    let nullify = false;
    let hasErrors = false;
    const out = new Array(input.length);
    for (let i = 0; i < input.length; i++) {
      path.push(i);
      const r = value(type.ofType, input[i] ?? null, sub, path, parent, errors);
      path.pop();
      if (r.invalid) nullify = true;
      if (r.hasErrors) hasErrors = true;
      out[i] = r.value;
    }
    return { value: nullify ? null : out, hasErrors };
  }
  if (type instanceof GraphQLObjectType) {
    if (typeof input !== 'object') throw new Error(`Invalid non-object value ${input} returned by subgraph for composite type ${type}`);
    const o = input as Record<string, unknown>;
    const typename = o.__typename;
    // Only the declared object type itself can come back for an object field; anything else is left to Apollo's semantics.
    if (typename !== undefined && typename !== type.name) throw new ShapeFallback();
    const out: Record<string, unknown> = {};
    const ok = applyObject(o, sub ?? [], out, type, path, errors);
    return ok ? { value: out } : { value: null, hasErrors: true };
  }
  const valid = validLeaf(type, input);
  if (!valid) errors.push(ERRORS.INVALID_GRAPHQL.err(`Invalid value found for ${describe(path, type, parent)}.`, { path: [...path] }));
  return { value: valid ? input : null, hasErrors: !valid };
}

/** federation-internals `isValidLeafValue` */
function validLeaf(type: GraphQLOutputType, v: unknown): boolean {
  if (type instanceof GraphQLScalarType && !BUILT_IN.has(type.name)) return true;
  const name = (type as { name?: string }).name;
  if (typeof v === 'boolean') return name === 'Boolean';
  if (typeof v === 'number' && Number.isFinite(v)) {
    if (name === 'Int' || name === 'ID') return INTEGER.test(String(v));
    return name === 'Float';
  }
  if (typeof v === 'string') {
    if (isEnumType(type)) return (type as GraphQLEnumType).getValue(v) !== undefined;
    return name !== 'Boolean' && name !== 'Int' && name !== 'Float';
  }
  return false;
}

/** thrown mid-shape when the data holds something the compiled plan does not model: Apollo's function reruns */
class ShapeFallback extends Error {}

type ComputeResponse = (args: { variables?: Record<string, unknown> | null; input: unknown } & Record<string, unknown>) => unknown;

/** shaper per request, keyed by the variables object the gateway passes to `executeQueryPlan` */
const byVariables = new WeakMap<object, Shaper>();
let installed = false;

/**
 * Replaces `computeResponse` in @apollo/gateway's `resultShaping.js` module (what its
 * `executeQueryPlan` calls) with a wrapper that runs the compiled shaper registered for the
 * request's variables object, else Apollo's own. Throws when the module no longer has that export,
 * so an upgrade that moves it fails loudly (tested).
 */
export function installShaping(): void {
  if (installed) return;
  const require = createRequire(import.meta.url);
  const mod = require('@apollo/gateway/dist/resultShaping.js') as { computeResponse?: ComputeResponse };
  const original = mod.computeResponse;
  if (typeof original !== 'function') throw new Error('@apollo/gateway: resultShaping.computeResponse not found (upgrade changed it)');
  mod.computeResponse = (args) => {
    const shaper = args.variables ? byVariables.get(args.variables) : undefined;
    if (shaper) {
      try {
        return shaper(args.input as Record<string, unknown> | null | undefined);
      } catch (e) {
        if (!(e instanceof ShapeFallback)) throw e;
      }
    }
    return original(args);
  };
  installed = true;
}

/** Variables object to pass to `executeQueryPlan` so its response shaping runs `shaper`. */
export function shapedVariables(
  variables: Record<string, unknown> | undefined,
  shaper: Shaper | null,
): Record<string, unknown> | undefined {
  if (!shaper) return variables;
  const v = { ...variables };
  byVariables.set(v, shaper);
  return v;
}
