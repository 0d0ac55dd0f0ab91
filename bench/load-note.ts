/**
 * What a benchmark section says about the machine: the 1-minute load average before and after the
 * run, and whether other work shared it. At most 2 before the run (this host has 2 cores) counts as
 * quiet; above, the figures may be pessimistic (other work, or the decay of a run just before).
 */
export function loadNote(before: number, after: number): string {
  const head = `1-minute load average ${before.toFixed(1)} before and ${after.toFixed(1)} after`;
  return before <= 2
    ? `${head}; nothing else ran on the machine`
    : `${head}; the load average shows other work on the machine (or the decay of a run just before), so the figures may be pessimistic`;
}
