import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type FieldDefinitionNode, Kind, type ObjectTypeDefinitionNode, parse, type TypeNode } from 'graphql';
import { describe, expect, it } from 'vitest';
import { SUBGRAPH_NAMES, sdlPath } from '../lib/subgraphs.js';

// The rule of docs/decisions.md ("A subgraph outage degrades a page, never blanks it"), checked on
// the subgraphs' own SDLs so that a new field or subgraph cannot break it unnoticed.

const root = fileURLToPath(new URL('..', import.meta.url));

interface TypeIn {
  subgraph: string;
  def: ObjectTypeDefinitionNode;
}

const types = new Map<string, TypeIn[]>();
for (const name of SUBGRAPH_NAMES) {
  for (const d of parse(readFileSync(`${root}/${sdlPath(name)}`, 'utf8')).definitions) {
    if (d.kind !== Kind.OBJECT_TYPE_DEFINITION && d.kind !== Kind.OBJECT_TYPE_EXTENSION) continue;
    const list = types.get(d.name.value) ?? [];
    list.push({ subgraph: name, def: d as ObjectTypeDefinitionNode });
    types.set(d.name.value, list);
  }
}

const isEntity = (t: TypeIn) => (t.def.directives ?? []).some((d) => d.name.value === 'key');
/** The subgraph that owns an entity: the one whose definition holds the most fields. */
const owner = (name: string) =>
  [...(types.get(name) ?? [])].sort((a, b) => (b.def.fields?.length ?? 0) - (a.def.fields?.length ?? 0))[0]?.subgraph;
const entities = new Set([...types].filter(([, defs]) => defs.some(isEntity)).map(([n]) => n));

const namedType = (t: TypeNode): string => (t.kind === Kind.NAMED_TYPE ? t.name.value : namedType(t.type));
/** Whether the field, or any list level of it, is non-null. */
function anyNonNull(t: TypeNode): boolean {
  if (t.kind === Kind.NON_NULL_TYPE) return true;
  return t.kind === Kind.LIST_TYPE ? anyNonNull(t.type) : false;
}
const keyFields = (t: TypeIn) =>
  new Set(
    (t.def.directives ?? [])
      .filter((d) => d.name.value === 'key')
      .flatMap((d) => d.arguments?.find((a) => a.name.value === 'fields'))
      .flatMap((a) => (a?.value.kind === Kind.STRING ? a.value.value.split(/\s+/) : [])),
  );

function fieldsWhere(pick: (type: string, t: TypeIn, f: FieldDefinitionNode) => boolean): string[] {
  const out: string[] = [];
  for (const [type, defs] of types)
    for (const t of defs) for (const f of t.def.fields ?? []) if (pick(type, t, f)) out.push(`${t.subgraph}: ${type}.${f.name.value}`);
  return out;
}

describe('fields whose value another subgraph supplies are nullable', () => {
  it('finds the entities the subgraphs share', () => {
    expect(owner('Device')).toBe('devices');
    expect(owner('Alarm')).toBe('alarms');
    expect(owner('Rule')).toBe('rules');
    for (const e of ['Device', 'Site', 'DeviceProfile', 'Alarm', 'Rule']) expect(entities.has(e), e).toBe(true);
  });

  it('makes every field a subgraph adds to an entity another owns nullable (Device.activeAlarmCount, Device.status, …)', () => {
    const bad = fieldsWhere(
      (type, t, f) =>
        entities.has(type) && owner(type) !== t.subgraph && !keyFields(t).has(f.name.value) && f.type.kind === Kind.NON_NULL_TYPE,
    );
    expect(bad).toEqual([]);
  });

  it('makes every field that returns an entity another subgraph owns nullable, list items included (Alarm.device, …)', () => {
    const bad = fieldsWhere((_type, t, f) => {
      const target = namedType(f.type);
      return entities.has(target) && owner(target) !== t.subgraph && anyNonNull(f.type);
    });
    expect(bad).toEqual([]);
  });

  it('makes every entity a subscription event carries nullable (it is read when the event is delivered)', () => {
    const eventTypes = new Set(
      fieldsWhere((type) => type === 'Subscription').map((f) => {
        const [subgraph, field] = f.split(': Subscription.') as [string, string];
        const def = types
          .get('Subscription')
          ?.find((t) => t.subgraph === subgraph)
          ?.def.fields?.find((x) => x.name.value === field);
        return namedType(def!.type);
      }),
    );
    expect([...eventTypes].sort()).toEqual(['AlarmEvent', 'CommandEvent', 'CommandJobEvent', 'DeviceStatusEvent', 'TelemetryEvent']);
    const bad = fieldsWhere((type, _t, f) => eventTypes.has(type) && entities.has(namedType(f.type)) && anyNonNull(f.type));
    expect(bad).toEqual([]);
  });

  it('makes every Query root field nullable, so one subgraph cannot take the others down with it', () => {
    expect(fieldsWhere((type, _t, f) => type === 'Query' && f.type.kind === Kind.NON_NULL_TYPE)).toEqual([]);
  });
});
