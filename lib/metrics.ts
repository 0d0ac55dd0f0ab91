import client from 'prom-client';

/** One Prometheus registry per process, shared by every role running in it. */
export const registry = new client.Registry();
client.collectDefaultMetrics({ register: registry, prefix: 'rulr_' });

const counters = new Map<string, client.Counter<string>>();
const histograms = new Map<string, client.Histogram<string>>();
const gauges = new Map<string, client.Gauge<string>>();

export function counter(name: string, help: string, labelNames: string[] = []): client.Counter<string> {
  let c = counters.get(name);
  if (!c) {
    c = new client.Counter({ name, help, labelNames, registers: [registry] });
    counters.set(name, c);
  }
  return c;
}

export function histogram(name: string, help: string, labelNames: string[] = [], buckets?: number[]): client.Histogram<string> {
  let h = histograms.get(name);
  if (!h) {
    h = new client.Histogram({ name, help, labelNames, registers: [registry], ...(buckets ? { buckets } : {}) });
    histograms.set(name, h);
  }
  return h;
}

/** A gauge; `collect` (first registration wins) refreshes it when /metrics is scraped. */
export function gauge(
  name: string,
  help: string,
  labelNames: string[] = [],
  collect?: (this: client.Gauge<string>) => void | Promise<void>,
): client.Gauge<string> {
  let g = gauges.get(name);
  if (!g) {
    g = new client.Gauge({ name, help, labelNames, registers: [registry], ...(collect ? { collect } : {}) });
    gauges.set(name, g);
  }
  return g;
}
