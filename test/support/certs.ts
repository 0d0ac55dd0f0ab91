import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A self-signed client certificate made by openssl, with its DER bytes and SHA-256 fingerprint (hex). */
export interface TestCertificate {
  pem: string;
  keyPem: string;
  der: Buffer;
  fingerprint: string;
}

export function selfSignedCertificate(commonName: string): TestCertificate {
  const dir = mkdtempSync(join(tmpdir(), 'rulr-cert-'));
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-days',
        '30',
        '-subj',
        `/CN=${commonName}`,
      ].concat(['-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')]),
      { stdio: 'ignore' },
    );
    const pem = readFileSync(join(dir, 'cert.pem'), 'utf8');
    const der = new X509Certificate(pem).raw;
    return { pem, keyPem: readFileSync(join(dir, 'key.pem'), 'utf8'), der, fingerprint: createHash('sha256').update(der).digest('hex') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
