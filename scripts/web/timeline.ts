// What a node's row shows, decided from what the node said (pure): its stretches of time from power-on
// through each agent phase to ready, told apart as booting, work, waiting, skipped or failed. The input is
// the status document `agent status --json` printed, as agent/status.ts reads it (statusFromDocument leaves
// out what is damaged): a node that is being upgraded or whose answer is damaged still gives a row.
import type { AgentState, Status } from '../../agent/status.js';
import type { NodeReport } from '../check/node-report.js';

export interface NodeView {
  name: string;
  role?: string;
  /** ms since the epoch: when the machine was powered on (local clusters know it; cloud nodes may not). */
  poweredOnAt?: number;
  /** ms since the epoch: when the agent was first seen ready. */
  readyAt?: number;
  /** The node's last `cluster-check` answer, with its status document. */
  report?: NodeReport;
  /** Powered off on purpose (`cluster stop`, `up --defer`): nothing to ask. */
  off?: boolean;
}

export type SegmentKind = 'boot' | 'work' | 'wait' | 'skipped' | 'failed';

export interface Segment {
  /** `boot` before the agent starts, else the phase's name. */
  label: string;
  kind: SegmentKind;
  from: number;
  to: number;
  /** Still going on at `now`. */
  ongoing: boolean;
}

/** A time the document gives, in ms since the epoch; undefined when absent or not a date. */
const time = (v: string | undefined): number | undefined => {
  const t = v === undefined ? NaN : Date.parse(v);
  return Number.isFinite(t) ? t : undefined;
};

/** The agent's phases with their times read. */
function phasesOf(status: Status | undefined) {
  return (status?.phases ?? []).map((p) => ({ name: p.name, state: p.state, startedAt: time(p.startedAt), endedAt: time(p.endedAt) }));
}

/** The agent stopped moving (failed, interrupted): its open stretch ends at its last word, not at `now`. */
const STOPPED: ReadonlySet<AgentState | undefined> = new Set<AgentState>(['failed', 'invalid', 'interrupted']);

/** A node's stretches in time order; the open one (if any) runs to `now`. */
export function segmentsOf(node: NodeView, now: number): Segment[] {
  const status = node.report?.status;
  const agentStart = time(status?.startedAt);
  const state = status?.state;
  const openEnd = STOPPED.has(state) ? (time(status?.updatedAt) ?? now) : now;
  const segments: Segment[] = [];
  if (node.poweredOnAt !== undefined && (agentStart === undefined || agentStart > node.poweredOnAt)) {
    // Without the agent's word (a report made from boot times alone), the boot runs to ready.
    const to = agentStart ?? node.readyAt ?? now;
    segments.push({ label: agentStart === undefined && node.readyAt !== undefined ? 'power-on to ready' : 'boot', kind: 'boot', from: node.poweredOnAt, to, ongoing: agentStart === undefined && node.readyAt === undefined });
  }
  const waitingSince = state === 'waiting' ? time(status?.waitingSince) : undefined;
  for (const p of phasesOf(status)) {
    if (p.startedAt === undefined) continue;
    const to = p.endedAt ?? Math.max(openEnd, p.startedAt);
    const ongoing = p.endedAt === undefined && !STOPPED.has(state);
    const kind: SegmentKind =
      p.state === 'failed' ? 'failed' : p.state === 'skipped' ? 'skipped' : p.name.startsWith('wait-') ? 'wait' : 'work';
    // The current phase waits since `waitingSince`: what it did before that was work.
    if (ongoing && waitingSince !== undefined && status?.phase === p.name && kind === 'work' && waitingSince > p.startedAt) {
      segments.push({ label: p.name, kind: 'work', from: p.startedAt, to: waitingSince, ongoing: false });
      segments.push({ label: p.name, kind: 'wait', from: waitingSince, to, ongoing });
      continue;
    }
    segments.push({ label: p.name, kind, from: p.startedAt, to, ongoing });
  }
  return segments;
}

/** When the node became ready: what the watcher saw, else the end of the agent's last phase. */
export function readyAt(node: NodeView): number | undefined {
  if (node.readyAt !== undefined) return node.readyAt;
  const status = node.report?.status;
  if (status?.state !== 'ready') return undefined;
  const ends = phasesOf(status).flatMap((p) => (p.endedAt === undefined ? [] : [p.endedAt]));
  return ends.length ? Math.max(...ends) : time(status?.updatedAt);
}

/** What the node is doing now, in a few words: the agent's state and phase, or why we cannot tell. */
export function currentState(node: NodeView): { state: string; phase?: string; reason?: string; since?: number } {
  const r = node.report;
  if (node.off) return { state: 'off' };
  if (!r) return { state: node.readyAt !== undefined ? 'ready' : node.poweredOnAt !== undefined ? 'booting' : 'unknown' };
  const status = r.status;
  const state = status?.state ?? r.state;
  return {
    state: r.state === 'unreachable' ? 'unreachable' : state,
    ...(r.phase !== undefined && { phase: r.phase }),
    ...(r.detail !== undefined && { reason: r.detail }),
    ...(state === 'waiting' && time(status?.waitingSince) !== undefined && { since: time(status?.waitingSince) }),
  };
}

/** The time axis all rows share, so their bars line up: from the first thing seen to `now` (or the last end). */
export function axisOf(nodes: readonly NodeView[], now: number): { from: number; to: number } {
  const starts: number[] = [];
  const ends: number[] = [now];
  for (const n of nodes) {
    for (const s of segmentsOf(n, now)) {
      starts.push(s.from);
      ends.push(s.to);
    }
  }
  const from = starts.length ? Math.min(...starts) : now;
  return { from, to: Math.max(from + 1000, ...ends) };
}

/** Round tick steps for an axis of this many ms, about `count` of them. */
export function ticks(span: number, count = 6): number[] {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600].map((s) => s * 1000);
  const step = steps.find((s) => span / s <= count) ?? 3_600_000 * Math.ceil(span / 3_600_000 / count);
  const out: number[] = [];
  for (let t = 0; t <= span; t += step) out.push(t);
  return out;
}
