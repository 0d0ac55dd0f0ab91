// Writes the broker configuration generated from lib/mqtt-policy.ts: deploy/mosquitto/acl (the
// ACL-file patterns). `npx tsx scripts/broker-config.ts`; test/deploy-broker.test.ts fails when
// the file is stale.
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { mosquittoAclFile } from '../lib/mqtt-policy.js';

export const ACL_FILE = fileURLToPath(new URL('../deploy/mosquitto/acl', import.meta.url));

if (import.meta.url === `file://${process.argv[1]}`) {
  writeFileSync(ACL_FILE, mosquittoAclFile());
  console.log(`wrote ${ACL_FILE}`);
}
