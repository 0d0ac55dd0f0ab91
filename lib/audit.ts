import type { Tx } from './db.js';
import type { Identity } from './identity.js';

/** How audit rows and history entries name who acted: `user:<id>`, `apikey:<id>`, `system:<name>`. */
export const actorOf = (i: Identity) => `${i.kind}:${i.subject}`;

/** One `audit_logs` row, written in the transaction of the change it records. */
export async function audit(
  tx: Tx,
  orgId: string,
  actor: string,
  action: string,
  entityType: string,
  entityId: string | null,
  before: unknown,
  after: unknown,
): Promise<void> {
  await tx
    .insertInto('audit_logs')
    .values({
      org_id: orgId,
      actor,
      action,
      entity_type: entityType,
      entity_id: entityId,
      before: before == null ? null : JSON.stringify(before),
      after: after == null ? null : JSON.stringify(after),
    })
    .execute();
}
