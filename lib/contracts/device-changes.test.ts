import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { rejectionOf } from '../../test/support/contracts.js';
import { rejectedCount } from './contract.js';
import { type DeviceChange, deviceChangesChannel, encodeDeviceChange, MAX_NOTICE_DEVICES, parseDeviceChange } from './device-changes.js';

const ORG = randomUUID();
const DEV = randomUUID();

const reasonOf = (raw: string) => rejectionOf(() => parseDeviceChange(raw));

describe('device-change notice contract', () => {
  it('is published on one channel under the prefix', () => {
    expect(deviceChangesChannel('p:')).toBe('p:devices:changed');
  });

  it('reads back every kind it writes', () => {
    const changes: DeviceChange[] = [
      { orgId: ORG, kind: 'created', deviceIds: [DEV, randomUUID()] },
      { orgId: ORG, kind: 'updated', deviceIds: [DEV] },
      { orgId: ORG, kind: 'moved', deviceIds: [DEV] },
      { orgId: ORG, kind: 'decommissioned', deviceIds: [DEV] },
      { orgId: ORG, kind: 'credentials-rotated', deviceIds: [DEV] },
      { orgId: ORG, kind: 'profile-updated', profileId: randomUUID() },
    ];
    for (const c of changes) expect(parseDeviceChange(encodeDeviceChange(c))).toEqual(c);
    expect(parseDeviceChange(Buffer.from(encodeDeviceChange(changes[0] as DeviceChange)))).toEqual(changes[0]);
  });

  it('rejects corrupt JSON, wrong types, missing fields and unknown kinds with a reason, counting each', async () => {
    const before = await rejectedCount('device-changes');
    const n = (o: unknown) => JSON.stringify(o);
    expect(reasonOf(DEV)).toBe('not JSON');
    expect(reasonOf('*')).toBe('not JSON');
    expect(reasonOf(`${n({ orgId: ORG, kind: 'updated', deviceIds: [DEV] })}x`)).toBe('not JSON');
    expect(reasonOf(n([ORG]))).toBe('not an object');
    expect(reasonOf(n({ kind: 'updated', deviceIds: [DEV] }))).toBe('orgId must be a uuid');
    expect(reasonOf(n({ orgId: 'org', kind: 'updated', deviceIds: [DEV] }))).toBe('orgId must be a uuid');
    expect(reasonOf(n({ orgId: ORG, kind: 'deleted', deviceIds: [DEV] }))).toBe('unknown kind');
    expect(reasonOf(n({ orgId: ORG, deviceIds: [DEV] }))).toBe('unknown kind');
    expect(reasonOf(n({ orgId: ORG, kind: 'updated' }))).toMatch(/^deviceIds must be/);
    expect(reasonOf(n({ orgId: ORG, kind: 'updated', deviceIds: [] }))).toMatch(/^deviceIds must be/);
    expect(reasonOf(n({ orgId: ORG, kind: 'updated', deviceIds: [DEV, 7] }))).toMatch(/^deviceIds must be/);
    expect(reasonOf(n({ orgId: ORG, kind: 'updated', deviceIds: DEV }))).toMatch(/^deviceIds must be/);
    const many = Array.from({ length: MAX_NOTICE_DEVICES + 1 }, () => DEV);
    expect(reasonOf(n({ orgId: ORG, kind: 'updated', deviceIds: many }))).toMatch(/^deviceIds must be/);
    expect(reasonOf(n({ orgId: ORG, kind: 'profile-updated', deviceIds: [DEV] }))).toBe('profileId must be a uuid');
    expect(await rejectedCount('device-changes')).toBe(before + 14);
  });

  it('ignores unknown extra properties', () => {
    expect(parseDeviceChange(JSON.stringify({ orgId: ORG, kind: 'moved', deviceIds: [DEV], by: 'someone' }))).toEqual({
      orgId: ORG,
      kind: 'moved',
      deviceIds: [DEV],
    });
  });
});
