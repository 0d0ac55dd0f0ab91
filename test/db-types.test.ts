import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCodegen } from '../scripts/db-types.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

describe('schema/db.d.ts', () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase();
  });
  afterAll(async () => {
    await t?.drop();
  });

  it('matches what kysely-codegen generates from the migrated database (run `npm run db:types` when it fails)', () => {
    const r = runCodegen(t.url, ['--verify']);
    expect(r.output).not.toMatch(/error/i);
    expect(r.status).toBe(0);
  });
});
