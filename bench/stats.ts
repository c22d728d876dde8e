// Pure numbers for the benchmarks: summaries of repeated samples, ratios, and the printed table.
// Every figure the bench reports is either a spread (median with min-max of several runs) or a ratio
// against a peer measured in the same run, so these are the only two shapes a row can take.

export interface Spread {
  n: number;
  median: number;
  min: number;
  max: number;
  p95: number;
}

/** Nearest-rank percentile (p in 0..100) of a non-empty list: always one of the samples. */
export function percentile(samples: readonly number[], p: number): number {
  if (!samples.length) throw new Error('percentile of no samples');
  if (!(p >= 0 && p <= 100)) throw new Error(`percentile ${p} is outside 0..100`);
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1] as number;
}

/** The middle sample, or the mean of the two middle ones for an even count. */
export function median(samples: readonly number[]): number {
  if (!samples.length) throw new Error('median of no samples');
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

export function spread(samples: readonly number[]): Spread {
  return {
    n: samples.length,
    median: median(samples),
    min: Math.min(...samples),
    max: Math.max(...samples),
    p95: percentile(samples, 95),
  };
}

/** How many times `peer` is bigger than `ours` (higher is better for us when both are costs). */
export function ratio(peer: number, ours: number): number {
  return ours > 0 ? peer / ours : Number.POSITIVE_INFINITY;
}

/** 3 significant digits at most, no exponent: 0.000123, 12.3, 4560. */
export function round3(x: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const digits = Math.max(0, 2 - Math.floor(Math.log10(Math.abs(x))));
  return Number(x.toFixed(Math.min(digits, 6)));
}

export type Unit = 'ms' | 'µs' | 's' | 'MB' | 'KB' | 'qps' | 'x' | 'calls' | '';

export function formatValue(x: number, unit: Unit): string {
  if (!Number.isFinite(x)) return String(x);
  return unit ? `${round3(x)} ${unit}` : String(round3(x));
}

/** `median (min-max, n=N)`, and p95 when asked: the spread of an absolute figure in one cell. */
export function formatSpread(s: Spread, unit: Unit, withP95 = false): string {
  const range = `${round3(s.min)}-${round3(s.max)}`;
  return `${formatValue(s.median, unit)} (${withP95 ? `p95 ${round3(s.p95)}, ` : ''}${range}, n=${s.n})`;
}

export interface Row {
  /** The measurement's short name (`reaction`, `discovery`...). */
  bench: string;
  what: string;
  /** The figure: a spread or a ratio, already formatted. */
  result: string;
  goal: string;
  /** true/false against the goal; null when there is no goal or nothing was measured. */
  met: boolean | null;
}

const verdict = (met: boolean | null) => (met === null ? '' : met ? 'yes' : 'NO');

/** A Markdown table: readable in a terminal and pasted as is into the README. */
export function formatTable(rows: readonly Row[]): string {
  const header = ['bench', 'what', 'result', 'goal', 'met'];
  const cells = rows.map((r) => [r.bench, r.what, r.result, r.goal, verdict(r.met)].map((c) => c.replace(/\|/g, '\\|')));
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] as string).length)));
  const line = (c: string[]) => `| ${c.map((x, i) => x.padEnd(widths[i] as number)).join(' | ')} |`;
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n');
}
