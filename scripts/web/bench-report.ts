// The report of `npm run bench` (pure): the cluster page (the local cluster's boots, when there is one)
// followed by every bench's table, with the side-by-side figures drawn as bar charts: the agent against
// the `node -e 0` floor, the metal DNS server against dnsmasq. Each chart is a picture of numbers that
// are also in its bench's table, so nothing is lost without SVG or in a screen reader.
import { formatValue, round3, spread, type Row, type Unit } from '../../bench/stats.js';
import { escapeHtml as esc, renderPage } from './page.js';
import type { NodeView } from './timeline.js';

/** One bench's entry in bench/results.json, as far as the report reads it. */
export interface BenchEntry {
  rows: Row[];
  data: Record<string, unknown>;
  method: string;
  machine?: { nproc?: number; cpu?: string; node?: string; date?: string; load?: number[] };
  quick?: boolean;
  seconds?: number;
}

export interface Bar {
  label: string;
  samples: number[];
  /** Ours is drawn in the work colour, the yardstick in grey. */
  kind: 'ours' | 'peer';
}

export interface Chart {
  title: string;
  unit: Unit;
  bars: Bar[];
}

const numbers = (v: unknown): number[] => (Array.isArray(v) ? v.filter((x): x is number => typeof x === 'number' && Number.isFinite(x)) : []);
const field = (v: unknown, key: string): unknown => (v && typeof v === 'object' ? (v as Record<string, unknown>)[key] : undefined);

/** The `agent` bench: `agent status` and `run --once` next to what a bare `node -e 0` costs here. */
export function agentCharts(data: Record<string, unknown>): Chart[] {
  const charts: Chart[] = [];
  const status = data.status;
  const time: Bar[] = [
    { label: 'agent status', samples: numbers(field(status, 'agentStatusMs')), kind: 'ours' },
    { label: 'node -e 0 (floor)', samples: numbers(field(status, 'nodeBareMs')), kind: 'peer' },
  ];
  if (time.every((b) => b.samples.length)) charts.push({ title: 'Agent against the Node floor: wall time', unit: 'ms', bars: time });
  const rss: Bar[] = [
    { label: 'run --once (master)', samples: numbers(field(data['run-master'], 'peakRssMb')), kind: 'ours' },
    { label: 'run --once (minion)', samples: numbers(field(data['run-minion'], 'peakRssMb')), kind: 'ours' },
    { label: 'node -e 0 (floor)', samples: numbers(data.nodeBarePeakRssMb), kind: 'peer' },
  ].filter((b) => b.samples.length) as Bar[];
  if (rss.some((b) => b.kind === 'peer') && rss.some((b) => b.kind === 'ours')) charts.push({ title: 'Agent against the Node floor: peak RSS', unit: 'MB', bars: rss });
  return charts;
}

/** The `dns` bench: per case, each server's queries per second (`runs[case][server][].qps`). */
export function dnsCharts(data: Record<string, unknown>): Chart[] {
  const runs = data.runs && typeof data.runs === 'object' ? (data.runs as Record<string, unknown>) : {};
  return Object.entries(runs).flatMap(([what, servers]) => {
    const bars = Object.entries(servers && typeof servers === 'object' ? (servers as Record<string, unknown>) : {})
      .map(([server, list]): Bar => ({
        label: server,
        samples: numbers(Array.isArray(list) ? list.map((r) => field(r, 'qps')) : []),
        kind: server === 'dnsmasq' ? 'peer' : 'ours',
      }))
      .filter((b) => b.samples.length);
    return bars.length >= 2 ? [{ title: `DNS server against dnsmasq: ${what}`, unit: 'qps' as const, bars }] : [];
  });
}

