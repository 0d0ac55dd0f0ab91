import {
  type DocumentNode,
  type ExecutionResult,
  execute,
  type FieldNode,
  type FragmentDefinitionNode,
  type GraphQLField,
  type GraphQLFieldResolver,
  type GraphQLFormattedError,
  type GraphQLObjectType,
  type GraphQLSchema,
  getNamedType,
  isListType,
  isNonNullType,
  isObjectType,
  Kind,
  type OperationDefinitionNode,
  parse,
  print,
  type SelectionSetNode,
  visit,
} from 'graphql';

/**
 * How a subscription document is served from events: which root field it listens to, which of that
 * field's children are federated entities (fetched in one follow-up query per event batch), and a
 * key shared by every subscriber that selects the same fields (so they share follow-ups and
 * serialisation).
 */
export interface SubscriptionPlan {
  operation: OperationDefinitionNode;
  rootField: FieldNode;
  rootFieldName: string;
  rootResponseKey: string;
  /** arguments of the root field (the subscriber's filter), with variables substituted */
  args: Record<string, unknown>;
  /** children of the root field that reference entities: response key → follow-up */
  followUps: FollowUp[];
  /** same key ⇒ same payload for the same event */
  selectionKey: string;
}

export interface FollowUp {
  responseKey: string;
  /** the event data property holding `{ id }` of the entity */
  fieldName: string;
  typeName: string;
  document: DocumentNode;
  variables: Record<string, unknown>;
}

/** Query fields of the form `xsByIds(ids: [ID!]!): [X]!`, by entity type name: how events' entity references are resolved. */
export function entityFetchers(schema: GraphQLSchema): Map<string, string> {
  const out = new Map<string, string>();
  const q = schema.getQueryType();
  if (!q) return out;
  for (const f of Object.values(q.getFields())) {
    const idsArg = f.args.length === 1 && f.args[0]?.name === 'ids' ? f.args[0] : undefined;
    let t = f.type;
    if (isNonNullType(t)) t = t.ofType;
    if (idsArg && isListType(t)) out.set(getNamedType(t).name, f.name);
  }
  return out;
}

function argValues(field: GraphQLField<unknown, unknown>, node: FieldNode, variables: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const a of node.arguments ?? []) {
    const def = field.args.find((x) => x.name === a.name.value);
    if (!def) continue;
    out[a.name.value] = literalValue(a.value, variables);
  }
  return out;
}

function literalValue(v: import('graphql').ValueNode, variables: Record<string, unknown>): unknown {
  switch (v.kind) {
    case Kind.VARIABLE:
      return variables[v.name.value];
    case Kind.LIST:
      return v.values.map((x) => literalValue(x, variables));
    case Kind.OBJECT:
      return Object.fromEntries(v.fields.map((f) => [f.name.value, literalValue(f.value, variables)]));
    case Kind.NULL:
      return null;
    case Kind.INT:
    case Kind.FLOAT:
      return Number(v.value);
    default:
      return (v as { value: unknown }).value;
  }
}

function usedVariables(node: SelectionSetNode, fragments: Map<string, FragmentDefinitionNode>): { vars: Set<string>; frags: Set<string> } {
  const vars = new Set<string>();
  const frags = new Set<string>();
  const walk = (n: SelectionSetNode | FragmentDefinitionNode) =>
    visit(n, {
      Variable: (x) => {
        vars.add(x.name.value);
      },
      FragmentSpread: (x) => {
        if (frags.has(x.name.value)) return;
        frags.add(x.name.value);
        const f = fragments.get(x.name.value);
        if (f) walk(f);
      },
    });
  walk(node);
  return { vars, frags };
}

/** Fields selected directly on the root field's value, through inline fragments and spreads. */
function childFields(set: SelectionSetNode, fragments: Map<string, FragmentDefinitionNode>): FieldNode[] {
  const out: FieldNode[] = [];
  for (const s of set.selections) {
    if (s.kind === Kind.FIELD) out.push(s);
    else if (s.kind === Kind.INLINE_FRAGMENT) out.push(...childFields(s.selectionSet, fragments));
    else {
      const f = fragments.get(s.name.value);
      if (f) out.push(...childFields(f.selectionSet, fragments));
    }
  }
  return out;
}

