import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type CredentialsFile,
  CredentialsFileError,
  encodeCredentialsFile,
  parseCredentialsFile,
  readCredentialsFile,
  writeCredentialsFile,
} from './credentials-file.js';

const ID = '6f1c0f5e-3b8a-4f7e-9a51-2d3c4b5a6978';
const sample = (): CredentialsFile => ({
  org: 'demo',
  devices: new Map([[ID, { deviceId: ID, serial: 'SL-000001', username: `${ID}.0a1b2c3d`, secret: 's3cret' }]]),
});

let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('the device credentials file', () => {
  it('reads back what it wrote', () => {
    const f = parseCredentialsFile(encodeCredentialsFile(sample()));
    expect(f.org).toBe('demo');
    expect([...f.devices.values()]).toEqual([...sample().devices.values()]);
  });

  it('rejects what is not one, naming the fault', () => {
    const bad = (doc: unknown) => () => parseCredentialsFile(typeof doc === 'string' ? doc : JSON.stringify(doc), 'f.json');
    expect(bad('{')).toThrow(new CredentialsFileError('f.json', 'not JSON'));
    expect(bad({ format: 'other', version: 1 })).toThrow(/not a rulr-device-credentials file/);
    expect(bad({ format: 'rulr-device-credentials', version: 1, org: 'demo', devices: [{ deviceId: 'x' }] })).toThrow(
      /devices\[0\]\.deviceId must be a uuid/,
    );
    expect(bad({ format: 'rulr-device-credentials', version: 1, org: 'demo', devices: [{ deviceId: ID, serial: 'S' }] })).toThrow(
      /needs serial, username and secret/,
    );
  });

  it('is written with mode 0600 through a temporary file, and another organization’s file is refused', () => {
    dir = mkdtempSync(join(tmpdir(), 'rulr-creds-'));
    const path = join(dir, 'c.json');
    writeFileSync(path, 'old', { mode: 0o644 });
    writeCredentialsFile(path, sample());
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir)).toEqual(['c.json']);
    expect(readCredentialsFile(path, 'demo').devices.get(ID)?.secret).toBe('s3cret');
    expect(() => readCredentialsFile(path, 'acme')).toThrow(/organization "demo", not "acme"/);
    expect(readCredentialsFile(join(dir, 'none.json'), 'acme').devices.size).toBe(0);
    chmodSync(path, 0o644);
    const warned: string[] = [];
    readCredentialsFile(path, 'demo', (l) => warned.push(l));
    expect(warned[0]).toMatch(/readable by others/);
  });
});
