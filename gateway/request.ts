import type { IncomingMessage } from 'node:http';
import { ErrorCode } from '../lib/errors.js';
import { BodyTooLargeError, readBody } from '../lib/http.js';
import { gqlError, type Reply, type RequestBody, replyJson } from './replies.js';

/** A decoded request, or the refusal to answer instead. */
export type Decoded = { body: RequestBody; refused?: undefined } | { refused: Reply; body?: undefined };

const refuse = (status: number, message: string, code: ErrorCode): Decoded => ({ refused: replyJson(status, gqlError(message, code)) });

/**
 * Reads and checks a POST /graphql body: at most `maxBytes`, JSON, one operation (no batches),
 * `query` a non-empty string, `variables` an object, `operationName` a string.
 */
export async function decodeRequest(req: IncomingMessage, maxBytes: number): Promise<Decoded> {
  let raw: Buffer;
  try {
    raw = await readBody(req, maxBytes);
  } catch (e) {
    if (e instanceof BodyTooLargeError) return refuse(413, e.message, ErrorCode.PayloadTooLarge);
    throw e;
  }
  let body: unknown;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch {
    return refuse(400, 'body is not valid JSON', ErrorCode.BadUserInput);
  }
  if (Array.isArray(body)) {
    return refuse(400, 'batched requests are disabled: send one operation per request', ErrorCode.BatchingDisabled);
  }
  const b = (body ?? {}) as RequestBody;
  if (typeof body !== 'object' || body === null || typeof b.query !== 'string' || b.query.length === 0) {
    return refuse(400, '"query" must be a non-empty string', ErrorCode.BadUserInput);
  }
  if (b.variables != null && (typeof b.variables !== 'object' || Array.isArray(b.variables))) {
    return refuse(400, '"variables" must be an object', ErrorCode.BadUserInput);
  }
  if (b.operationName != null && typeof b.operationName !== 'string') {
    return refuse(400, '"operationName" must be a string', ErrorCode.BadUserInput);
  }
  return { body: b };
}
