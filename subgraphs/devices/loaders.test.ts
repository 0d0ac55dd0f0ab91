import { describe, expect, it } from 'vitest';
import { PeekLoader } from './loaders.js';

describe('PeekLoader', () => {
  it('answers synchronously with what it holds, and with a promise otherwise', async () => {
    const batches: string[][] = [];
    const l = new PeekLoader<{ id: string }>(async (keys) => {
      batches.push([...keys]);
      return keys.map((k) => (k === 'missing' ? null : { id: k }));
    });
    l.prime('a', { id: 'a' });
    expect(l.get('a')).toEqual({ id: 'a' });
    const b = l.get('b');
    expect(b).toBeInstanceOf(Promise);
    expect(await b).toEqual({ id: 'b' });
    // loaded once, then held; a known miss is held as null
    expect(l.get('b')).toEqual({ id: 'b' });
    expect(await l.get('missing')).toBeNull();
    expect(l.get('missing')).toBeNull();
    expect(batches).toEqual([['b'], ['missing']]);
  });

  it('forgets on clear and never lets a later prime overwrite a held value (like DataLoader)', async () => {
    const l = new PeekLoader<{ v: number }>(async (keys) => keys.map(() => ({ v: 2 })));
    l.prime('k', { v: 1 });
    l.prime('k', { v: 3 });
    expect(l.get('k')).toEqual({ v: 1 });
    expect(await l.load('k')).toEqual({ v: 1 });
    l.clear('k');
    const again = l.get('k');
    expect(again).toBeInstanceOf(Promise);
    expect(await again).toEqual({ v: 2 });
    l.clearAll();
    expect(l.get('k')).toBeInstanceOf(Promise);
    l.prime('e', new Error('boom'));
    const failed = l.get('e');
    expect(failed).toBeInstanceOf(Promise);
    await expect(failed).rejects.toThrow('boom');
  });
});
