import { describe, expect, it } from 'vitest';
import { ContractError, rejectedCount } from './contract.js';
import {
  NOTIFY_JOB_OPTIONS,
  NOTIFY_QUEUE,
  notificationRequest,
  notifyJob,
  notifyJobId,
  parseNotificationRequest,
  severityRank,
} from './notifications.js';

const ORG = '0a1b2c3d-4e5f-6789-abcd-ef0123456789';
const ALARM = '12345678-9abc-def0-1234-56789abcdef0';
const SITE = '22345678-9abc-def0-1234-56789abcdef0';

const input = {
  orgId: ORG,
  source: { kind: 'alarm' as const, id: ALARM },
  event: 'alarm.raised' as const,
  siteId: SITE,
  severity: 'major' as const,
  variables: { device: 'lamp 1', value: 3.5, dark: true, note: null },
  dedupKey: `alarm:${ALARM}:raised`,
  groupKey: `${SITE}:rule`,
  at: 1_700_000_000_000,
};

describe('notification contract', () => {
  it('builds a job with defaults that parses back, keyed by organization and dedup key', () => {
    const job = notifyJob(input);
    expect(NOTIFY_QUEUE).toBe('notify');
    expect(job.name).toBe('notify');
    expect(job.opts).toMatchObject({ ...NOTIFY_JOB_OPTIONS, jobId: notifyJobId(ORG, input.dedupKey) });
    expect(job.data.templateKey).toBe('alarm.raised');
    expect(job.data.recipients).toEqual({ rules: true, roles: [], userIds: [], channelIds: [] });
    expect(parseNotificationRequest(JSON.parse(JSON.stringify(job.data)))).toEqual(job.data);
  });

  it('gives the same job id for the same key and a different one otherwise, without colons', () => {
    expect(notifyJobId(ORG, 'a')).toBe(notifyJobId(ORG, 'a'));
    expect(notifyJobId(ORG, 'a')).not.toBe(notifyJobId(ORG, 'b'));
    expect(notifyJobId(ORG, 'a')).not.toBe(notifyJobId(SITE, 'a'));
    expect(notifyJobId(ORG, 'a:b')).toMatch(/^n-[0-9a-f]{32}$/);
  });

  it('ranks severities from critical down', () => {
    expect(severityRank('critical')).toBeGreaterThan(severityRank('major'));
    expect(severityRank('warning')).toBeGreaterThan(severityRank('indeterminate'));
  });

  it('rejects bad fields by name and counts them, without echoing values', async () => {
    const good = notificationRequest(input);
    const before = await rejectedCount('notification');
    const cases: [unknown, RegExp][] = [
      ['nope', /job/],
      [{ ...good, orgId: 'x' }, /orgId/],
      [{ ...good, source: { kind: 'device', id: ALARM } }, /source\.kind/],
      [{ ...good, severity: 'huge' }, /severity/],
      [{ ...good, templateKey: 'Bad Key' }, /templateKey/],
      [{ ...good, variables: { 'bad-name': 1 } }, /variables/],
      [{ ...good, variables: { v: { nested: 1 } } }, /variables\.v/],
      [{ ...good, recipients: { ...good.recipients, roles: ['owner'] } }, /recipients\.roles/],
      [{ ...good, dedupKey: '' }, /dedupKey/],
      [{ ...good, at: -1 }, /at/],
      [{ ...good, siteId: undefined }, /siteId/],
    ];
    for (const [data, reason] of cases) {
      let err: unknown;
      try {
        parseNotificationRequest(data);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ContractError);
      expect((err as Error).message).toMatch(reason);
      expect((err as Error).message).not.toContain('huge');
    }
    expect(await rejectedCount('notification')).toBe(before + cases.length);
  });

  it('ignores unknown extra properties', () => {
    const parsed = parseNotificationRequest({ ...notificationRequest(input), future: 1 });
    expect(parsed).not.toHaveProperty('future');
    expect(parsed.dedupKey).toBe(input.dedupKey);
  });
});
