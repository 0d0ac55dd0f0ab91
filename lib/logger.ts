import { type Logger, pino } from 'pino';

export type { Logger };

/** JSON logs on stdout; one root logger per process, children per role. */
export function createLogger(level = process.env.LOG_LEVEL ?? 'info', bindings: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { pid: process.pid, ...bindings }, timestamp: pino.stdTimeFunctions.isoTime });
}
