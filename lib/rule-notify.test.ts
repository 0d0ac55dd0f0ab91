import { describe, expect, it } from 'vitest';
import { notifyJob, parseNotificationRequest } from './contracts/notifications.js';
import { parseRuleNotify, ruleNotification } from './rule-notify.js';

const ORG = '00000000-0000-4000-8000-000000000001';
const RULE = '00000000-0000-4000-8000-000000000002';
const change = (c: 'raised' | 'cleared', onClear = false) => ({
  orgId: ORG,
  ruleId: RULE,
  notify: parseRuleNotify({ roles: ['operator'], onClear }) as NonNullable<ReturnType<typeof parseRuleNotify>>,
  change: c,
  alarm: {
    id: '00000000-0000-4000-8000-000000000003',
    deviceId: '00000000-0000-4000-8000-000000000004',
    type: 'Dark lamp',
    severity: 'major' as const,
    value: 2,
    message: 'power < 5 for 10 min',
  },
  siteId: '00000000-0000-4000-8000-000000000005',
  at: 1_800_000_000_000,
});

describe('a rule’s notify action', () => {
  it('fills its defaults and refuses bad values', () => {
    expect(parseRuleNotify({})).toEqual({ rules: true, roles: [], userIds: [], templateKey: null, onClear: false });
    expect(parseRuleNotify(null)).toBeNull();
    expect(() => parseRuleNotify({ roles: ['root'] })).toThrow();
    expect(() => parseRuleNotify({ templateKey: 'Bad Key' })).toThrow();
  });

  it('builds a valid notify request per alarm change, keyed by alarm and change, grouped by site and rule', () => {
    const input = ruleNotification(change('raised'));
    expect(input).not.toBeNull();
    const job = notifyJob(input as NonNullable<typeof input>);
    const req = parseNotificationRequest(job.data);
    expect(req).toMatchObject({
      event: 'rule.notify',
      source: { kind: 'rule', id: RULE },
      severity: 'major',
      recipients: { rules: true, roles: ['operator'], userIds: [], channelIds: [] },
      dedupKey: `rule:${RULE}:alarm:00000000-0000-4000-8000-000000000003:raised`,
      groupKey: `site:00000000-0000-4000-8000-000000000005:rule:${RULE}`,
    });
    expect(notifyJob(input as NonNullable<typeof input>).opts.jobId).toBe(job.opts.jobId);
  });

  it('notifies a clear only when the rule asks for it', () => {
    expect(ruleNotification(change('cleared'))).toBeNull();
    expect(ruleNotification(change('cleared', true))?.dedupKey).toMatch(/:cleared$/);
  });
});
