import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resealSecrets } from '../cli/secrets.js';
import { acceptedSecrets, type Config } from '../lib/config.js';
import { handoffKey, openHandoff } from '../lib/contracts/broker-handoff.js';
import { channelSecretKey, openChannelSecret, sealChannelSecret } from '../lib/contracts/channel-secret.js';
import { ContractError } from '../lib/contracts/contract.js';
import { issueSecret } from '../lib/credential-store.js';
import { withTenant } from '../lib/db.js';
import { type DevicesFixture, devicesFixture } from './devices-fixtures.js';
import { tenant, webhookChannel } from './notifications-fixtures.js';

describe('rulr secrets reseal: moving what is stored sealed to a rotated RULR_SECRET', () => {
  let f: DevicesFixture;
  let old: Config;
  let rotated: Config;
  const NEW = randomBytes(32).toString('base64url');
  beforeAll(async () => {
    f = await devicesFixture();
    old = f.ctx.config;
    rotated = { ...old, RULR_SECRET: NEW, RULR_SECRET_PREVIOUS: [old.RULR_SECRET] };
  });
  afterAll(() => f.close());

  const opensWith = (fn: () => string) => {
    try {
      return fn();
    } catch (e) {
      if (e instanceof ContractError) return null;
      throw e;
    }
  };

  it('reseals channel secrets and broker hand-offs of a previous secret under the new one, audited, and reports what opens with none', async () => {
    const { orgId, deviceIds } = await tenant(f, 2);
    const other = await tenant(f, 0);
    // sealed before the rotation (under the old RULR_SECRET, as the fixture's configuration has it)
    const before = await webhookChannel(f, orgId, 'https://hooks.example.test/a', 'signing-secret-before-rotation');
    const otherOrgs = await webhookChannel(f, other.orgId, 'https://hooks.example.test/b', 'another-orgs-secret');
    const issued = await withTenant(f.t.db, orgId, (tx) =>
      issueSecret(tx, {
        orgId,
        deviceId: deviceIds[0] as string,
        actor: 'test',
        action: 'test',
        graceSeconds: 0,
        handoffKey: handoffKey(old.RULR_SECRET),
      }),
    );
    // one already under the new secret, and one under a secret nobody gives any more
    const fresh = await webhookChannel(f, orgId, 'https://hooks.example.test/c');
    await f.t.db
      .updateTable('notification_channels')
      .set({ secret_sealed: sealChannelSecret(channelSecretKey(NEW), orgId, fresh, 'sealed-after') })
      .where('id', '=', fresh)
      .execute();
    const lost = await webhookChannel(f, orgId, 'https://hooks.example.test/d');
    const strangerBlob = sealChannelSecret(channelSecretKey('z'.repeat(40)), orgId, lost, 'under-a-forgotten-secret');
    await f.t.db.updateTable('notification_channels').set({ secret_sealed: strangerBlob }).where('id', '=', lost).execute();

    const sealedOf = async (id: string) =>
      (await f.t.db.selectFrom('notification_channels').select('secret_sealed').where('id', '=', id).executeTakeFirstOrThrow())
        .secret_sealed as Buffer;
    const handoffOf = async () =>
      (
        await f.t.db
          .selectFrom('device_credentials')
          .select('broker_handoff')
          .where('username', '=', issued.username)
          .executeTakeFirstOrThrow()
      ).broker_handoff as Buffer;
    const blobBefore = await sealedOf(before);

    // a dry run counts and writes nothing
    const dry = await resealSecrets(rotated, { db: f.t.db, dryRun: true, quiet: true });
    expect(dry.channels).toMatchObject({ resealed: 2, current: 1, unopenable: [lost], raced: 0 });
    expect(dry.handoffs).toMatchObject({ resealed: 1, current: 0, unopenable: [] });
    expect((await sealedOf(before)).equals(blobBefore)).toBe(true);

    const r = await resealSecrets(rotated, { db: f.t.db, quiet: true });
    expect(r.channels).toMatchObject({ resealed: 2, current: 1, unopenable: [lost], raced: 0 });
    expect(r.handoffs).toMatchObject({ resealed: 1, current: 0, unopenable: [], raced: 0 });

    // what was resealed opens with the new secret alone, to the same secret, and no longer with the old one
    const newOnly = channelSecretKey(NEW);
    expect(openChannelSecret(newOnly, orgId, before, await sealedOf(before))).toBe('signing-secret-before-rotation');
    expect(openChannelSecret(newOnly, other.orgId, otherOrgs, await sealedOf(otherOrgs))).toBe('another-orgs-secret');
    const resealed = await sealedOf(before);
    expect(opensWith(() => openChannelSecret(channelSecretKey(old.RULR_SECRET), orgId, before, resealed))).toBeNull();
    expect(openHandoff(handoffKey(NEW), issued.username, await handoffOf())).toBe(issued.secret);
    // the unopenable one is left exactly as it was
    expect((await sealedOf(lost)).equals(strangerBlob)).toBe(true);

    // each reseal is audited in its own organization
    const audits = await f.t.db
      .selectFrom('audit_logs')
      .select(['org_id', 'action', 'entity_type', 'entity_id', 'actor'])
      .where('action', '=', 'secret.resealed')
      .execute();
    expect(audits).toHaveLength(3);
    expect(audits.filter((a) => a.org_id === other.orgId).map((a) => a.entity_id)).toEqual([otherOrgs]);
    expect(audits.every((a) => a.actor === 'system:cli')).toBe(true);
    expect(audits.find((a) => a.entity_type === 'device_credential')?.entity_id).toBe(deviceIds[0]);

    // a second run finds everything under the new secret
    const again = await resealSecrets(rotated, { db: f.t.db, quiet: true });
    expect(again.channels).toMatchObject({ resealed: 0, current: 3, unopenable: [lost] });
    expect(again.handoffs).toMatchObject({ resealed: 0, current: 1 });
    expect(acceptedSecrets(rotated)).toEqual([NEW, old.RULR_SECRET]);
  });
});
