import { describe, expect, it } from 'vitest';
import { siteLabel, sitePathIds } from './sites.js';

describe('site paths', () => {
  it('encodes a site id as an ltree label and reads site ids back from a path', () => {
    expect(siteLabel('aa-bb')).toBe('aa_bb');
    expect(sitePathIds('aa_bb.cc_dd')).toEqual(['aa-bb', 'cc-dd']);
    expect(sitePathIds(null)).toEqual([]);
  });
});
