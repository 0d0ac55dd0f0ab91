import { audit } from '../lib/audit.js';
import { acceptedSecrets, type Config } from '../lib/config.js';
import { handoffKeys, openHandoffWith, sealHandoff } from '../lib/contracts/broker-handoff.js';
import { channelSecretKeys, openChannelSecretWith, sealChannelSecret } from '../lib/contracts/channel-secret.js';
import { ContractError } from '../lib/contracts/contract.js';
import { createDb, type Db } from '../lib/db.js';

/** What one kind of sealed value came to. */
export interface ResealCount {
  /** opened with a previous secret and sealed again under RULR_SECRET */
  resealed: number;
  /** already sealed under RULR_SECRET */
  current: number;
  /** opened with no accepted secret (sealed under a secret no longer given, or altered): left as they are */
  unopenable: string[];
  /** changed by someone else between the read and the write (run again) */
  raced: number;
}

export interface ResealResult {
  channels: ResealCount;
  handoffs: ResealCount;
}

const empty = (): ResealCount => ({ resealed: 0, current: 0, unopenable: [], raced: 0 });

/**
 * `rulr secrets reseal`: after RULR_SECRET was rotated (the new one in RULR_SECRET, the old ones in
 * RULR_SECRET_PREVIOUS), seals every stored secret that still opens only with a previous one again
 * under RULR_SECRET: notification channels' signing secrets (`notification_channels.secret_sealed`)
 * and the broker hand-offs the dynamic-security sync has not taken yet
 * (`device_credentials.broker_handoff`). Each row is rewritten only if it still holds what was
 * read (an admin's change meanwhile wins), with an audit row in its organization
 * (`secret.resealed`, actor `system:cli`), so after it and once the longest-lived tokens signed with
 * the old secret have expired, RULR_SECRET_PREVIOUS can be emptied. `dryRun` counts and writes
 * nothing. Runs as the database owner (it reads every organization's rows, as migrations do).
 */
export async function resealSecrets(
  cfg: Config,
  o: { db?: Db | undefined; dryRun?: boolean | undefined; quiet?: boolean | undefined } = {},
): Promise<ResealResult> {
  const secrets = acceptedSecrets(cfg);
  const db = o.db ?? createDb({ url: cfg.DATABASE_URL, poolSize: 1 });
  const out: ResealResult = { channels: empty(), handoffs: empty() };
  try {
    const channelKeys = channelSecretKeys(secrets);
    const channels = await db
      .selectFrom('notification_channels')
      .select(['id', 'org_id', 'secret_sealed'])
      .where('secret_sealed', 'is not', null)
      .execute();
    for (const c of channels) {
      const blob = c.secret_sealed as Buffer;
      const opened = tryOpen(() => openChannelSecretWith(channelKeys, c.org_id, c.id, blob));
      if (!opened) out.channels.unopenable.push(c.id);
      else if (opened.keyIndex === 0) out.channels.current++;
      else if (o.dryRun) out.channels.resealed++;
      else {
        const sealed = sealChannelSecret(channelKeys[0] as Buffer, c.org_id, c.id, opened.secret);
        const done = await db.transaction().execute(async (tx) => {
          const u = await tx
            .updateTable('notification_channels')
            .set({ secret_sealed: sealed })
            .where('id', '=', c.id)
            .where('secret_sealed', '=', blob)
            .executeTakeFirst();
          if (Number(u.numUpdatedRows) === 0) return false;
          await audit(tx, c.org_id, 'system:cli', 'secret.resealed', 'notification_channel', c.id, null, { keyIndex: opened.keyIndex });
          return true;
        });
        if (done) out.channels.resealed++;
        else out.channels.raced++;
      }
    }

    const handoff = handoffKeys(secrets);
    const credentials = await db
      .selectFrom('device_credentials')
      .select(['id', 'org_id', 'device_id', 'username', 'broker_handoff'])
      .where('broker_handoff', 'is not', null)
      .execute();
    for (const c of credentials) {
      const blob = c.broker_handoff as Buffer;
      const opened = tryOpen(() => openHandoffWith(handoff, c.username, blob));
      if (!opened) out.handoffs.unopenable.push(c.username);
      else if (opened.keyIndex === 0) out.handoffs.current++;
      else if (o.dryRun) out.handoffs.resealed++;
      else {
        const sealed = sealHandoff(handoff[0] as Buffer, c.username, opened.secret);
        const done = await db.transaction().execute(async (tx) => {
          const u = await tx
            .updateTable('device_credentials')
            .set({ broker_handoff: sealed })
            .where('id', '=', c.id)
            .where('broker_handoff', '=', blob)
            .executeTakeFirst();
          if (Number(u.numUpdatedRows) === 0) return false;
          await audit(tx, c.org_id, 'system:cli', 'secret.resealed', 'device_credential', c.device_id, null, {
            username: c.username,
            keyIndex: opened.keyIndex,
          });
          return true;
        });
        if (done) out.handoffs.resealed++;
        else out.handoffs.raced++;
      }
    }
  } finally {
    if (!o.db) await db.destroy();
  }
  if (!o.quiet) {
    const line = (name: string, c: ResealCount) =>
      `${name}: ${c.resealed} ${o.dryRun ? 'to reseal' : 'resealed'}, ${c.current} already under RULR_SECRET, ${c.unopenable.length} open with no accepted secret${c.unopenable.length ? ` (${c.unopenable.slice(0, 20).join(', ')}${c.unopenable.length > 20 ? ', …' : ''})` : ''}${c.raced ? `, ${c.raced} changed meanwhile (run again)` : ''}`;
    console.log(line('notification channel secrets', out.channels));
    console.log(line('broker hand-offs', out.handoffs));
    if (out.channels.unopenable.length || out.handoffs.unopenable.length) {
      console.log(
        'values that open with no accepted secret stay as they are: a channel needs its secret set again, a device credential rotated (docs/operations.md, "Rotating RULR_SECRET")',
      );
    }
  }
  return out;
}

function tryOpen<T>(open: () => T): T | undefined {
  try {
    return open();
  } catch (e) {
    if (e instanceof ContractError) return undefined;
    throw e;
  }
}
