import { createServer, type Server, Socket } from 'node:net';

/**
 * A TCP proxy on 127.0.0.1 to a local port that a test can break on purpose: `cut` resets every
 * connection and refuses new ones (a database or broker gone), `hold` stops forwarding what the
 * clients send while their connections stay up (a publish that never reaches the broker).
 */
export class TcpProxy {
  private readonly server: Server;
  private readonly pairs = new Set<[Socket, Socket]>();
  private down = false;

  constructor(private readonly target: number) {
    this.server = createServer((c) => {
      if (this.down) return c.destroy();
      const up = new Socket();
      const pair: [Socket, Socket] = [c, up];
      this.pairs.add(pair);
      const drop = () => {
        c.destroy();
        up.destroy();
        this.pairs.delete(pair);
      };
      c.on('error', drop).on('close', drop);
      up.on('error', drop).on('close', drop);
      up.connect(this.target, '127.0.0.1', () => {
        c.pipe(up);
        up.pipe(c);
      });
    });
  }

  /** Listens on an ephemeral port and returns it. */
  listen(): Promise<number> {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => resolve((this.server.address() as { port: number }).port)));
  }

  cut(): void {
    this.down = true;
    for (const [c, up] of this.pairs) {
      c.destroy();
      up.destroy();
    }
    this.pairs.clear();
  }

  restore(): void {
    this.down = false;
  }

  /** From now on, bytes from the clients stop here (the broker or database never sees them). */
  hold(): void {
    for (const [c, up] of this.pairs) {
      c.unpipe(up);
      c.pause();
    }
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((r) => this.server.close(() => r()));
  }
}
