import { describe, expect, it } from 'vitest';
import { bumpProgramsVersion, parseProgramsVersion, programsVersionKey } from './program-state.js';

describe('program state contract', () => {
  it('names the version counter per organization and reads back what INCR wrote', async () => {
    expect(programsVersionKey('p:', 'o1')).toBe('p:programs:ver:o1');
    const store = new Map<string, number>();
    const redis = {
      incr: async (k: string) => {
        store.set(k, (store.get(k) ?? 0) + 1);
        return store.get(k) as number;
      },
    };
    await bumpProgramsVersion(redis, 'p:', 'o1');
    await bumpProgramsVersion(redis, 'p:', 'o1');
    expect(parseProgramsVersion(String(store.get('p:programs:ver:o1')))).toBe(2);
  });

  it('reads a missing counter as 0 and a corrupt one as changed', () => {
    expect(parseProgramsVersion(null)).toBe(0);
    expect(parseProgramsVersion('7')).toBe(7);
    expect(parseProgramsVersion('seven')).toBe(-1);
    expect(parseProgramsVersion('-3')).toBe(-1);
  });
});
