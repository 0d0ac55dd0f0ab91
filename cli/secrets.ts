import { audit } from '../lib/audit.js';
import { acceptedSecrets, type Config } from '../lib/config.js';
import { handoffKeys, openHandoffWith, sealHandoff } from '../lib/contracts/broker-handoff.js';
import { channelSecretKeys, openChannelSecretWith, sealChannelSecret } from '../lib/contracts/channel-secret.js';
import { ContractError } from '../lib/contracts/contract.js';
import { createDb, type Db, type Tx } from '../lib/db.js';

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
      await reseal(db, out.channels, o.dryRun, {
        name: c.id,
        open: () => openChannelSecretWith(channelKeys, c.org_id, c.id, blob),
        write: (tx, secret) =>
          tx
            .updateTable('notification_channels')
            .set({ secret_sealed: sealChannelSecret(channelKeys[0] as Buffer, c.org_id, c.id, secret) })
            .where('id', '=', c.id)
            .where('secret_sealed', '=', blob)
            .executeTakeFirst(),
        audit: { orgId: c.org_id, entityType: 'notification_channel', entityId: c.id, detail: {} },
      });
    }

    const handoff = handoffKeys(secrets);
    const credentials = await db
      .selectFrom('device_credentials')
      .select(['id', 'org_id', 'device_id', 'username', 'broker_handoff'])
      .where('broker_handoff', 'is not', null)
      .execute();
    for (const c of credentials) {
      const blob = c.broker_handoff as Buffer;
      await reseal(db, out.handoffs, o.dryRun, {
        name: c.username,
        open: () => openHandoffWith(handoff, c.username, blob),
        write: (tx, secret) =>
          tx
            .updateTable('device_credentials')
            .set({ broker_handoff: sealHandoff(handoff[0] as Buffer, c.username, secret) })
            .where('id', '=', c.id)
            .where('broker_handoff', '=', blob)
            .executeTakeFirst(),
        audit: { orgId: c.org_id, entityType: 'device_credential', entityId: c.device_id, detail: { username: c.username } },
      });
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

/** One sealed value: opened with the accepted keys, then counted, or sealed again under the first key in place (compare-and-set) with its audit row. */
async function reseal(
  db: Db,
  count: ResealCount,
  dryRun: boolean | undefined,
  v: {
    name: string;
    open: () => { secret: string; keyIndex: number };
    /** the compare-and-set update of the row with `secret` sealed under the current key */
    write: (tx: Tx, secret: string) => Promise<{ numUpdatedRows: bigint }>;
    audit: { orgId: string; entityType: string; entityId: string; detail: Record<string, unknown> };
  },
): Promise<void> {
  const opened = tryOpen(v.open);
  if (!opened) count.unopenable.push(v.name);
  else if (opened.keyIndex === 0) count.current++;
  else if (dryRun) count.resealed++;
  else {
    const done = await db.transaction().execute(async (tx) => {
      if (Number((await v.write(tx, opened.secret)).numUpdatedRows) === 0) return false;
      const a = v.audit;
      await audit(tx, a.orgId, 'system:cli', 'secret.resealed', a.entityType, a.entityId, null, { ...a.detail, keyIndex: opened.keyIndex });
      return true;
    });
    if (done) count.resealed++;
    else count.raced++;
  }
}

function tryOpen<T>(open: () => T): T | undefined {
  try {
    return open();
  } catch (e) {
    if (e instanceof ContractError) return undefined;
    throw e;
  }
}
