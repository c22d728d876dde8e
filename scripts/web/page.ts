// The page of a cluster's boot (pure: a model in, one HTML document out). The live server sends the same
// `view` part again whenever a node changes, and the reports of `cluster up` and `npm run bench` are the
// same document without the script: every figure is also text in a table, so it reads without JavaScript,
// in a screen reader, and offline (inline CSS and SVG, nothing fetched).
import { formatDuration } from '../../agent/status.js';
import { axisOf, currentState, readyAt, segmentsOf, ticks, type NodeView, type Segment } from './timeline.js';

export interface PageModel {
  title: string;
  /** ms since the epoch: the open stretches run to here. */
  now: number;
  nodes: readonly NodeView[];
  /** Sections after the nodes (the bench's tables and charts), already HTML. */
  sections?: readonly string[];
  /** The live page: a script follows the server's events. The reports have none. */
  live?: boolean;
}

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
const esc = escapeHtml;

/** Waits are thin bars and work full-height ones, so the two differ by shape as well as by colour. */
const BAR: Record<Segment['kind'], [y: number, height: number]> = { boot: [3, 18], work: [3, 18], wait: [8, 8], skipped: [10, 4], failed: [3, 18] };

const KIND_TEXT: Record<Segment['kind'], string> = { boot: 'booting', work: 'working', wait: 'waiting', skipped: 'skipped', failed: 'failed' };

/** The check's verdict, as `cluster-check` prints it: N of M nodes ready. */
export function checkSummary(nodes: readonly NodeView[]): string {
  const ready = nodes.filter((n) => currentState(n).state === 'ready').length;
  // Rows made from boot times alone (the bench's) were never checked: say so rather than claim a check.
  return `${nodes.some((n) => n.report) ? 'cluster check: ' : ''}${ready} of ${nodes.length} nodes ready`;
}

function timelineSvg(node: NodeView, axis: { from: number; to: number }, now: number): string {
  const span = axis.to - axis.from;
  const x = (t: number) => (((t - axis.from) / span) * 1000).toFixed(1);
  const w = (s: Segment) => Math.max(2, ((s.to - s.from) / span) * 1000).toFixed(1);
  const segments = segmentsOf(node, now);
  const bars = segments.map(
    (s) =>
      `<rect class="seg ${s.kind}${s.ongoing ? ' ongoing' : ''}" x="${x(s.from)}" y="${BAR[s.kind][0]}" width="${w(s)}" height="${BAR[s.kind][1]}"><title>${esc(
        `${s.label}: ${KIND_TEXT[s.kind]} ${formatDuration(s.to - s.from)}${s.ongoing ? ' so far' : ''}`,
      )}</title></rect>`,
  );
  const ready = readyAt(node);
  const mark = ready === undefined ? '' : `<line class="ready" x1="${x(ready)}" x2="${x(ready)}" y1="0" y2="24"><title>ready</title></line>`;
  const words = segments.map((s) => `${s.label} ${KIND_TEXT[s.kind]} ${formatDuration(s.to - s.from)}`).join(', ');
  const label = `timeline of ${node.name}: ${words || 'nothing yet'}${ready === undefined ? '' : ', then ready'}`;
  return `<svg class="timeline" viewBox="0 0 1000 24" preserveAspectRatio="none" role="img" aria-label="${esc(label)}">${bars.join('')}${mark}</svg>`;
}

function phaseList(node: NodeView, now: number): string {
  const items = segmentsOf(node, now).map(
    (s) => `<li class="${s.kind}"><span class="name">${esc(s.label)}</span> ${KIND_TEXT[s.kind]} ${formatDuration(s.to - s.from)}${s.ongoing ? '…' : ''}</li>`,
  );
  return items.length ? `<ol class="phases">${items.join('')}</ol>` : '';
}

