import { describe, expect, it } from 'vitest';
import { abortReason, activeOf, currentRate, emptyProgress, MAX_ROLLOUT_PER_MINUTE, progressOf, releasable } from './command-jobs.js';

const at = new Date('2026-01-01T00:00:00Z');
const later = (ms: number) => new Date(at.getTime() + ms);

describe('fleet job progress', () => {
  it('counts unreleased devices as queued while the job may release them, and as canceled once it stopped', () => {
    const counts = { QUEUED: 2, SENT: 1, SUCCEEDED: 5, FAILED: 1, CANCELED: 1 };
    const running = progressOf(counts, { total: 20, released: 10, status: 'RUNNING' });
    expect(running).toEqual({ total: 20, queued: 12, sent: 1, delivered: 0, succeeded: 5, failed: 1, expired: 0, canceled: 1 });
    expect(progressOf(counts, { total: 20, released: 10, status: 'PAUSED' }).queued).toBe(12);
    const aborted = progressOf(counts, { total: 20, released: 10, status: 'ABORTED' });
    expect(aborted).toMatchObject({ queued: 2, canceled: 11 });
    expect(activeOf(aborted)).toBe(3);
    expect(progressOf({}, { total: 0, released: 0, status: 'COMPLETED' })).toEqual(emptyProgress());
  });
});

describe('fleet job abort rule', () => {
  const p = (succeeded: number, failed: number, expired = 0) => ({ ...emptyProgress(), succeeded, failed, expired });

  it('waits for minDevices ended commands before judging', () => {
    expect(abortReason(p(0, 9), { failedPercent: 10, minDevices: 10 })).toBeNull();
    expect(abortReason(p(1, 9), { failedPercent: 10, minDevices: 10 })).toMatch(/^9 of 10 ended commands failed or expired \(90 %\)/);
  });

  it('aborts at the threshold, counting timeouts and expiries as failures and ignoring cancels', () => {
    const rule = { failedPercent: 5, minDevices: 20 };
    expect(abortReason(p(96, 4), rule)).toBeNull();
    expect(abortReason(p(95, 4, 1), rule)).toMatch(/5 of 100 .* \(5 %\), at or above the abort threshold of 5 % after at least 20 devices/);
    expect(abortReason({ ...p(96, 4), canceled: 50 }, rule)).toBeNull();
    expect(abortReason(p(0, 100), null)).toBeNull();
  });
});

describe('fleet job rollout', () => {
  const rate = (perMinute: number | null, increase: { factor: number; every: number } | null = null) => ({ perMinute, increase });

  it('releases a full slice per tick without a rate, bounded by what remains', () => {
    expect(releasable(rate(null), { credit: 1, at }, { now: at, succeeded: 0, remaining: 10_000 })).toEqual({ count: 2000, credit: 1 });
    expect(releasable(rate(null), { credit: 1, at }, { now: at, succeeded: 0, remaining: 7, slice: 5 }).count).toBe(5);
    expect(releasable(rate(null), { credit: 1, at }, { now: at, succeeded: 0, remaining: 3 }).count).toBe(3);
  });

  it('fills a bucket at the rate, keeping fractions for the next tick', () => {
    const r = rate(90); // 1.5 a second
    const a = releasable(r, { credit: 0, at }, { now: later(1000), succeeded: 0, remaining: 100 });
    expect(a).toEqual({ count: 1, credit: 0.5 });
    const b = releasable(r, { credit: a.credit, at: later(1000) }, { now: later(2000), succeeded: 0, remaining: 100 });
    expect(b).toEqual({ count: 2, credit: 0 });
  });

  it('holds at most 10 seconds of rollout (at least one device), and never counts time backwards', () => {
    expect(releasable(rate(60), { credit: 0, at }, { now: later(3_600_000), succeeded: 0, remaining: 100 }).count).toBe(10);
    expect(releasable(rate(1), { credit: 0, at }, { now: later(3_600_000), succeeded: 0, remaining: 100 }).count).toBe(1);
    expect(releasable(rate(60), { credit: 0.5, at }, { now: later(-5000), succeeded: 0, remaining: 100 })).toEqual({
      count: 0,
      credit: 0.5,
    });
  });

  it('grows the rate by its factor every `every` successes, up to the cap', () => {
    const r = rate(100, { factor: 2, every: 50 });
    expect(currentRate(r, 49)).toBe(100);
    expect(currentRate(r, 50)).toBe(200);
    expect(currentRate(r, 175)).toBe(800);
    expect(currentRate(r, 10_000_000)).toBe(MAX_ROLLOUT_PER_MINUTE);
    expect(releasable(r, { credit: 0, at }, { now: later(6000), succeeded: 100, remaining: 1000 }).count).toBe(40);
  });
});
