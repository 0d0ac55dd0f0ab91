import { describe, expect, it } from 'vitest';
import { emqxAcl, type Principal } from '../../lib/mqtt-policy.js';
import { ALLOW, allowAnswer, DENIED, DENY, IGNORE, IGNORED, parseAuthnRequest, parseAuthzRequest } from './emqx.js';

const A = '0b0c4a6e-2d0a-4d6f-9a57-1f0b7c3a9e10';

describe("the EMQX answers' bodies", () => {
  it('sends exactly the serialized answer of the policy for devices, concentrators and services, with and without expire_at', () => {
    const principals: Principal[] = [
      { kind: 'device', deviceId: A },
      { kind: 'gateway', deviceId: A },
      { kind: 'ingest', group: 'ingest' },
      { kind: 'workers' },
      { kind: 'provisioner', clientId: 'prov-0123456789abcdef' },
    ];
    for (const p of principals) {
      for (const end of [null, 1_900_000_000_123]) {
        const a = allowAnswer(p, end);
        expect(a.result).toBe('allow');
        expect(JSON.parse(a.body)).toEqual(ALLOW(emqxAcl(p), end));
        expect(a.body).toBe(JSON.stringify(ALLOW(emqxAcl(p), end)));
      }
    }
    expect(JSON.parse(DENIED.body)).toEqual(DENY);
    expect(JSON.parse(IGNORED.body)).toEqual(IGNORE);
  });

  it('reads malformed requests as nothing (denied by the caller)', () => {
    expect(parseAuthnRequest(Buffer.from('{'), 'application/json')).toBeUndefined();
    expect(parseAuthnRequest(Buffer.from('[]'), 'application/json')).toBeUndefined();
    expect(parseAuthnRequest(Buffer.from('{"username": 1, "clientid": "c"}'), 'application/json')).toBeUndefined();
    expect(parseAuthzRequest(Buffer.from('{"clientid": "c", "topic": "t", "action": "all"}'), 'application/json')).toBeUndefined();
  });
});
