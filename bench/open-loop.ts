// Fixed-rate (open-loop) HTTP/1.1 load generator on raw TCP sockets, as wrk2 does it: request i is
// due at t0 + i/rate and its latency counts from that time, so a stalled server is charged for every
// request it delayed (no coordinated omission). Requests go over a fixed pool of keep-alive
// connections opened before the run; when all are busy a request waits here, and that wait counts.
//
// Raw sockets and one pre-encoded request instead of node:http: the generator shares the 2 cores
// with the servers it measures, and node:http's client (agent, header objects, streams per request)
// cost several times more CPU per request, which showed up as server latency at the higher rates.
import net from 'node:net';

export interface OpenLoopResult {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  /** requests answered (any status) */
  completed: number;
  /** requests answered in the warm-up (not counted above) */
  warmupCompleted?: number;
}

export interface OpenLoopOptions {
  url: string;
  headers: Record<string, string>;
  body: string;
  /** several bodies, request i sending bodies[i % length] (many devices); `body` when absent */
  bodies?: string[];
  /**
   * Already encoded requests (whole HTTP/1.1 requests, as {@link encodeRequests} makes them) in one
   * off-heap buffer, request j at data[offsets[j], offsets[j + 1]): what the generator process
   * holds instead of 100,000 strings and buffers on its heap (`body`/`bodies` are then unused).
   */
  encoded?: EncodedRequests;
  rate: number;
  durationS: number;
  connections: number;
  /**
   * Requests in flight per connection (HTTP/1.1 pipelining, answers in order), as EMQX's HTTP
   * client sends them (deploy/emqx/emqx.conf: `enable_pipelining = 100`): a request goes to the next
   * connection in turn with room, without waiting for the one before it to be answered.
   * @default 1 (a request waits for a connection with nothing in flight)
   */
  pipelining?: number;
  /**
   * Seconds of the same load sent first over the same connections and not counted (`completed`,
   * `errors` and the percentiles are of the rest).
   */
  warmupS?: number;
  /** called with (scheduled time relative to t0, latency, scheduled time as performance.now()) of every request (debugging the tail) */
  onSample?: (at: number, latencyMs: number, scheduled: number) => void;
}

export interface EncodedRequests {
  data: Buffer;
  /** n + 1 offsets into data */
  offsets: Uint32Array;
}

/** Whole POST requests to `url` with `headers`, one per body, in one buffer. */
export function encodeRequests(url: URL, headers: Record<string, string>, bodies: string[]): EncodedRequests {
  const parts = bodies.map((body) => {
    const headerLines = Object.entries({
      host: url.host,
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(body)),
      connection: 'keep-alive',
      ...headers,
    })
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
    return `POST ${url.pathname}${url.search} HTTP/1.1\r\n${headerLines}\r\n${body}`;
  });
  const offsets = new Uint32Array(parts.length + 1);
  let at = 0;
  for (let i = 0; i < parts.length; i++) {
    offsets[i] = at;
    at += Buffer.byteLength(parts[i] as string);
  }
  offsets[parts.length] = at;
  const data = Buffer.allocUnsafeSlow(at);
  for (let i = 0; i < parts.length; i++) data.write(parts[i] as string, offsets[i] as number);
  return { data, offsets };
}

const CRLF2 = Buffer.from('\r\n\r\n');
const CRLF = Buffer.from('\r\n');

/**
 * Length of the complete HTTP/1.1 response at the start of `buf` (Content-Length or chunked
 * framing), or -1 while it is incomplete; `status` is its status code.
 */
export function responseLength(buf: Buffer): { length: number; status: number } {
  const end = buf.indexOf(CRLF2);
  if (end < 0) return { length: -1, status: 0 };
  const head = buf.toString('latin1', 0, end);
  const status = Number(head.slice(9, 12));
  const bodyStart = end + 4;
  const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  if (cl) {
    const total = bodyStart + Number(cl[1]);
    return { length: buf.length >= total ? total : -1, status };
  }
  if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
    let at = bodyStart;
    for (;;) {
      const eol = buf.indexOf(CRLF, at);
      if (eol < 0) return { length: -1, status };
      const size = Number.parseInt(buf.toString('latin1', at, eol), 16);
      if (Number.isNaN(size)) throw new Error('bad chunk size in response');
      at = eol + 2 + size + 2; // data and its CRLF (the last chunk: the empty trailer's CRLF)
      if (buf.length < at) return { length: -1, status };
      if (size === 0) return { length: at, status };
    }
  }
  // no body framing: only bodiless statuses are expected here
  return { length: bodyStart, status };
}

