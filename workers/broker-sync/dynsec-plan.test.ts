import { describe, expect, it } from 'vitest';
import { DYNSEC_ROLES, dynsecRoles } from '../../lib/mqtt-policy.js';
import { type BrokerClient, defaultBatch, planClients, planRoles, savesOncePerMessage, type WantedClient } from './dynsec-plan.js';

const A = '0b0c4a6e-2d0a-4d6f-9a57-1f0b7c3a9e10';
const userA = `${A}.0a1b2c3d`;
const present = (...c: BrokerClient[]) => new Map(c.map((x) => [x.username, x]));
const wanted = (o: Partial<WantedClient> = {}): WantedClient => ({
  username: userA,
  clientid: A,
  role: DYNSEC_ROLES.device,
  credentialId: 'c1',
  ...o,
});

describe('the dynamic-security plan', () => {
  it('creates a wanted client whose secret it holds, pinned to the device id, in one command', () => {
    const p = planClients([wanted({ password: 's' })], present(), 'all');
    expect(p.commands).toEqual([
      {
        cmd: { command: 'createClient', username: userA, password: 's', clientid: A, roles: [{ rolename: DYNSEC_ROLES.device }] },
        takes: 'c1',
        harmless: ['Client already exists'],
      },
    ]);
    expect(p.unsyncable).toEqual([]);
  });

  it('counts a wanted client it cannot create for want of its secret', () => {
    const p = planClients([wanted()], present(), 'all');
    expect(p.commands).toEqual([]);
    expect(p.unsyncable.map((u) => u.username)).toEqual([userA]);
  });

  it('sends nothing for a client already as wanted, and lets its hand-off go', () => {
    const p = planClients(
      [wanted({ password: 's' })],
      present({ username: userA, clientid: A, roles: [DYNSEC_ROLES.device], disabled: false }),
      'all',
    );
    expect(p.commands).toEqual([]);
    expect(p.taken).toEqual(['c1']);
  });

  it('moves a device that became a concentrator to the gateway role, re-pins its client id and enables it', () => {
    const p = planClients(
      [wanted({ role: DYNSEC_ROLES.gateway })],
      present({ username: userA, clientid: 'other', roles: [DYNSEC_ROLES.device], disabled: true }),
      'all',
    );
    expect(p.commands.map((c) => c.cmd)).toEqual([
      { command: 'setClientId', username: userA, clientid: A },
      { command: 'addClientRole', username: userA, rolename: DYNSEC_ROLES.gateway },
      { command: 'removeClientRole', username: userA, rolename: DYNSEC_ROLES.device },
      { command: 'enableClient', username: userA },
    ]);
  });

  it('deletes managed clients nobody wants, within its scope, and never the admin or foreign clients', () => {
    const stray = `${A}.deadbeef`;
    const have = present(
      { username: stray, roles: [], disabled: false },
      { username: 'rulr-dynsec', roles: ['admin'], disabled: false },
      { username: 'operator-tool', roles: [], disabled: false },
    );
    expect(planClients([], have, 'all').commands.map((c) => c.cmd)).toEqual([{ command: 'deleteClient', username: stray }]);
    expect(planClients([], have, new Set(['someone-else'])).commands).toEqual([]);
  });

  it('makes roles exactly the policy: creates missing ones, removes and adds ACLs of drifted ones', () => {
    const roles = dynsecRoles('ingest');
    const device = roles.find((r) => r.rolename === DYNSEC_ROLES.device);
    const drifted = [...(device?.acls.slice(1) ?? []), { acltype: 'publishClientSend' as const, topic: '#', allow: true }];
    const cmds = planRoles(roles, new Map([[DYNSEC_ROLES.device, drifted]]));
    expect(cmds.filter((c) => c.command === 'createRole').map((c) => c.rolename)).toEqual([
      DYNSEC_ROLES.gateway,
      DYNSEC_ROLES.ingest,
      DYNSEC_ROLES.workers,
    ]);
    expect(cmds).toContainEqual({ command: 'removeRoleACL', rolename: DYNSEC_ROLES.device, acltype: 'publishClientSend', topic: '#' });
    expect(cmds).toContainEqual({ command: 'addRoleACL', rolename: DYNSEC_ROLES.device, ...device?.acls[0] });
    expect(planRoles(roles, new Map(roles.map((r) => [r.rolename, r.acls])))).toEqual([]);
  });
});

describe('commands per control message by broker version', () => {
  it('sends 500 to a Mosquitto that saves once per message (2.1 and newer) and 100 to 2.0 or an unknown broker', () => {
    expect(savesOncePerMessage('mosquitto version 2.1.2')).toBe(true);
    expect(savesOncePerMessage('mosquitto version 3.0.0')).toBe(true);
    expect(savesOncePerMessage('mosquitto version 2.0.11')).toBe(false);
    expect(savesOncePerMessage(undefined)).toBe(false);
    expect(savesOncePerMessage('something else')).toBe(false);
    expect(defaultBatch('mosquitto version 2.1.0')).toBe(500);
    expect(defaultBatch('mosquitto version 2.0.20')).toBe(100);
    expect(defaultBatch(undefined)).toBe(100);
  });
});