/** Horizontal bars: the median, a whisker from min to max; labels and values as text beside them. */
export function chartSvg(chart: Chart): string {
  const labelW = 190;
  const barW = 420;
  const rowH = 30;
  const top = 8;
  const stats = chart.bars.map((b) => ({ ...b, s: spread(b.samples) }));
  const max = Math.max(...stats.map((b) => b.s.max)) || 1;
  const x = (v: number) => labelW + (v / max) * barW;
  const rows = stats.map((b, i) => {
    const y = top + i * rowH;
    const value = `${formatValue(b.s.median, chart.unit)} (${round3(b.s.min)}-${round3(b.s.max)}, n=${b.s.n})`;
    return [
      `<text x="${labelW - 8}" y="${y + 15}" text-anchor="end">${esc(b.label)}</text>`,
      `<rect class="${b.kind}" x="${labelW}" y="${y + 3}" width="${(x(b.s.median) - labelW).toFixed(1)}" height="16"/>`,
      `<line class="range" x1="${x(b.s.min).toFixed(1)}" x2="${x(b.s.max).toFixed(1)}" y1="${y + 11}" y2="${y + 11}"/>`,
      `<text x="${(x(b.s.max) + 6).toFixed(1)}" y="${y + 15}">${esc(value)}</text>`,
    ].join('');
  });
  const height = top * 2 + stats.length * rowH;
  const label = `${chart.title}: ${stats.map((b) => `${b.label} median ${formatValue(b.s.median, chart.unit)}`).join(', ')}`;
  return `<svg class="chart" viewBox="0 0 ${labelW + barW + 230} ${height}" role="img" aria-label="${esc(label)}">${rows.join('')}</svg>`;
}

function chartFigure(chart: Chart): string {
  return `<figure>${chartSvg(chart)}<figcaption>${esc(chart.title)} (median bar, min-max line; ${chart.bars.some((b) => b.kind === 'peer') ? 'grey: the yardstick, ' : ''}blue: ours)</figcaption></figure>`;
}

const MET = (met: boolean | null) => (met === null ? '' : met ? '<span class="met-yes">yes</span>' : '<span class="met-no">NO</span>');

function benchSection(name: string, entry: BenchEntry): string {
  const charts = name === 'agent' ? agentCharts(entry.data) : name === 'dns' ? dnsCharts(entry.data) : [];
  const m = entry.machine;
  const machine = m ? `${m.nproc ?? '?'} x ${m.cpu ?? '?'}, Node ${m.node ?? '?'}, ${m.date ?? ''}, load ${(m.load ?? []).join(' → ')}${entry.quick ? ', --quick' : ''}` : '';
  const rows = entry.rows.map((r) => `<tr><th scope="row">${esc(r.what)}</th><td>${esc(r.result)}</td><td>${esc(r.goal)}</td><td>${MET(r.met)}</td></tr>`);
  return [
    `<section aria-labelledby="bench-${esc(name)}"><h2 id="bench-${esc(name)}">${esc(name)}</h2>`,
    entry.method ? `<p>${esc(entry.method)}</p>` : '',
    machine ? `<p class="machine">${esc(machine)}</p>` : '',
    ...charts.map(chartFigure),
    `<table><caption>${esc(name)}: results</caption><thead><tr><th scope="col">what</th><th scope="col">result</th><th scope="col">goal</th><th scope="col">met</th></tr></thead>`,
    `<tbody>${rows.join('')}</tbody></table>`,
    '</section>',
  ].join('\n');
}

/** The local cluster's boots the `image` bench read (`data.boots`: seconds from power-on to ready), as rows. */
export function bootRows(benches: Record<string, BenchEntry>): { nodes: NodeView[]; now: number } {
  const image = benches.image;
  const start = Date.parse(image?.machine?.date ?? '') || 0;
  const boots = Array.isArray(image?.data.boots) ? (image.data.boots as unknown[]) : [];
  const nodes = boots.flatMap((b): NodeView[] => {
    const name = field(b, 'name');
    const seconds = field(b, 'seconds');
    if (typeof name !== 'string' || typeof seconds !== 'number') return [];
    const role = field(b, 'role');
    return [{ name, ...(typeof role === 'string' && { role }), poweredOnAt: start, readyAt: start + seconds * 1000 }];
  });
  return { nodes, now: Math.max(start, ...nodes.map((n) => n.readyAt ?? start)) };
}

/** The whole report, from bench/results.json's `benches`. */
export function benchReport(benches: Record<string, BenchEntry>): string {
  const { nodes, now } = bootRows(benches);
  return renderPage({ title: 'kubeseed bench report', now, nodes, sections: Object.entries(benches).map(([name, entry]) => benchSection(name, entry)) });
}