class Connection {
  private socket!: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  /** the scheduled times of the requests in flight, oldest first (answers come in order) */
  private readonly inFlight: number[] = [];
  private head = 0;
  /** the server closed the idle connection (keep-alive timeout): reconnect before the next request */
  private dead = false;

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly request: Buffer,
    /** called when a response is complete (status 0: the connection broke) */
    public onResponse: (c: Connection, scheduled: number, status: number) => void,
  ) {}

  /** requests sent and not answered yet */
  get pending(): number {
    return this.inFlight.length - this.head;
  }

  get busy(): boolean {
    return this.pending > 0;
  }

  open(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.buf = Buffer.alloc(0);
      this.dead = false;
      const s = net.connect({ host: this.host, port: this.port, noDelay: true });
      this.socket = s;
      s.once('connect', () => resolve());
      s.on('data', (chunk: Buffer) => this.onData(chunk));
      s.on('error', (e) => {
        if (s !== this.socket) return;
        if (this.busy) this.fail();
        else reject(e);
      });
      s.on('close', () => {
        if (s !== this.socket) return;
        this.dead = true;
        if (this.busy) this.fail();
      });
    });
  }

  send(scheduled: number, request = this.request): void {
    // the loop below sends up to 1 ms early rather than sleep for less: count from the actual send then
    this.inFlight.push(Math.min(scheduled, performance.now()));
    // a closed connection is opened again; what is written meanwhile goes out once it is connected, in order
    if (this.dead) this.open().catch(() => this.fail());
    this.socket.write(request);
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    // several answers may have come together (pipelining)
    while (this.buf.length && this.busy) {
      const { length, status } = responseLength(this.buf);
      if (length < 0) return;
      this.buf = this.buf.subarray(length);
      this.onResponse(this, this.shift(), status);
    }
  }

  private shift(): number {
    const scheduled = this.inFlight[this.head++] as number;
    if (this.head === this.inFlight.length) {
      this.inFlight.length = 0;
      this.head = 0;
    }
    return scheduled;
  }

  /** the connection broke mid-request: count an error for each request in flight and reconnect */
  private fail(): void {
    const lost: number[] = [];
    while (this.busy) lost.push(this.shift());
    this.socket.destroy();
    const done = () => {
      for (const scheduled of lost) this.onResponse(this, scheduled, 0);
    };
    this.open().then(done, done);
  }

  close(): void {
    this.socket.removeAllListeners('close');
    this.socket.destroy();
  }
}

export async function runOpenLoopRaw(o: OpenLoopOptions): Promise<OpenLoopResult> {
  const url = new URL(o.url);
  const enc = o.encoded ?? encodeRequests(url, o.headers, o.bodies?.length ? o.bodies : [o.body]);
  const n = enc.offsets.length - 1;
  /** request i (a view into the one buffer: no copy) */
  const requestAt = (i: number) => enc.data.subarray(enc.offsets[i % n], enc.offsets[(i % n) + 1]);
  const request = requestAt(0);
  const warmupN = Math.round(o.rate * (o.warmupS ?? 0));
  const total = warmupN + Math.max(1, Math.round(o.rate * o.durationS));
  const latencies = new Float64Array(total);
  let answered = 0;
  let warmupCompleted = 0;
  /** scheduled times before this are the warm-up's */
  let measureFrom = 0;
  let completed = 0;
  let errors = 0;
  let t0 = 0;
  const waiting: [number, number][] = [];
  let waitHead = 0;
  let finish: () => void = () => undefined;
  const free: Connection[] = [];
  const depth = Math.max(1, o.pipelining ?? 1);
  /** pipelining: the connection to try first for the next request (each in turn) */
  let turn = 0;
  /** pipelining: the next connection in turn with room for another request, if any */
  const withRoom = (): Connection | undefined => {
    for (let k = 0; k < pool.length; k++) {
      const c = pool[(turn + k) % pool.length] as Connection;
      if (c.pending < depth) {
        turn = (turn + k + 1) % pool.length;
        return c;
      }
    }
    return undefined;
  };

  const measured = (c: Connection, scheduled: number, status: number) => {
    const l = performance.now() - scheduled;
    if (scheduled < measureFrom) warmupCompleted++;
    else {
      if (status !== 200) errors++;
      latencies[completed++] = l;
      o.onSample?.(scheduled - t0, l, scheduled);
    }
    if (++answered === total) finish();
    if (waitHead < waiting.length) {
      const [at, i] = waiting[waitHead++] as [number, number];
      c.send(at, requestAt(i));
    } else if (depth === 1) free.push(c);
  };

  const port = Number(url.port || 80);
  // One request per connection before the run (not measured): the servers accept and warm each one.
  let warmed = 0;
  let warmedAll: () => void = () => undefined;
  const warm = new Promise<void>((r) => {
    warmedAll = r;
  });
  const pool = Array.from(
    { length: o.connections },
    () =>
      new Connection(url.hostname, port, request, () => {
        if (++warmed === o.connections) warmedAll();
      }),
  );
  await Promise.all(pool.map((c) => c.open()));
  for (const c of pool) c.send(performance.now());
  await warm;
  for (const c of pool) c.onResponse = measured;
  free.push(...pool);

  const finished = new Promise<void>((resolve) => {
    finish = resolve;
  });
  t0 = performance.now() + 50;
  // a request sent up to 1 ms early counts from its send (Connection.send): start counting 1 ms before
  measureFrom = warmupN ? t0 + (warmupN * 1000) / o.rate - 1 : 0;
  for (let i = 0; i < total; i++) {
    const at = t0 + (i * 1000) / o.rate;
    const wait = at - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    // the longest-idle connection first (round robin, as wrk does): none idles into the server's keep-alive timeout
    const c = depth === 1 ? free.shift() : withRoom();
    if (c) c.send(at, requestAt(i));
    else waiting.push([at, i]);
  }
  await finished;
  for (const c of pool) c.close();
  const sorted = Array.from(latencies.subarray(0, completed)).sort((a, b) => a - b);
  const pct = (p: number) => Math.round((sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0) * 10) / 10;
  return { rps: (total - warmupN) / o.durationS, p50: pct(50), p99: pct(99), errors, completed, warmupCompleted };
}
