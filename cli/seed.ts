import type { Config } from '../lib/config.js';

export async function seedDemo(_cfg: Config, _o: { devices: number }): Promise<void> {
  throw new Error('seed: not implemented yet');
}
