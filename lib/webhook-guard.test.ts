import { describe, expect, it } from 'vitest';
import { addressAllowed, allowEntryProblem, parseAllowlist, webhookUrlProblem } from './webhook-guard.js';

const none = parseAllowlist('');

describe('webhookUrlProblem', () => {
  it('accepts public http and https URLs', () => {
    expect(webhookUrlProblem('https://hooks.example.com/rulr', none)).toBeNull();
    expect(webhookUrlProblem('http://93.184.216.34:8080/x', none)).toBeNull();
    expect(webhookUrlProblem('https://[2606:4700::1111]/x', none)).toBeNull();
  });

  it('refuses other schemes, credentials and non-URLs', () => {
    expect(webhookUrlProblem('ftp://example.com/x', none)).toMatch(/http or https/);
    expect(webhookUrlProblem('file:///etc/passwd', none)).toMatch(/http or https/);
    expect(webhookUrlProblem('https://user:pw@example.com/', none)).toMatch(/credentials/);
    expect(webhookUrlProblem('not a url', none)).toMatch(/not a URL/);
  });

  it('refuses private, loopback, link-local and mapped addresses', () => {
    for (const url of [
      'http://127.0.0.1/',
      'http://127.9.9.9:3000/',
      'http://10.0.0.5/',
      'http://172.20.1.1/',
      'http://192.168.1.1/',
      'http://169.254.169.254/latest/meta-data/',
      'http://100.64.0.1/',
      'http://0.0.0.0/',
      'http://[::1]/',
      'http://[fe80::1]/',
      'http://[fd00::1]/',
      'http://[::ffff:127.0.0.1]/',
      'http://localhost:8080/',
      'http://api.localhost/',
    ]) {
      expect(webhookUrlProblem(url, none), url).toMatch(/private, loopback or link-local/);
    }
  });

  it('allows what the allowlist names, and only that', () => {
    const allow = parseAllowlist('127.0.0.1, 10.1.0.0/16');
    expect(webhookUrlProblem('http://127.0.0.1:4000/', allow)).toBeNull();
    expect(webhookUrlProblem('http://localhost:4000/', allow)).toBeNull();
    expect(webhookUrlProblem('http://10.1.200.3/', allow)).toBeNull();
    expect(webhookUrlProblem('http://10.2.0.1/', allow)).toMatch(/private/);
    expect(webhookUrlProblem('http://127.0.0.2/', allow)).toMatch(/private/);
  });
});

describe('addressAllowed', () => {
  it('decides on resolved addresses alike', () => {
    expect(addressAllowed('8.8.8.8', none)).toBe(true);
    expect(addressAllowed('::ffff:10.0.0.1', none)).toBe(false);
    expect(addressAllowed('not an address', none)).toBe(false);
  });
});

describe('parseAllowlist', () => {
  it('refuses entries that are not addresses or ranges', () => {
    expect(() => parseAllowlist('10.0.0.0/8, example.com')).toThrow(/example.com/);
    expect(allowEntryProblem('10.0.0.0/33')).toMatch(/prefix/);
    expect(allowEntryProblem('::1/128')).toBeNull();
  });
});
