import 'uplot/dist/uPlot.min.css';
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';

export interface ChartSeries {
  label: string;
  colour: string;
  values: (number | null)[];
  /** points only (no line): switch events, conflicts */
  points?: boolean;
  /** bars (energy per day) */
  bars?: boolean;
}

/**
 * A uPlot chart sized to its container. `x`: Unix seconds (time axis) unless `xTime` is false.
 * The wrapper carries `aria-label` and, for screen readers and tests, a summary of the data.
 */
export function Chart({
  x,
  series,
  label,
  height = 260,
  yFormat,
  xTime = true,
  testId,
}: {
  x: number[];
  series: ChartSeries[];
  label: string;
  height?: number;
  yFormat?: (v: number) => string;
  xTime?: boolean;
  testId?: string;
}) {
  const el = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const node = el.current;
    if (!node) return;
    const bars = uPlot.paths.bars?.({ size: [0.6, 40] });
    const opts: uPlot.Options = {
      width: Math.max(280, node.clientWidth),
      height,
      scales: { x: { time: xTime } },
      axes: [{}, yFormat ? { values: (_u, vals) => vals.map((v) => yFormat(v)) } : {}],
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: s.colour,
          width: s.points ? 0 : 1.5,
          ...(s.bars && bars ? { paths: bars, fill: `${s.colour}99` } : {}),
          points: s.points ? { show: true, size: 7, fill: s.colour, stroke: s.colour } : { show: false },
          ...(yFormat ? { value: (_u: uPlot, v: number | null) => (v === null ? '—' : yFormat(v)) } : {}),
        })),
      ],
    };
    const plot = new uPlot(opts, [x, ...series.map((s) => s.values)] as uPlot.AlignedData, node);
    const resize = new ResizeObserver(() => plot.setSize({ width: Math.max(280, node.clientWidth), height }));
    resize.observe(node);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [x, series, height, yFormat, xTime]);
  return <div class="chart" ref={el} role="img" aria-label={label} data-testid={testId} data-points={x.length} />;
}
