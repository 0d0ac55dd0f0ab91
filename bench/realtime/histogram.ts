/** Latency histogram with 1 ms buckets (0..MAX_MS, the last bucket holds everything slower). */
export const MAX_MS = 120_000;

export class Histogram {
  readonly buckets = new Uint32Array(MAX_MS + 1);
  count = 0;
  max = 0;

  record(ms: number): void {
    const b = ms < 0 ? 0 : ms > MAX_MS ? MAX_MS : Math.round(ms);
    this.buckets[b] = (this.buckets[b] as number) + 1;
    this.count++;
    if (ms > this.max) this.max = ms;
  }

  reset(): void {
    this.buckets.fill(0);
    this.count = 0;
    this.max = 0;
  }

  /** Sparse `[ms, count]` pairs, small enough for IPC. */
  toPairs(): [number, number][] {
    const out: [number, number][] = [];
    for (let i = 0; i <= MAX_MS; i++) if (this.buckets[i]) out.push([i, this.buckets[i] as number]);
    return out;
  }

  merge(pairs: [number, number][]): void {
    for (const [ms, n] of pairs) {
      this.buckets[ms] = (this.buckets[ms] as number) + n;
      this.count += n;
      if (ms > this.max) this.max = ms;
    }
  }

  percentile(p: number): number {
    if (!this.count) return Number.NaN;
    const target = Math.ceil((p / 100) * this.count);
    let seen = 0;
    for (let i = 0; i <= MAX_MS; i++) {
      seen += this.buckets[i] as number;
      if (seen >= target) return i;
    }
    return MAX_MS;
  }
}
