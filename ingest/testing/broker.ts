import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The no-drop broker configuration shipped in `deploy/mosquitto/`. */
export const NO_DROP_CONF = join(dirname(fileURLToPath(import.meta.url)), '../../deploy/mosquitto/mosquitto-no-drop.conf');

export interface Broker {
  url: string;
  port: number;
  stop(): Promise<void>;
}

/** A TCP port nothing listens on right now (for private brokers and servers in tests and benches). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
export async function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = new Socket();
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
    s.connect(port, '127.0.0.1');
  });
}

/**
 * Runs `mosquitto -c conf` until every one of `ports` accepts connections (10 s at most); returns
 * how to stop it, which also removes `dir` (its configuration and persistence).
 */
export async function spawnMosquitto(conf: string, dir: string, ports: number[], bin = 'mosquitto'): Promise<() => Promise<void>> {
  const child: ChildProcess = spawn(bin, ['-c', conf], { stdio: 'ignore' });
  const deadline = Date.now() + 10_000;
  for (const p of ports) {
    while (!(await canConnect(p))) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`mosquitto did not start on ${ports.join(', ')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return async () => {
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
}

/**
 * Starts a private Mosquitto 2.0 with `deploy/mosquitto/mosquitto-no-drop.conf` on its own port
 * (tests and the bench): the system broker's defaults (20 in flight, 1000 queued, then dropped) are
 * exactly what ingest must not run behind.
 */
export async function startNoDropBroker(port?: number): Promise<Broker> {
  const p = port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), 'rulr-mosq-'));
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(
    conf,
    `${readFileSync(NO_DROP_CONF, 'utf8')}\nlistener ${p} 127.0.0.1\npersistence_location ${dir}/\nuser root\nlog_dest none\n`,
  );
  const stop = await spawnMosquitto(conf, dir, [p]);
  return { url: `mqtt://127.0.0.1:${p}`, port: p, stop };
}