function nodeRow(node: NodeView, axis: { from: number; to: number }, now: number): string {
  const c = currentState(node);
  const ready = readyAt(node);
  const took = ready !== undefined && node.poweredOnAt !== undefined ? ` in ${formatDuration(ready - node.poweredOnAt)}` : '';
  const reason = c.reason ? `${c.reason}${c.since !== undefined ? ` (for ${formatDuration(now - c.since)})` : ''}` : '';
  const check = !node.report ? (node.readyAt !== undefined ? '' : 'not asked yet') : node.report.state === 'ready' ? 'ready' : `not ready (${node.report.state})`;
  return [
    `<tr id="node-${esc(node.name)}" class="state-${esc(c.state)}" tabindex="0">`,
    `<th scope="row">${esc(node.name)}<span class="role">${esc(node.role ?? node.report?.role ?? '')}</span></th>`,
    `<td class="state"><span class="badge">${esc(c.state)}</span>${c.phase && c.state !== 'ready' ? ` <span class="phase">${esc(c.phase)}</span>` : ''}${esc(took)}</td>`,
    `<td class="reason">${esc(reason)}</td>`,
    `<td class="check">${esc(check)}</td>`,
    `<td class="timeline">${timelineSvg(node, axis, now)}${phaseList(node, now)}</td>`,
    '</tr>',
  ].join('');
}

function axisHeader(axis: { from: number; to: number }): string {
  const span = axis.to - axis.from;
  // A label past the right edge would be cut off: the last ones give way.
  const marks = ticks(span).filter((t) => t / span <= 0.93).map((t) => `<span style="left:${((t / span) * 100).toFixed(2)}%">${formatDuration(t)}</span>`);
  return `<div class="axis" aria-hidden="true">${marks.join('')}</div>`;
}

/** The part that changes: the check's verdict and the node table. The live page swaps it whole. */
export function renderView(m: PageModel): string {
  const axis = axisOf(m.nodes, m.now);
  const waiting = m.nodes.filter((n) => currentState(n).state === 'waiting').map((n) => n.name);
  const summary = `${checkSummary(m.nodes)}${waiting.length ? `; waiting: ${waiting.join(', ')}` : ''}`;
  return [
    `<p id="summary">${esc(summary)}</p>`,
    '<table class="nodes">',
    `<caption>Nodes, one row each, as of ${esc(new Date(m.now).toISOString().replace(/\.\d+Z$/, 'Z'))}</caption>`,
    '<thead><tr><th scope="col">Node</th><th scope="col">State</th><th scope="col">Waiting on / error</th><th scope="col">Check</th>',
    `<th scope="col" class="timeline">Timeline from power-on${axisHeader(axis)}</th></tr></thead>`,
    `<tbody>${m.nodes.map((n) => nodeRow(n, axis, m.now)).join('')}</tbody>`,
    '</table>',
  ].join('\n');
}

