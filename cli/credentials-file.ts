import { closeSync, existsSync, fchmodSync, fsyncSync, openSync, readFileSync, renameSync, statSync, writeSync } from 'node:fs';
import { isUuid } from '../lib/db.js';

/**
 * The device credentials file: what `rulr credentials issue` writes and `rulr simulate --credentials`
 * reads (and adds provisioning claims to). It holds secrets in clear (the platform keeps only their
 * hashes, so this file is the one copy): written with mode 0600, replaced atomically (a temporary
 * file renamed over it), so a crash never leaves half a file.
 *
 * `{"format": "rulr-device-credentials", "version": 1, "org": "<slug>",
 *   "devices": [{"deviceId", "serial", "username", "secret"}, ...]}`
 */

export const CREDENTIALS_FORMAT = 'rulr-device-credentials';

/** One device's MQTT credential: connect with client id `deviceId`. */
export interface DeviceCredential {
  deviceId: string;
  serial: string;
  username: string;
  secret: string;
}

export interface CredentialsFile {
  org: string;
  /** by device id */
  devices: Map<string, DeviceCredential>;
}

/** A credentials file that is not one; names the file and what is wrong. */
export class CredentialsFileError extends Error {
  constructor(path: string, reason: string) {
    super(`${path}: ${reason}`);
    this.name = 'CredentialsFileError';
  }
}

const str = (v: unknown, max: number): v is string => typeof v === 'string' && v.length > 0 && v.length <= max;

/** The file's text. */
export function encodeCredentialsFile(f: CredentialsFile): string {
  const devices = [...f.devices.values()].sort((a, b) => (a.serial < b.serial ? -1 : a.serial > b.serial ? 1 : 0));
  return `${JSON.stringify({ format: CREDENTIALS_FORMAT, version: 1, org: f.org, devices }, null, 1)}\n`;
}

/** Parses a credentials file's text; throws {@link CredentialsFileError} naming the first fault. */
export function parseCredentialsFile(text: string, path = 'credentials file'): CredentialsFile {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new CredentialsFileError(path, 'not JSON');
  }
  const d = doc as Record<string, unknown> | null;
  if (typeof d !== 'object' || d === null || Array.isArray(d)) throw new CredentialsFileError(path, 'not an object');
  if (d.format !== CREDENTIALS_FORMAT || d.version !== 1)
    throw new CredentialsFileError(path, `not a ${CREDENTIALS_FORMAT} file of version 1`);
  if (!str(d.org, 128)) throw new CredentialsFileError(path, 'org must be a slug');
  if (!Array.isArray(d.devices)) throw new CredentialsFileError(path, 'devices must be a list');
  const devices = new Map<string, DeviceCredential>();
  d.devices.forEach((e: unknown, i: number) => {
    const c = e as Record<string, unknown> | null;
    if (typeof c !== 'object' || c === null) throw new CredentialsFileError(path, `devices[${i}] is not an object`);
    if (!isUuid(c.deviceId)) throw new CredentialsFileError(path, `devices[${i}].deviceId must be a uuid`);
    if (!str(c.serial, 128) || !str(c.username, 128) || !str(c.secret, 256))
      throw new CredentialsFileError(path, `devices[${i}] needs serial, username and secret strings`);
    devices.set(c.deviceId, { deviceId: c.deviceId, serial: c.serial, username: c.username, secret: c.secret });
  });
  return { org: d.org, devices };
}

/**
 * Reads the file at `path`, or an empty one for `org` when it does not exist. Throws when it is
 * another organization's, or not a credentials file. `warn` is told when others may read it.
 */
export function readCredentialsFile(path: string, org: string, warn: (line: string) => void = () => undefined): CredentialsFile {
  if (!existsSync(path)) return { org, devices: new Map() };
  if ((statSync(path).mode & 0o077) !== 0) warn(`${path} is readable by others than its owner (chmod 600 it): it holds device secrets`);
  const f = parseCredentialsFile(readFileSync(path, 'utf8'), path);
  if (f.org !== org) throw new CredentialsFileError(path, `holds credentials of organization "${f.org}", not "${org}"`);
  return f;
}

/** Writes the file (mode 0600) through a temporary file renamed over it. */
export function writeCredentialsFile(path: string, f: CredentialsFile): void {
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    fchmodSync(fd, 0o600);
    writeSync(fd, encodeCredentialsFile(f));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}
