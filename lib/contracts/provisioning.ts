import { decodeJson, isRecord, reject } from './contract.js';

/**
 * Provisioning: a new device claims its own credentials with its profile's provisioning key and
 * secret, once. Over MQTT the device publishes a request on `provision/{clientId}/request` and
 * reads the answer on `provision/{clientId}/response` (ingest answers, through the shared
 * subscription); over HTTP it posts the same request to ingest's `POST /provision` and gets the same
 * answer as the response body. `clientId` is the device's own MQTT client id while provisioning: 16
 * to 64 characters of `[A-Za-z0-9_-]`, random, so nobody else can read the answer (the broker lets a
 * provisioning client use only its own client id's topics).
 *
 * Request: `{"serial", "provisionKey", "provisionSecret", "name"?}`.
 * Answer: `{"status":"SUCCESS", "deviceId", "clientId", "username", "secret"}` (connect with
 * `clientId` = the device id from then on), or `{"status":"FAILURE", "error"}`.
 */

const CONTRACT = 'provisioning';

export const PROVISION_CLIENT_ID = /^[A-Za-z0-9_-]{16,64}$/;
export const provisionRequestTopic = (clientId: string) => `provision/${clientId}/request`;
export const provisionResponseTopic = (clientId: string) => `provision/${clientId}/response`;
/** What ingest subscribes to (shared) for MQTT provisioning. */
export const PROVISION_REQUEST_FILTER = 'provision/+/request';

export interface ProvisionRequest {
  serial: string;
  provisionKey: string;
  provisionSecret: string;
  name?: string;
}

export type ProvisionAnswer =
  | { status: 'SUCCESS'; deviceId: string; clientId: string; username: string; secret: string }
  | { status: 'FAILURE'; error: string };

/** The client id of a request topic, or undefined when the topic is not one. */
export function provisionClientIdOf(topic: string): string | undefined {
  const p = topic.split('/');
  return p.length === 3 && p[0] === 'provision' && p[2] === 'request' && PROVISION_CLIENT_ID.test(p[1] as string) ? p[1] : undefined;
}

const str = (v: unknown, max: number): v is string => typeof v === 'string' && v.length > 0 && v.length <= max;

/**
 * A provisioning request; throws a counted ContractError when it is not a JSON object, or `serial`
 * (1–128 characters), `provisionKey` (≤ 64), `provisionSecret` (≤ 128) or `name` (≤ 200, optional)
 * are missing or not strings. Other properties are ignored.
 */
export function parseProvisionRequest(raw: string | Buffer): ProvisionRequest {
  const doc = decodeJson(CONTRACT, raw);
  if (!isRecord(doc)) return reject(CONTRACT, 'not an object');
  if (!str(doc.serial, 128)) return reject(CONTRACT, 'serial must be a string of 1 to 128 characters');
  if (!str(doc.provisionKey, 64)) return reject(CONTRACT, 'provisionKey must be a string of 1 to 64 characters');
  if (!str(doc.provisionSecret, 128)) return reject(CONTRACT, 'provisionSecret must be a string of 1 to 128 characters');
  if (doc.name !== undefined && !str(doc.name, 200)) return reject(CONTRACT, 'name must be a string of 1 to 200 characters');
  return {
    serial: doc.serial,
    provisionKey: doc.provisionKey,
    provisionSecret: doc.provisionSecret,
    ...(doc.name !== undefined ? { name: doc.name } : {}),
  };
}

export const encodeProvisionRequest = (r: ProvisionRequest): string => JSON.stringify(r);
export const encodeProvisionAnswer = (a: ProvisionAnswer): string => JSON.stringify(a);