const STYLE = `
:root{--work:#2563c9;--wait:#e0a100;--boot:#8a94a0;--fail:#c62828;--ok:#1b7f3b;font:15px/1.4 system-ui,sans-serif;color:#1d232a;background:#fff}
body{margin:1.5rem;max-width:1200px}
h1{font-size:1.4rem;margin:0 0 .3rem}
h2{font-size:1.15rem;margin:1.6rem 0 .4rem}
#summary{font-weight:600}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
caption{text-align:left;color:#555;font-size:.85rem;padding:.2rem 0}
th,td{border-bottom:1px solid #d8dde3;padding:.35rem .5rem;text-align:left;vertical-align:top}
thead th{background:#f3f5f7;font-size:.85rem}
tbody th{white-space:nowrap}
tbody tr:focus{outline:3px solid #1a56db;outline-offset:-3px;background:#eef4ff}
.role{display:block;font-weight:400;color:#555;font-size:.8rem}
.badge{display:inline-block;padding:0 .4rem;border-radius:.6rem;background:#e6e9ed;font-weight:600}
.state-ready .badge{background:#d7f0de;color:var(--ok)}
.state-waiting .badge{background:#fff1c2;color:#7a5600}
.state-failed .badge,.state-unreachable .badge,.state-invalid .badge{background:#fbdcdc;color:var(--fail)}
.phase{color:#444;white-space:nowrap}
td.reason{max-width:22rem;overflow-wrap:anywhere}
td.timeline,th.timeline{width:45%}
.axis{position:relative;height:1.1rem;font-weight:400;color:#555}
.axis span{position:absolute;transform:translateX(-50%);font-size:.75rem}
.axis span:first-child{transform:none}
svg.timeline{display:block;width:100%;height:24px;background:#f3f5f7}
.seg.work{fill:var(--work)}
.seg.boot{fill:var(--boot)}
.seg.wait{fill:var(--wait)}
.seg.skipped{fill:#b9c0c8}
.seg.failed{fill:var(--fail)}
.seg.ongoing{opacity:.75}
line.ready{stroke:var(--ok);stroke-width:3px;vector-effect:non-scaling-stroke}
ol.phases{list-style:none;margin:.2rem 0 0;padding:0;font-size:.78rem;color:#444;display:flex;flex-wrap:wrap;gap:.1rem .8rem}
ol.phases .name{font-weight:600}
ol.phases li::before{content:"";display:inline-block;width:.7rem;height:.7rem;margin-right:.25rem;vertical-align:-1px;background:var(--work)}
ol.phases li.wait::before{background:var(--wait);height:.35rem;vertical-align:2px}
ol.phases li.boot::before{background:var(--boot)}
ol.phases li.skipped::before{background:#b9c0c8;height:.2rem;vertical-align:3px}
ol.phases li.failed::before{background:var(--fail)}
.legend{display:flex;gap:1.2rem;list-style:none;padding:0;font-size:.85rem}
.legend li::before{content:"";display:inline-block;width:1.4rem;height:.8rem;margin-right:.35rem;vertical-align:-1px}
.legend .boot::before{background:var(--boot)}.legend .work::before{background:var(--work)}
.legend .wait::before{background:var(--wait);height:.4rem;vertical-align:2px}.legend .ready::before{width:3px;background:var(--ok)}
figure{margin:.8rem 0}figcaption{font-size:.85rem;color:#444}
svg.chart{max-width:760px;width:100%;height:auto}
svg.chart text{font:13px system-ui,sans-serif;fill:#1d232a}
svg.chart .ours{fill:var(--work)}svg.chart .peer{fill:#8a94a0}svg.chart .range{stroke:#1d232a;stroke-width:1.5}
.met-no{color:var(--fail);font-weight:600}.met-yes{color:var(--ok)}
.sr-only{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
`;

/**
 * The live page's only script: each `view` event from the server replaces the view, and the row that had
 * the keyboard focus gets it back. No polling: the server pushes (server-sent events, which reconnect by themselves).
 */
const SCRIPT = `
const view = document.getElementById('view');
const events = new EventSource('events');
events.addEventListener('view', (e) => {
  const focused = document.activeElement && view.contains(document.activeElement) ? document.activeElement.id : '';
  view.innerHTML = JSON.parse(e.data);
  view.dataset.updates = String(Number(view.dataset.updates || 0) + 1);
  if (focused) document.getElementById(focused)?.focus({ preventScroll: true });
});
events.addEventListener('error', () => { document.getElementById('connection').textContent = 'connection lost: reconnecting'; });
events.addEventListener('open', () => { document.getElementById('connection').textContent = 'live'; });
`;

export function renderPage(m: PageModel): string {
  return [
    '<!doctype html>',
    '<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">',
    `<title>${esc(m.title)}</title><style>${STYLE}</style></head><body>`,
    `<header><h1>${esc(m.title)}</h1>${m.live ? '<p>Updates: <span id="connection" role="status">connecting</span></p>' : ''}</header>`,
    '<main>',
    // A bench run without a local cluster has no nodes to show: only its own sections.
    ...(m.live || m.nodes.length
      ? [
          '<ul class="legend" aria-label="legend"><li class="boot">booting (power-on to agent start)</li><li class="work">agent phase at work</li><li class="wait">waiting</li><li class="ready">ready</li></ul>',
          // aria-live: a screen reader hears the verdict change without moving focus.
          `<section id="view" aria-live="polite" aria-label="nodes">${renderView(m)}</section>`,
        ]
      : []),
    ...(m.sections ?? []),
    '</main>',
    m.live ? `<script>${SCRIPT}</script>` : '',
    '</body></html>',
    '',
  ].join('\n');
}
