import type { Config } from '../lib/config.js';

export async function printToken(_cfg: Config, _o: { org: string; role: string; user?: string; ttl?: string }): Promise<void> {
  throw new Error('token: not implemented yet');
}
export async function createApiKeyCli(_cfg: Config, _o: { org: string; name: string; scopes: string }): Promise<void> {
  throw new Error('apikey: not implemented yet');
}
