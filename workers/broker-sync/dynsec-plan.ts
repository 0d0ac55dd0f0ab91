import { CREDENTIAL_USERNAME } from '../../lib/device-credentials.js';
import { DYNSEC_ROLES, type DynsecAcl, type DynsecRole } from '../../lib/mqtt-policy.js';
import type { DynsecCommand } from './dynsec-client.js';

/**
 * What the dynamic-security sync decides, without I/O: the commands that turn what the broker has
 * into what the platform wants. Pure, so the decisions are tested directly (dynsec-plan.test.ts).
 */

/** A client the platform wants at the broker. */
export interface WantedClient {
  username: string;
  /** the MQTT client id it is pinned to (a device's id); none for service accounts */
  clientid?: string;
  role: string;
  /** the secret, when the platform has it (a hand-off not yet taken, a service's configured password) */
  password?: string;
  /** a device credential whose hand-off is cleared once the client exists */
  credentialId?: string;
}

/** A client as the broker reports it (`listClients`/`getClient` with `verbose`). */
export interface BrokerClient {
  username: string;
  clientid?: string;
  roles: string[];
  disabled: boolean;
}

/** One planned command, and the hand-off it takes when it succeeds. */
export interface PlannedCommand {
  cmd: DynsecCommand;
  /** the credential whose hand-off is cleared once this command succeeded */
  takes?: string;
  /** errors that mean the broker already is as wanted */
  harmless?: string[];
}

export interface Plan {
  commands: PlannedCommand[];
  /** credentials whose client already exists: their hand-off can go */
  taken: string[];
  /** wanted device clients missing at the broker for which the platform holds no secret */
  unsyncable: WantedClient[];
}

/** Device credential usernames: the clients the sync owns (it never touches the admin or an operator's own clients). */
export const isManaged = (username: string) => CREDENTIAL_USERNAME.test(username);

const DEVICE_ROLES = new Set<string>([DYNSEC_ROLES.device, DYNSEC_ROLES.gateway]);

/**
 * The commands for the clients in `scope` (every managed username, or only those named): create
 * what is wanted and missing (when its secret is known), align roles, client id and enabled state of
 * what exists, delete managed clients nobody wants. `setPasswords` also (re)sets the password of
 * wanted clients that exist and whose password is known (service accounts at start).
 */
export function planClients(
  wanted: WantedClient[],
  present: Map<string, BrokerClient>,
  scope: 'all' | Set<string>,
  setPasswords = false,
): Plan {
  const commands: PlannedCommand[] = [];
  const unsyncable: WantedClient[] = [];
  const taken: string[] = [];
  const want = new Map(wanted.map((w) => [w.username, w]));
  for (const w of wanted) {
    const have = present.get(w.username);
    if (!have) {
      if (w.password === undefined) {
        unsyncable.push(w);
        continue;
      }
      commands.push({
        cmd: {
          command: 'createClient',
          username: w.username,
          password: w.password,
          ...(w.clientid ? { clientid: w.clientid } : {}),
          roles: [{ rolename: w.role }],
        },
        ...(w.credentialId ? { takes: w.credentialId } : {}),
        harmless: ['Client already exists'],
      });
      continue;
    }
    if (w.credentialId && w.password !== undefined) taken.push(w.credentialId);
    if (setPasswords && w.password !== undefined)
      commands.push({ cmd: { command: 'setClientPassword', username: w.username, password: w.password } });
    if (w.clientid && have.clientid !== w.clientid)
      commands.push({ cmd: { command: 'setClientId', username: w.username, clientid: w.clientid } });
    if (!have.roles.includes(w.role)) commands.push({ cmd: { command: 'addClientRole', username: w.username, rolename: w.role } });
    for (const r of have.roles) {
      if (r !== w.role && (DEVICE_ROLES.has(r) || r === DYNSEC_ROLES.ingest || r === DYNSEC_ROLES.workers)) {
        commands.push({ cmd: { command: 'removeClientRole', username: w.username, rolename: r } });
      }
    }
    if (have.disabled) commands.push({ cmd: { command: 'enableClient', username: w.username } });
  }
  const inScope = (u: string) => (scope === 'all' ? true : scope.has(u));
  for (const u of present.keys()) {
    if (isManaged(u) && inScope(u) && !want.has(u))
      commands.push({ cmd: { command: 'deleteClient', username: u }, harmless: ['Client not found'] });
  }
  return { commands, taken, unsyncable };
}

const aclKey = (a: Pick<DynsecAcl, 'acltype' | 'topic' | 'allow'>) => `${a.acltype}\u0000${a.topic}\u0000${a.allow}`;

/** The commands that make the broker's roles (`null`: missing) exactly the policy's. */
export function planRoles(roles: DynsecRole[], present: Map<string, DynsecAcl[] | null>): DynsecCommand[] {
  const out: DynsecCommand[] = [];
  for (const role of roles) {
    const have = present.get(role.rolename);
    if (!have) {
      out.push({ command: 'createRole', rolename: role.rolename, acls: role.acls });
      continue;
    }
    const want = new Set(role.acls.map(aclKey));
    const got = new Set(have.map(aclKey));
    for (const a of have)
      if (!want.has(aclKey(a))) out.push({ command: 'removeRoleACL', rolename: role.rolename, acltype: a.acltype, topic: a.topic });
    for (const a of role.acls) if (!got.has(aclKey(a))) out.push({ command: 'addRoleACL', rolename: role.rolename, ...a });
  }
  return out;
}

/**
 * Whether a Mosquitto version (`$SYS/broker/version`, e.g. "mosquitto version 2.1.2") saves its
 * dynamic-security file once per control message (2.1 and newer) rather than after every command
 * (2.0). Unknown versions count as 2.0.
 */
export function savesOncePerMessage(version: string | undefined): boolean {
  const m = /(\d+)\.(\d+)/.exec(version ?? '');
  if (!m) return false;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major > 2 || (major === 2 && minor >= 1);
}

/**
 * Commands per control message when DYNSEC_BATCH is unset. Mosquitto answers a control message in
 * one go, serving nobody else meanwhile: on 2.0 every command rewrites the whole file (62 ms each
 * at 10,000 clients), so a message stays small; 2.1 writes once per message and spends about a
 * millisecond per created client (its password hash), so 500 commands hold it for under a second
 * and a 10,000-device sync is 20 writes.
 */
export const defaultBatch = (version: string | undefined): number => (savesOncePerMessage(version) ? 500 : 100);
