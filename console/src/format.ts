/** Small display helpers shared by the pages. */

export const SEVERITIES = ['CRITICAL', 'MAJOR', 'MINOR', 'WARNING', 'INDETERMINATE'] as const;
export type Severity = (typeof SEVERITIES)[number];

export function fmtTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export function fmtNumber(v: number | null | undefined, digits = 2): string {
  if (v === null || v === undefined) return '—';
  return Number.isInteger(v) ? String(v) : v.toFixed(digits);
}

/** The map colour of a device: its worst open alarm, else offline grey, else online green. */
export function deviceColour(online: boolean | null | undefined, worst: Severity | null | undefined): string {
  switch (worst) {
    case 'CRITICAL':
      return '#c0162c';
    case 'MAJOR':
      return '#e8590c';
    case 'MINOR':
      return '#f0a202';
    case 'WARNING':
      return '#d4c20a';
    case 'INDETERMINATE':
      return '#7950f2';
    default:
      return online ? '#2b8a3e' : '#868e96';
  }
}

export const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e));