/** Plans a validated subscription document. Throws when it is not a single-root-field subscription. */
export function planSubscription(
  schema: GraphQLSchema,
  document: DocumentNode,
  operationName: string | undefined,
  variables: Record<string, unknown>,
): SubscriptionPlan {
  const ops = document.definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
  const operation = operationName ? ops.find((o) => o.name?.value === operationName) : ops.length === 1 ? ops[0] : undefined;
  if (!operation)
    throw new Error(operationName ? `unknown operation ${operationName}` : 'operationName is required with several operations');
  if (operation.operation !== 'subscription') throw new Error('not a subscription');
  const fragments = new Map(
    document.definitions.filter((d): d is FragmentDefinitionNode => d.kind === Kind.FRAGMENT_DEFINITION).map((f) => [f.name.value, f]),
  );
  const roots = childFields(operation.selectionSet, fragments).filter((f) => f.name.value !== '__typename');
  const rootField = roots[0];
  if (!rootField || roots.length !== 1) throw new Error('a subscription selects exactly one root field');
  const subType = schema.getSubscriptionType() as GraphQLObjectType;
  const fieldDef = subType.getFields()[rootField.name.value];
  if (!fieldDef) throw new Error(`unknown subscription field ${rootField.name.value}`);
  const eventType = getNamedType(fieldDef.type);
  const fetchers = entityFetchers(schema);
  const followUps: FollowUp[] = [];
  if (isObjectType(eventType) && rootField.selectionSet) {
    const eventFields = eventType.getFields();
    for (const child of childFields(rootField.selectionSet, fragments)) {
      const def = eventFields[child.name.value];
      if (!def || !child.selectionSet) continue;
      const typeName = getNamedType(def.type).name;
      const fetcher = fetchers.get(typeName);
      if (!fetcher) continue;
      const { vars, frags } = usedVariables(child.selectionSet, fragments);
      const varDefs = (operation.variableDefinitions ?? []).filter((v) => vars.has(v.variable.name.value));
      const text = [
        `query RulrFollowUp($_rulrIds: [ID!]!${varDefs.map((v) => `, ${print(v)}`).join('')}) {`,
        `  _r: ${fetcher}(ids: $_rulrIds) { _rulrId: id ${print(child.selectionSet).slice(1, -1)} }`,
        '}',
        ...[...frags].map((n) => print(fragments.get(n) as FragmentDefinitionNode)),
      ].join('\n');
      followUps.push({
        responseKey: child.alias?.value ?? child.name.value,
        fieldName: child.name.value,
        typeName,
        document: parse(text),
        variables: Object.fromEntries([...vars].map((v) => [v, variables[v]])),
      });
    }
  }
  const { vars, frags } = rootField.selectionSet
    ? usedVariables(rootField.selectionSet, fragments)
    : { vars: new Set<string>(), frags: new Set<string>() };
  const selectionKey = JSON.stringify([
    rootField.name.value,
    rootField.alias?.value ?? '',
    rootField.selectionSet ? print(rootField.selectionSet) : '',
    [...frags].sort().map((n) => print(fragments.get(n) as FragmentDefinitionNode)),
    [...vars].sort().map((v) => [v, variables[v]]),
  ]);
  return {
    operation,
    rootField,
    rootFieldName: rootField.name.value,
    rootResponseKey: rootField.alias?.value ?? rootField.name.value,
    args: argValues(fieldDef, rootField, variables),
    followUps,
    selectionKey,
  };
}

const responseShaped = new WeakSet<object>();

function markShaped(v: unknown): void {
  if (v && typeof v === 'object' && !responseShaped.has(v)) {
    responseShaped.add(v);
    for (const x of Array.isArray(v) ? v : Object.values(v)) markShaped(x);
  }
}

/** Indexes a follow-up result by entity id; its objects are already shaped like the subscriber's selection. */
export function indexFollowUp(result: ExecutionResult): Map<string, unknown> {
  const list = (result.data as { _r?: ({ _rulrId: string } | null)[] } | null | undefined)?._r ?? [];
  const out = new Map<string, unknown>();
  for (const e of list) {
    if (!e) continue;
    markShaped(e);
    out.set(e._rulrId, e);
  }
  return out;
}

/** Errors of one follow-up: those about one entity (by id) and those about all of them. */
export interface FollowUpErrors {
  all: GraphQLFormattedError[];
  byId: Map<string, GraphQLFormattedError[]>;
}

/**
 * The errors of a follow-up result, re-pathed from the follow-up (`_r.<index>.…`, the index into
 * `ids`) to the subscriber's selection (`<root>.<field>.…`); an error about no one entity (a subgraph
 * that could not answer at all) concerns every event of the batch. `undefined`: no errors.
 */
export function followUpErrors(
  result: ExecutionResult,
  ids: readonly string[],
  rootResponseKey: string,
  responseKey: string,
): FollowUpErrors | undefined {
  if (!result.errors?.length) return undefined;
  const out: FollowUpErrors = { all: [], byId: new Map() };
  const seen = new Set<string>();
  for (const raw of result.errors as readonly GraphQLFormattedError[]) {
    const { path, locations: _l, ...rest } = raw;
    const index = path?.[0] === '_r' && typeof path[1] === 'number' ? path[1] : undefined;
    const id = index === undefined ? undefined : ids[index];
    if (id === undefined) {
      const key = JSON.stringify(rest);
      if (seen.has(key)) continue;
      seen.add(key);
      out.all.push(rest);
      continue;
    }
    const list = out.byId.get(id) ?? [];
    list.push({ ...rest, path: [rootResponseKey, responseKey, ...(path ?? []).slice(2)] });
    out.byId.set(id, list);
  }
  return out;
}

interface ProjectionContext {
  rootResponseKey: string;
  entities: Map<string, Map<string, unknown>>;
}

/**
 * Reads event data by field name, follow-up results by response key (they already carry the
 * subscriber's aliases), and swaps entity references for their follow-up objects.
 */
const projectionResolver: GraphQLFieldResolver<unknown, ProjectionContext> = (source, _args, ctx, info) => {
  if (!source || typeof source !== 'object') return undefined;
  if (responseShaped.has(source)) return (source as Record<string, unknown>)[info.path.key as string];
  const value = (source as Record<string, unknown>)[info.fieldName];
  const parent = info.path.prev;
  if (parent && parent.key === ctx.rootResponseKey && parent.prev === undefined) {
    const map = ctx.entities.get(info.path.key as string);
    if (map) {
      const id = (value as { id?: string } | null)?.id;
      return id ? (map.get(id) ?? null) : null;
    }
  }
  return value;
};

/** The `next` payload for one event: the subscriber's document executed over the event data. */
export function project(
  schema: GraphQLSchema,
  document: DocumentNode,
  plan: SubscriptionPlan,
  variables: Record<string, unknown>,
  data: unknown,
  entities: Map<string, Map<string, unknown>>,
): ExecutionResult {
  return execute({
    schema,
    document,
    operationName: plan.operation.name?.value ?? null,
    variableValues: variables,
    rootValue: { [plan.rootFieldName]: data },
    contextValue: { rootResponseKey: plan.rootResponseKey, entities } satisfies ProjectionContext,
    fieldResolver: projectionResolver,
  }) as ExecutionResult;
}
