/**
 * A small encoder for PostgreSQL's binary COPY format (`copy … from stdin with (format binary)`),
 * for the few column types ingest writes: timestamptz, uuid, text, double precision (and NULL).
 * Binary rows spare PostgreSQL the text parsing of timestamps and uuids, and spare ingest building
 * (and the garbage collector reclaiming) one ISO date string per reading. Rows are written straight
 * into one growing buffer: no object or string per field.
 *
 * Why not a library: `pg-copy-streams-binary` (the maintained one) has no uuid encoder, takes
 * dates as `Date` objects (millisecond precision kept, but one object per value) and runs one stream
 * transform per row. Format: https://www.postgresql.org/docs/15/sql-copy.html (Binary Format),
 * `uuid_send`, `timestamptz_send` (int64 microseconds since 2000-01-01 UTC), `float8send`.
 */

/** `PGCOPY\n\377\r\n\0`, flags (int32 0), header extension length (int32 0). */
const HEADER = Buffer.from([0x50, 0x47, 0x43, 0x4f, 0x50, 0x59, 0x0a, 0xff, 0x0d, 0x0a, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]);
/** 2000-01-01T00:00:00Z in Unix milliseconds (PostgreSQL's timestamp epoch). */
const PG_EPOCH_MS = 946_684_800_000;
const TWO_32 = 2 ** 32;

/** hex digit value by char code (-1: not a hex digit) */
const HEX = new Int8Array(128).fill(-1);
for (let i = 0; i < 10; i++) HEX[48 + i] = i;
for (let i = 0; i < 6; i++) {
  HEX[65 + i] = 10 + i;
  HEX[97 + i] = 10 + i;
}

export class BinaryCopyWriter {
  private buf: Buffer;
  private off: number;
  /** the last two uuids written and where their 16 bytes are (rows repeat org and device ids) */
  private uuidA = '';
  private uuidAAt = 0;
  private uuidB = '';
  private uuidBAt = 0;

  /** @param capacity initial buffer size in bytes (it grows by doubling) */
  constructor(capacity = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(Math.max(capacity, 64));
    HEADER.copy(this.buf, 0);
    this.off = HEADER.length;
  }

  private ensure(n: number): void {
    if (this.off + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.off + n));
    this.buf.copy(next, 0, 0, this.off);
    this.buf = next; // offsets (the uuid memo) stay valid
  }

  /** Starts a row of `fields` fields; each field method below writes the next one. */
  row(fields: number): this {
    this.ensure(2);
    this.buf.writeInt16BE(fields, this.off);
    this.off += 2;
    return this;
  }

  null(): this {
    this.ensure(4);
    this.buf.writeInt32BE(-1, this.off);
    this.off += 4;
    return this;
  }

  /** Unix milliseconds as timestamptz (microseconds since 2000-01-01 UTC). */
  timestamptz(ms: number): this {
    if (!Number.isFinite(ms)) throw new RangeError(`timestamptz: not a finite time ${ms}`);
    const us = (Math.trunc(ms) - PG_EPOCH_MS) * 1000;
    const hi = Math.floor(us / TWO_32);
    this.ensure(12);
    const b = this.buf;
    b.writeInt32BE(8, this.off);
    b.writeInt32BE(hi, this.off + 4);
    b.writeUInt32BE(us - hi * TWO_32, this.off + 8);
    this.off += 12;
    return this;
  }

  /** A uuid in its canonical text form (hyphens optional, any case). */
  uuid(s: string): this {
    this.ensure(20);
    const b = this.buf;
    b.writeInt32BE(16, this.off);
    const seen = s === this.uuidA ? this.uuidAAt : s === this.uuidB ? this.uuidBAt : -1;
    if (seen >= 0) {
      b.copyWithin(this.off + 4, seen, seen + 16);
      this.off += 20;
      return this;
    }
    let o = this.off + 4;
    let hi = -1;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c === 45) continue; // '-'
      const v = c < 128 ? (HEX[c] as number) : -1;
      if (v < 0 || o >= this.off + 20) throw new TypeError(`uuid: invalid value ${JSON.stringify(s)}`);
      if (hi < 0) hi = v;
      else {
        b[o++] = (hi << 4) | v;
        hi = -1;
      }
    }
    if (o !== this.off + 20 || hi >= 0) throw new TypeError(`uuid: invalid value ${JSON.stringify(s)}`);
    this.uuidB = this.uuidA;
    this.uuidBAt = this.uuidAAt;
    this.uuidA = s;
    this.uuidAAt = this.off + 4;
    this.off = o;
    return this;
  }

  /** UTF-8 text, or NULL. */
  text(s: string | null): this {
    if (s === null) return this.null();
    const n = s.length;
    this.ensure(4 + n * 3);
    const b = this.buf;
    const start = this.off + 4;
    let i = 0;
    // ASCII fast path (metric names, most strings); anything else goes through Buffer#write.
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 128) break;
      b[start + i] = c;
    }
    const len = i === n ? n : b.write(s, start, 'utf8');
    b.writeInt32BE(len, this.off);
    this.off = start + len;
    return this;
  }

  /** double precision, or NULL. */
  float8(v: number | null): this {
    if (v === null) return this.null();
    this.ensure(12);
    this.buf.writeInt32BE(8, this.off);
    this.buf.writeDoubleBE(v, this.off + 4);
    this.off += 12;
    return this;
  }

  /** bigint (a safe integer). */
  int8(n: number): this {
    if (!Number.isSafeInteger(n)) throw new RangeError(`int8: not a safe integer ${n}`);
    const hi = Math.floor(n / TWO_32);
    this.ensure(12);
    this.buf.writeInt32BE(8, this.off);
    this.buf.writeInt32BE(hi, this.off + 4);
    this.buf.writeUInt32BE(n - hi * TWO_32, this.off + 8);
    this.off += 12;
    return this;
  }

  /** Bytes written so far (header included). */
  get length(): number {
    return this.off;
  }

  /** Appends the trailer and returns the COPY data (a view of the internal buffer; the writer is spent). */
  finish(): Buffer {
    this.ensure(2);
    this.buf.writeInt16BE(-1, this.off);
    this.off += 2;
    return this.buf.subarray(0, this.off);
  }
}
