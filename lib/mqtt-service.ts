import { readFileSync } from 'node:fs';
import type { IClientOptions } from 'mqtt';
import type { Config } from './config.js';

/**
 * The MQTT connection options of a platform service account: its username and password when
 * configured (unset: no credentials, for the anonymous development broker), and the CA to trust
 * for `mqtts://` (MQTT_CA_FILE). Their rights are in lib/mqtt-policy.ts. A refused connection is
 * retried like a lost one (mqtt.js gives up after a refusing CONNACK by default): on Mosquitto the
 * service accounts exist only once the workers' dynamic-security sync has created them, so ingest
 * and workers started beside a fresh broker are refused at first.
 */
export function serviceMqttOptions(
  cfg: Pick<Config, 'MQTT_CA_FILE' | 'MQTT_INGEST_USERNAME' | 'MQTT_INGEST_PASSWORD' | 'MQTT_WORKERS_USERNAME' | 'MQTT_WORKERS_PASSWORD'>,
  service: 'ingest' | 'workers',
): Partial<IClientOptions> {
  const [username, password] =
    service === 'ingest' ? [cfg.MQTT_INGEST_USERNAME, cfg.MQTT_INGEST_PASSWORD] : [cfg.MQTT_WORKERS_USERNAME, cfg.MQTT_WORKERS_PASSWORD];
  return {
    reconnectOnConnackError: true,
    ...(password ? { username, password } : {}),
    ...(cfg.MQTT_CA_FILE ? { ca: readFileSync(cfg.MQTT_CA_FILE) } : {}),
  };
}
