import { describe, expect, it } from 'vitest';
import { rejectionOf } from '../../test/support/contracts.js';
import { generateSecretToken } from '../auth.js';
import { consoleLink, parseConsoleLink } from './console-links.js';
import { rejectedCount } from './contract.js';

describe('console links', () => {
  const inv = generateSecretToken('inv').token;
  const rst = generateSecretToken('rst').token;

  it('puts the token in the fragment, under the console URL with or without a trailing slash', () => {
    expect(consoleLink('https://rulr.example.com/', 'accept-invitation', inv)).toBe(
      `https://rulr.example.com/#/accept-invitation?token=${inv}`,
    );
    expect(consoleLink('https://rulr.example.com/ops', 'reset-password', rst)).toBe(
      `https://rulr.example.com/ops/#/reset-password?token=${rst}`,
    );
  });

  it('parses back what it builds', () => {
    expect(parseConsoleLink(consoleLink('http://127.0.0.1:3000', 'accept-invitation', inv))).toEqual({
      kind: 'accept-invitation',
      token: inv,
    });
    expect(parseConsoleLink(consoleLink('http://127.0.0.1:3000', 'reset-password', rst))).toEqual({ kind: 'reset-password', token: rst });
  });

  it('rejects other links, unknown kinds and tokens of the wrong kind, and counts them', async () => {
    const before = await rejectedCount('console-links');
    expect(rejectionOf(() => parseConsoleLink('not a url'))).toBe('not a URL');
    expect(rejectionOf(() => parseConsoleLink(`http://x/#/delete-everything?token=${inv}`))).toBe('not an invitation or reset link');
    expect(rejectionOf(() => parseConsoleLink(`http://x/?token=${inv}`))).toBe('not an invitation or reset link');
    expect(rejectionOf(() => parseConsoleLink(`http://x/#/reset-password?token=${inv}`))).toBe('token malformed for its kind');
    expect(rejectionOf(() => parseConsoleLink('http://x/#/reset-password?token=rst_short'))).toBe('token malformed for its kind');
    expect(await rejectedCount('console-links')).toBe(before + 5);
  });
});
