import { describe, expect, it } from 'vitest';
import type { ReplyItem } from '../lib/contracts/commands.js';
import { replyPairs, replyRounds } from './commands.js';

const item = (id: string, status: 'received' | 'succeeded' | 'failed', deviceId = '00000000-0000-4000-8000-000000000001'): ReplyItem => ({
  deviceId,
  topic: `devices/${deviceId}/commands/reply`,
  raw: '{}',
  receivedAt: 1,
  reply: { id, status },
});

describe('replyRounds', () => {
  it("should put each command's k-th reply in round k, keeping arrival order within a round", () => {
    const batch = [item('a', 'received'), item('b', 'succeeded'), item('a', 'succeeded'), item('c', 'received'), item('a', 'succeeded')];
    const rounds = replyRounds(batch);
    expect(rounds.map((r) => r.map((i) => `${i.reply.id}:${i.reply.status}`))).toEqual([
      ['a:received', 'b:succeeded', 'c:received'],
      ['a:succeeded'],
      ['a:succeeded'],
    ]);
  });

  it('should name each command at most once per round', () => {
    const batch = Array.from({ length: 50 }, (_, i) => item(`c${i % 7}`, i < 7 ? 'received' : 'succeeded'));
    for (const round of replyRounds(batch)) expect(new Set(round.map((i) => i.reply.id)).size).toBe(round.length);
    expect(replyRounds(batch).flat()).toHaveLength(50);
  });

  it('should give no rounds for an empty batch', () => {
    expect(replyRounds([])).toEqual([]);
  });
});

describe('replyPairs', () => {
  const names = (pairs: ReturnType<typeof replyPairs>) => pairs.map((p) => `${p.received.reply.id}:${p.final.reply.status}`);

  it("should pair a command's received with the result that follows it, even with other replies between", () => {
    const batch = [item('a', 'received'), item('b', 'received'), item('a', 'succeeded'), item('b', 'failed'), item('a', 'succeeded')];
    expect(names(replyPairs(batch))).toEqual(['a:succeeded', 'b:failed']);
  });

  it('should not pair a result first, a received alone, two received, or replies from two devices', () => {
    const other = '00000000-0000-4000-8000-000000000002';
    const batch = [
      item('a', 'succeeded'),
      item('a', 'received'),
      item('b', 'received'),
      item('c', 'received'),
      item('c', 'received'),
      item('d', 'received'),
      item('d', 'succeeded', other),
    ];
    expect(replyPairs(batch)).toEqual([]);
  });
});
