import { describe, expect, it } from 'vitest';
import { rejectionOf } from '../../test/support/contracts.js';
import {
  COMMAND_REPLY_FILTERS,
  commandJobsWakeChannel,
  DISPATCH_PRIORITY,
  deviceCommandReplyTopic,
  deviceCommandTopic,
  dispatchJobs,
  encodeCommandMessage,
  encodeCommandReply,
  encodeGatewayCommandMessage,
  encodeGatewayCommandReply,
  encodeJobWake,
  gatewayCommandReplyTopic,
  gatewayCommandTopic,
  MAX_DISPATCH_DEVICES,
  onlineJob,
  parseCommandMessage,
  parseCommandReply,
  parseCommandsJob,
  parseGatewayCommandMessage,
  parseGatewayCommandReplies,
  parseJobWake,
  repliesJob,
} from './commands.js';
import { rejectedCount } from './contract.js';

const ID = '0b0c4a6e-2d0a-4d6f-9a57-1f0b7c3a9e10';
const DEV = '7d4f1d36-58b4-4c55-9a55-0b1c2d3e4f50';
const ORG = 'c1d2e3f4-0000-4000-8000-000000000001';
const EXPIRES = '2026-12-02T20:00:00.000Z';

describe('commands contract', () => {
  it('names the command and reply topics of devices and concentrators', () => {
    expect(deviceCommandTopic(DEV)).toBe(`devices/${DEV}/commands`);
    expect(deviceCommandReplyTopic(DEV)).toBe(`devices/${DEV}/commands/reply`);
    expect(gatewayCommandTopic(DEV)).toBe(`gateways/${DEV}/commands`);
    expect(gatewayCommandReplyTopic(DEV)).toBe(`gateways/${DEV}/commands/reply`);
    expect(COMMAND_REPLY_FILTERS).toEqual(['devices/+/commands/reply', 'gateways/+/commands/reply']);
  });

  it('parses back the command messages its builders write', () => {
    const m = { id: ID, name: 'setDim', params: { level: 40 }, expiresAt: EXPIRES };
    expect(parseCommandMessage(encodeCommandMessage(m))).toEqual(m);
    expect(parseGatewayCommandMessage(encodeGatewayCommandMessage({ ...m, serial: 'LAMP-1' }))).toEqual({ ...m, serial: 'LAMP-1' });
  });

  it('parses back replies, keeping result and error and ignoring extra properties', () => {
    expect(parseCommandReply(encodeCommandReply({ id: ID, status: 'received' }))).toEqual({ id: ID, status: 'received' });
    expect(parseCommandReply(JSON.stringify({ id: ID.toUpperCase(), status: 'succeeded', result: { level: 40 }, extra: 1 }))).toEqual({
      id: ID,
      status: 'succeeded',
      result: { level: 40 },
    });
    expect(parseCommandReply(JSON.stringify({ id: ID, status: 'failed', error: 'x'.repeat(5000) })).error).toHaveLength(1000);
  });

  it('rejects malformed replies with a reason, counting each', async () => {
    const before = await rejectedCount('commands');
    const reasonOf = (raw: string) => rejectionOf(() => parseCommandReply(raw));
    expect(reasonOf('{')).toBe('not JSON');
    expect(reasonOf('[]')).toBe('reply is not an object');
    expect(reasonOf(JSON.stringify({ id: 'abc', status: 'received' }))).toBe('id must be a command id (uuid)');
    expect(reasonOf(JSON.stringify({ id: ID, status: 'done' }))).toBe('status must be "received", "succeeded" or "failed"');
    expect(reasonOf(JSON.stringify({ id: ID, status: 'failed', error: 42 }))).toBe('error must be a string');
    expect(reasonOf(`${JSON.stringify({ id: ID, status: 'received' })}junk`)).toBe('not JSON');
    expect(await rejectedCount('commands')).toBe(before + 6);
  });

  it('rejects command messages a device could not act on', () => {
    expect(rejectionOf(() => parseCommandMessage(JSON.stringify({ id: ID, name: 'x', params: [], expiresAt: EXPIRES })))).toBe(
      'params must be an object',
    );
    expect(rejectionOf(() => parseCommandMessage(JSON.stringify({ id: ID, name: 'x', params: {}, expiresAt: 'soon' })))).toBe(
      'expiresAt must be an ISO timestamp',
    );
    expect(rejectionOf(() => parseGatewayCommandMessage(JSON.stringify({ id: ID, name: 'x', params: {}, expiresAt: EXPIRES })))).toMatch(
      /^serial/,
    );
  });

  it("keeps a concentrator's good replies and counts the bad ones", async () => {
    const before = await rejectedCount('commands');
    const raw = encodeGatewayCommandReply([
      { serial: 'A', id: ID, status: 'succeeded' },
      { serial: 'B', id: 'nope', status: 'succeeded' } as never,
    ]);
    expect(parseGatewayCommandReplies(raw)).toEqual({ replies: [{ serial: 'A', id: ID, status: 'succeeded' }], invalid: 1 });
    expect(parseGatewayCommandReplies(encodeGatewayCommandReply({ serial: 'A', id: ID, status: 'received' })).replies).toHaveLength(1);
    expect(rejectionOf(() => parseGatewayCommandReplies(JSON.stringify({ id: ID, status: 'received' })))).toMatch(/^no valid reply/);
    expect(await rejectedCount('commands')).toBeGreaterThan(before);
  });

  it('builds queue jobs that parse back, splitting long dispatch lists and dropping duplicates', () => {
    const ids = Array.from({ length: MAX_DISPATCH_DEVICES + 5 }, (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`);
    const jobs = dispatchJobs(ORG, [...ids, ids[0] as string]);
    expect(jobs.map((j) => j.data.deviceIds.length)).toEqual([MAX_DISPATCH_DEVICES, 5]);
    for (const j of jobs) expect(parseCommandsJob(j.name, j.data)).toEqual({ job: { name: 'dispatch', data: j.data }, invalid: 0 });
    const replies = repliesJob({
      orgId: ORG,
      replies: [{ deviceId: DEV, topic: deviceCommandReplyTopic(DEV), receivedAt: 1, reply: { id: ID, status: 'received' }, raw: '{}' }],
    });
    expect(parseCommandsJob(replies.name, replies.data).job).toEqual({ name: 'replies', data: replies.data });
    // replies are served before waiting dispatch jobs (no priority beats any priority in BullMQ)
    expect(replies.opts.priority).toBeUndefined();
    for (const j of jobs) expect(j.opts.priority).toBe(DISPATCH_PRIORITY);
    // a fleet job's release goes in arrival order with the replies
    expect(dispatchJobs(ORG, ids, { inOrder: true }).map((j) => j.opts.priority)).toEqual([undefined, undefined]);
    const online = onlineJob({ orgId: ORG, devices: [{ deviceId: DEV, state: { level: 3 }, at: 5 }] });
    expect(parseCommandsJob(online.name, online.data).job).toEqual({ name: 'online', data: online.data });
  });

  it('rejects unusable jobs and skips malformed entries', () => {
    expect(rejectionOf(() => parseCommandsJob('dispatch', null))).toBe('job data is not an object');
    expect(rejectionOf(() => parseCommandsJob('dispatch', { orgId: 'x', deviceIds: [] }))).toBe('orgId must be a uuid');
    expect(rejectionOf(() => parseCommandsJob('dispatch', { orgId: ORG }))).toBe('deviceIds must be an array');
    expect(rejectionOf(() => parseCommandsJob('reboot', { orgId: ORG }))).toBe('unknown job reboot');
    expect(parseCommandsJob('dispatch', { orgId: ORG, deviceIds: [DEV, 7] })).toEqual({
      job: { name: 'dispatch', data: { orgId: ORG, deviceIds: [DEV] } },
      invalid: 1,
    });
    expect(parseCommandsJob('online', { orgId: ORG, devices: [{ deviceId: DEV, state: 'on', at: 1 }] }).invalid).toBe(1);
    expect(
      parseCommandsJob('replies', { orgId: ORG, replies: [{ deviceId: DEV, topic: 't', receivedAt: 1, reply: { id: 'x' }, raw: '' }] })
        .invalid,
    ).toBe(1);
  });

  it('names the fleet-job wake channel under the prefix and parses back its message, refusing one that is not a job id', async () => {
    expect(commandJobsWakeChannel('p:')).toBe('p:command-jobs:wake');
    expect(parseJobWake(Buffer.from(encodeJobWake(ID)))).toBe(ID);
    expect(() => encodeJobWake('job-1')).toThrow(TypeError);
    const before = await rejectedCount('commands');
    expect(rejectionOf(() => parseJobWake('job-1'))).toBe('a command-job wake message is a job id');
    expect(await rejectedCount('commands')).toBe(before + 1);
  });
});
