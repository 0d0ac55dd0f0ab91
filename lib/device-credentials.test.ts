import { describe, expect, it } from 'vitest';
import { selfSignedCertificate } from '../test/support/certs.js';
import {
  CREDENTIAL_USERNAME,
  credentialUsername,
  generateDeviceSecret,
  hashDeviceSecret,
  legacySha256,
  normalizeFingerprint,
  verifyDeviceSecret,
} from './device-credentials.js';

const ID = '0b0c4a6e-2d0a-4d6f-9a57-1f0b7c3a9e10';

describe('device credentials', () => {
  it('makes 192-bit secrets and a username per credential that starts with the device id', () => {
    const s = generateDeviceSecret();
    expect(s).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(generateDeviceSecret()).not.toBe(s);
    const u = credentialUsername(ID);
    expect(u).toMatch(CREDENTIAL_USERNAME);
    expect(u.startsWith(`${ID}.`)).toBe(true);
    expect(CREDENTIAL_USERNAME.test(ID)).toBe(true);
    expect(CREDENTIAL_USERNAME.test(`${ID}.xyz`)).toBe(false);
    expect(CREDENTIAL_USERNAME.test('rulr-ingest')).toBe(false);
  });

  it('salts each hash, so one secret hashed twice gives two different hashes that both verify', async () => {
    const a = await hashDeviceSecret('same secret');
    const b = await hashDeviceSecret('same secret');
    expect(a).not.toBe(b);
    expect(await verifyDeviceSecret('argon2id', a, 'same secret')).toBe(true);
    expect(await verifyDeviceSecret('argon2id', b, 'same secret')).toBe(true);
    expect(await verifyDeviceSecret('argon2id', 'not a hash', 'same secret')).toBe(false);
  });

  it('still verifies the unsalted SHA-256 older releases stored, so first use can rehash it', async () => {
    expect(await verifyDeviceSecret('sha256', legacySha256('old'), 'old')).toBe(true);
    expect(await verifyDeviceSecret('sha256', legacySha256('old'), 'older')).toBe(false);
    expect(await verifyDeviceSecret('sha256', 'zz', 'old')).toBe(false);
  });

  it('normalizes fingerprints pasted with colons or as a PEM certificate, and refuses anything else', () => {
    const cert = selfSignedCertificate('fp');
    expect(normalizeFingerprint(cert.pem)).toBe(cert.fingerprint);
    expect(normalizeFingerprint(cert.fingerprint.toUpperCase().match(/../g)?.join(':') as string)).toBe(cert.fingerprint);
    expect(() => normalizeFingerprint('12:34')).toThrow(/64 hex digits/);
    expect(() => normalizeFingerprint('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----')).toThrow(/PEM/);
  });
});
