import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { rejectionOf } from '../../test/support/contracts.js';
import { rejectedCount } from './contract.js';
import { queuePrefix } from './queues.js';
import { parseRuleEvalJob, RULE_EVAL_JOB_OPTIONS, RULE_EVAL_QUEUE, type RuleEvalJob, ruleEvalJob } from './rule-eval.js';

const ORG = randomUUID();
const DEV = randomUUID();

describe('rule-eval queue contract', () => {
  it('builds jobs for addBulk on the rule-eval queue under the deployment prefix, retried with backoff', () => {
    const job: RuleEvalJob = { orgId: ORG, readings: [{ deviceId: DEV, metric: 'voltage', ts: 1000, value: 230 }] };
    expect(RULE_EVAL_QUEUE).toBe('rule-eval');
    expect(queuePrefix('p:')).toBe('p:bull');
    expect(ruleEvalJob(job)).toEqual({ name: 'batch', data: job, opts: RULE_EVAL_JOB_OPTIONS });
    expect(RULE_EVAL_JOB_OPTIONS.attempts).toBeGreaterThan(1);
  });

  it('reads back the job it builds, text readings included', () => {
    const job: RuleEvalJob = {
      orgId: ORG,
      readings: [
        { deviceId: DEV, metric: 'voltage', ts: 1000, value: 230 },
        { deviceId: DEV, metric: 'mode', ts: 1000, value: null },
      ],
    };
    // as BullMQ hands it over: JSON text parsed back
    expect(parseRuleEvalJob(JSON.parse(JSON.stringify(ruleEvalJob(job).data)))).toEqual({ job, invalid: 0 });
  });

  it('rejects an unusable job with a reason and counts it', async () => {
    const before = await rejectedCount('rule-eval');
    const reasonOf = (data: unknown) => rejectionOf(() => parseRuleEvalJob(data));
    expect(reasonOf(null)).toBe('job data is not an object');
    expect(reasonOf('{"orgId"}')).toBe('job data is not an object');
    expect(reasonOf({ readings: [] })).toBe('orgId must be a uuid');
    expect(reasonOf({ orgId: 'not-a-uuid', readings: [] })).toBe('orgId must be a uuid');
    expect(reasonOf({ orgId: ORG, readings: 'x' })).toBe('readings must be an array');
    expect(await rejectedCount('rule-eval')).toBe(before + 5);
  });

  it('skips and counts malformed readings and keeps the good ones', async () => {
    const good = { deviceId: DEV, metric: 'voltage', ts: 5, value: 999 };
    const bad = [
      { ...good, deviceId: 'nope' },
      { ...good, metric: 7 },
      { ...good, ts: 'x' },
      { ...good, ts: -1 },
      { ...good, value: '999' },
      { ...good, value: true },
      { ...good, value: Number.NaN },
      { deviceId: DEV, metric: 'voltage', ts: 5 },
      null,
    ];
    const before = await rejectedCount('rule-eval');
    expect(parseRuleEvalJob({ orgId: ORG, readings: [good, ...bad, good], extra: 'ignored' })).toEqual({
      job: { orgId: ORG, readings: [good, good] },
      invalid: bad.length,
    });
    expect(await rejectedCount('rule-eval')).toBe(before + bad.length);
  });
});
