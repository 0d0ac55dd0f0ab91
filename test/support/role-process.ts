import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../ingest/testing/broker.js';

const MAIN = fileURLToPath(new URL('../../cli/main.ts', import.meta.url));

/** One role as `rulr start <role>` runs it, in its own process (so a test can SIGKILL it). */
export interface RoleProcess {
  child: ChildProcess;
  /** its health/metrics port */
  port: number;
  /** what it printed (stdout and stderr) */
  output(): string;
  /** sends `signal` and waits for the exit (at once if it is gone) */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Starts `rulr start <role>` with `env` over the test's environment and waits until its `/readyz`
 * answers 200. `portVar` names the role's port variable (`WORKERS_PORT`, `INGEST_PORT`); `execArgv` goes to node
 * before the script (a bench's `--cpu-prof`).
 */
export async function startRoleProcess(
  role: string,
  portVar: string,
  env: Record<string, string>,
  execArgv: readonly string[] = [],
): Promise<RoleProcess> {
  const port = await freePort();
  const child = spawn(process.execPath, [...execArgv, '--import', 'tsx', MAIN, 'start', role], {
    env: { ...process.env, ...env, [portVar]: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (c: Buffer) => {
    out = (out + c.toString()).slice(-20_000);
  });
  child.stderr?.on('data', (c: Buffer) => {
    out = (out + c.toString()).slice(-20_000);
  });
  const h: RoleProcess = {
    child,
    port,
    output: () => out,
    kill(signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill(signal);
      return exited;
    },
  };
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`rulr start ${role} exited early:\n${out}`);
    const ok = await fetch(`http://127.0.0.1:${port}/readyz`)
      .then((r) => r.ok)
      .catch(() => false);
    if (ok) return h;
    if (Date.now() > deadline) {
      await h.kill('SIGKILL');
      throw new Error(`rulr start ${role} not ready within 90 s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
