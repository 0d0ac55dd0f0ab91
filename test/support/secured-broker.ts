import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, spawnMosquitto } from '../../ingest/testing/broker.js';

const DEPLOY = fileURLToPath(new URL('../../deploy/mosquitto/', import.meta.url));
const DEV_CERTS = fileURLToPath(new URL('../../scripts/dev-certs.sh', import.meta.url));

/** Where Debian's `mosquitto` package puts the dynamic-security plugin (`dpkg -L mosquitto`). */
export const DYNSEC_PLUGIN = [
  '/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so',
  '/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so',
  '/usr/lib/mosquitto_dynamic_security.so',
].find((p) => existsSync(p));

export interface SecuredBroker {
  /** the plain listener (127.0.0.1 only) */
  url: string;
  /** the TLS listener */
  tlsUrl: string;
  /** the development CA (PEM) that signed the TLS listener's certificate, and its file */
  ca: Buffer;
  caFile: string;
  adminUsername: string;
  adminPassword: string;
  /** the dynamic-security file, as the plugin saves it */
  dynsecFile: string;
  stop(): Promise<void>;
}

/** Another Mosquitto build than the machine's (bench:auth measures the sync against Mosquitto 2.1 this way). */
export interface BrokerBuild {
  /** the broker binary @default `mosquitto` (on PATH) */
  mosquitto?: string;
  /** its dynamic-security plugin @default {@link DYNSEC_PLUGIN} */
  plugin?: string;
}

/** RULR_TEST_MOSQUITTO / RULR_TEST_DYNSEC_PLUGIN: run the broker tests against another build (e.g. Mosquitto 2.1). */
const fromEnv = (): BrokerBuild => ({
  ...(process.env.RULR_TEST_MOSQUITTO ? { mosquitto: process.env.RULR_TEST_MOSQUITTO } : {}),
  ...(process.env.RULR_TEST_DYNSEC_PLUGIN ? { plugin: process.env.RULR_TEST_DYNSEC_PLUGIN } : {}),
});

/**
 * A private Mosquitto 2 run with the shipped `deploy/mosquitto/mosquitto.conf` (dynamic security,
 * the generated ACL file, anonymous off, TLS on its second listener with certificates from
 * `scripts/dev-certs.sh`), on two free ports and with its own dynamic-security file initialised by
 * `mosquitto_ctrl dynsec init`. Only paths and ports are rewritten. The shared broker on 1883 is
 * never touched.
 */
export async function startSecuredBroker(build: BrokerBuild = fromEnv()): Promise<SecuredBroker> {
  const plugin = build.plugin ?? DYNSEC_PLUGIN;
  if (!plugin) throw new Error('mosquitto_dynamic_security.so not found (apt-get install mosquitto)');
  const dir = mkdtempSync(join(tmpdir(), 'rulr-dynsec-'));
  const [plain, tls] = [await freePort(), await freePort()];
  const adminUsername = 'rulr-dynsec';
  const adminPassword = randomBytes(12).toString('hex');
  const dynsecFile = join(dir, 'dynsec.json');
  execFileSync('bash', [DEV_CERTS, join(dir, 'certs')], { stdio: 'ignore' });
  execFileSync('mosquitto_ctrl', ['dynsec', 'init', dynsecFile, adminUsername, adminPassword], { stdio: 'ignore' });
  const conf = readFileSync(join(DEPLOY, 'mosquitto.conf'), 'utf8')
    .replace(/^plugin \S+$/m, `plugin ${plugin}`)
    .replace(/^plugin_opt_config_file \S+$/m, `plugin_opt_config_file ${dynsecFile}`)
    .replace(/^acl_file \S+$/m, `acl_file ${join(DEPLOY, 'acl')}`)
    .replace(/^listener 1883 127\.0\.0\.1$/m, `listener ${plain} 127.0.0.1`)
    .replace(/^listener 8883$/m, `listener ${tls} 127.0.0.1`)
    .replaceAll('/mosquitto/certs/', `${dir}/certs/`)
    .replace(/^persistence_location \S+$/m, `persistence_location ${dir}/`)
    .replace(
      /^log_dest stdout$/m,
      process.env.RULR_TEST_BROKER_LOG ? `log_dest file ${process.env.RULR_TEST_BROKER_LOG}\nlog_type all` : 'log_dest none',
    );
  const options = conf.split('\n').filter((l) => l.trim() && !l.startsWith('#'));
  if (options.some((l) => / \/mosquitto\//.test(l) || /^listener (1883|8883)\b/.test(l))) {
    throw new Error('deploy/mosquitto/mosquitto.conf changed shape: a path or port was not rewritten for the test');
  }
  const file = join(dir, 'mosquitto.conf');
  writeFileSync(file, `${conf}\nuser root\n`);
  const stop = await spawnMosquitto(file, dir, [plain, tls], build.mosquitto);
  return {
    url: `mqtt://127.0.0.1:${plain}`,
    tlsUrl: `mqtts://127.0.0.1:${tls}`,
    ca: readFileSync(join(dir, 'certs', 'ca.crt')),
    caFile: join(dir, 'certs', 'ca.crt'),
    adminUsername,
    adminPassword,
    dynsecFile,
    stop,
  };
}
