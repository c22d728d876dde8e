// <root>/run/kubeseed/status.json: what the agent is doing, written atomically at every phase change so
// `agent status` (and cluster-check over SSH) always reads a whole document. Never holds secrets: role
// file values other than the names below never reach it.
import type { Role } from './dns-names.js';
import { InputError } from './errors.js';
import type { Host } from './host.js';
import type { UnitStatus } from './units.js';
import type { ConsensusStatus } from './weave-consensus.js';

/** What the etcd phase publishes (agent/etcd.ts): the decision at boot, then each member's health. */
export interface EtcdFacts {
  member: string;
  decision?: string;
  servers?: string[];
  health?: { state: 'healthy' | 'degraded' | 'lost'; summary: string; members: { name: string; healthy: boolean; reason?: string }[] };
}

export const STATUS_FILE = '/run/kubeseed/status.json';
export const IMAGE_VERSION_FILE = '/etc/kubeseed/image-version';

export type AgentState = 'unconfigured' | 'invalid' | 'starting' | 'running' | 'waiting' | 'ready' | 'failed' | 'interrupted';
export type PhaseStateName = 'pending' | 'running' | 'done' | 'skipped' | 'failed' | 'interrupted';

export interface PhaseStatus {
  name: string;
  state: PhaseStateName;
  startedAt?: string;
  endedAt?: string;
  error?: string;
  /** Why a skipped phase had nothing to do on this node. */
  reason?: string;
  /** Time the phase spent waiting (`waitingOn` set): on other nodes and DNS, or on its units to start. */
  waitedMs?: number;
}

export interface Status {
  state: AgentState;
  role?: Role;
  roleFile?: string;
  cluster?: string;
  domain?: string;
  apiEndpoint?: string;
  /** The phase running now, or the last one that ran. */
  phase?: string;
  phases: PhaseStatus[];
  waitingOn?: string;
  waitingSince?: string;
  masters: string[];
  peers: string[];
  units: UnitStatus[];
  /** `file:line: message` for bad input; phase errors otherwise. */
  errors: string[];
  warnings: string[];
  /** Weave IPAM's start mode and why (phase weave): consensus or observer, the set, what DNS says against it. */
  weaveConsensus?: ConsensusStatus;
  agentVersion: string;
  imageVersion?: string;
  startedAt: string;
  updatedAt: string;
  /** Facts phases publish (StatusFacts) sit beside these at top level. */
  [fact: string]: unknown;
}

/**
 * Every agent state, the exit code of `agent status` in it, and what a cluster check calls the node: one table,
 * read by `agent status`, cluster-check and the watchers alike, so they cannot disagree.
 */
export const AGENT_STATES = {
  ready: { exit: 0, node: 'ready' },
  failed: { exit: 1, node: 'failed' },
  invalid: { exit: 1, node: 'failed' },
  starting: { exit: 3, node: 'running' },
  running: { exit: 3, node: 'running' },
  interrupted: { exit: 3, node: 'running' },
  waiting: { exit: 3, node: 'waiting' },
  unconfigured: { exit: 4, node: 'unconfigured' },
} as const satisfies Record<AgentState, { exit: number; node: string }>;

/** What a cluster check reports for a node whose agent answered. */
export type AnsweredNodeState = (typeof AGENT_STATES)[AgentState]['node'];

/** `agent status` exit codes (DESIGN.md): 0 ready, 1 failed, 3 in progress or waiting, 4 unconfigured. */
export function exitCodeFor(state: AgentState): number {
  return AGENT_STATES[state].exit;
}

/**
 * The node state an `agent status --json` answer means, or undefined when it is not an answer the agent gives
 * (no document, an unknown state, or an exit code that does not go with the document's state).
 */
export function answeredStateOf(exitCode: number, document: unknown): AnsweredNodeState | undefined {
  const state = (document as { state?: unknown } | undefined)?.state;
  if (typeof state !== 'string' || !Object.hasOwn(AGENT_STATES, state)) return undefined;
  const entry = AGENT_STATES[state as AgentState];
  return entry.exit === exitCode ? entry.node : undefined;
}

export async function initialStatus(host: Host, agentVersion: string, now: Date): Promise<Status> {
  const image = (await host.readFile(IMAGE_VERSION_FILE))?.trim();
  return {
    state: 'running',
    phases: [],
    masters: [],
    peers: [],
    units: [],
    errors: [],
    warnings: [],
    agentVersion,
    ...(image ? { imageVersion: image } : {}),
    startedAt: now.toISOString(),
    updatedAt: now.toISOString(),
  };
}

/**
 * Ends the current wait, if any: its length goes to the running phase's `waitedMs`, so a boot's time splits
 * into the agent's own and the waiting (cluster up and bench report both).
 */
export function endWait(status: Status, now: Date): void {
  const phase = status.phases.find((p) => p.state === 'running');
  if (status.waitingSince && phase) phase.waitedMs = (phase.waitedMs ?? 0) + Math.max(0, now.getTime() - Date.parse(status.waitingSince));
  delete status.waitingOn;
  delete status.waitingSince;
}

export async function writeStatus(host: Host, status: Status): Promise<void> {
  await host.writeFile(STATUS_FILE, `${JSON.stringify(status, null, 2)}\n`, 0o644);
}

/** The status document, or undefined when the agent has not written one (yet). */
export async function readStatus(host: Host): Promise<Status | undefined> {
  const text = await host.readFile(STATUS_FILE);
  if (text === undefined) return undefined;
  let status: Status | undefined;
  try {
    status = statusFromDocument(JSON.parse(text));
  } catch (err) {
    throw new InputError(`not a kubeseed status document (${(err as Error).message})`, { file: host.resolve(STATUS_FILE) });
  }
  if (!status) throw new InputError('not a kubeseed status document (no known state)', { file: host.resolve(STATUS_FILE) });
  return status;
}

const PHASE_STATES: ReadonlySet<string> = new Set<PhaseStateName>(['pending', 'running', 'done', 'skipped', 'failed', 'interrupted']);
const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isString = (v: unknown): v is string => typeof v === 'string';
/** The named fields of a record that are strings; any other is left out. */
const stringFields = (r: Record<string, unknown>, names: readonly string[]) => Object.fromEntries(names.flatMap((n) => (isString(r[n]) ? [[n, r[n]]] : [])));
const listOf = <T>(v: unknown, item: (x: unknown) => T[]): T[] => (Array.isArray(v) ? v.flatMap(item) : []);

/**
 * A status document as another program got it (`agent status --json` over SSH, a file an older or a damaged
 * agent wrote): the Status it holds, or undefined when it holds no known state. What does not have the
 * document's shape is left out rather than trusted (a phase or unit without a name, a field of another type),
 * so every reader sees the types above and a half-broken answer still reads as far as it goes.
 */
export function statusFromDocument(doc: unknown): Status | undefined {
  if (!isRecord(doc) || !isString(doc.state) || !Object.hasOwn(AGENT_STATES, doc.state)) return undefined;
  const phases = listOf<PhaseStatus>(doc.phases, (p) =>
    isRecord(p) && isString(p.name) && isString(p.state) && PHASE_STATES.has(p.state)
      ? [
          {
            ...(stringFields(p, ['name', 'startedAt', 'endedAt', 'error', 'reason']) as Pick<PhaseStatus, 'name'>),
            state: p.state as PhaseStateName,
            ...(typeof p.waitedMs === 'number' && { waitedMs: p.waitedMs }),
          },
        ]
      : [],
  );
  const units = listOf<UnitStatus>(doc.units, (u) => (isRecord(u) && isString(u.name) && isString(u.state) ? [{ file: '', ...(stringFields(u, ['name', 'file', 'state', 'error']) as Pick<UnitStatus, 'name' | 'state'>) }] : []));
  const strings = (v: unknown) => listOf(v, (x) => (isString(x) ? [x] : []));
  const optional = ['roleFile', 'cluster', 'domain', 'apiEndpoint', 'phase', 'waitingOn', 'waitingSince', 'imageVersion'];
  // Facts phases publish stay as they are (their readers, e.g. the boot timing, check their own); the
  // document's own optional fields stay only with the right type.
  const facts = Object.fromEntries(Object.entries(doc).filter(([key]) => key !== 'role' && !optional.includes(key)));
  return {
    ...facts,
    state: doc.state as AgentState,
    ...((doc.role === 'master' || doc.role === 'minion') && { role: doc.role }),
    ...stringFields(doc, optional),
    phases,
    masters: strings(doc.masters),
    peers: strings(doc.peers),
    units,
    errors: strings(doc.errors),
    warnings: strings(doc.warnings),
    agentVersion: isString(doc.agentVersion) ? doc.agentVersion : '',
    startedAt: isString(doc.startedAt) ? doc.startedAt : '',
    updatedAt: isString(doc.updatedAt) ? doc.updatedAt : '',
  };
}

/** The units the agent has enabled, by name: running, done (oneshots), on their way, or (offline) linked. */
export function enabledUnits(status: Status | undefined): string[] {
  const enabled: ReadonlySet<string> = new Set(['enabled', 'active', 'succeeded', 'starting']);
  return (status?.units ?? [])
    .filter((u) => enabled.has(u.state))
    .map((u) => u.name)
    .sort();
}

/** The human view: one screen that says where the node is and why. */
export function formatStatus(s: Status, now: Date): string {
  const lines: string[] = [];
  const row = (label: string, value: string) => lines.push(`${`${label}:`.padEnd(10)}${value}`);
  row('state', `${s.state}${s.phase && s.state !== 'ready' ? ` (phase ${s.phase})` : ''}`);
  if (s.role) row('role', `${s.role} (${s.roleFile ?? '?'})`);
  if (s.cluster) row('cluster', `${s.cluster}.${s.domain ?? ''}${s.apiEndpoint ? `  api ${s.apiEndpoint}` : ''}`);
  if (s.waitingOn) {
    // An interrupted agent waits no more: say how long it had waited, not how long ago that was.
    const stopped = s.state === 'interrupted';
    const until = stopped ? Date.parse(s.updatedAt) : now.getTime();
    const waited = s.waitingSince ? ` for ${formatDuration(until - Date.parse(s.waitingSince))}` : '';
    row(stopped ? 'waited' : 'waiting', `${s.waitingOn}${waited}${stopped ? ' (then interrupted)' : ''}`);
  }
  if (s.masters.length) row('masters', s.masters.join(', '));
  const etcd = s.etcd as EtcdFacts | undefined;
  if (etcd?.health) row('etcd', `${etcd.health.summary} (this member ${etcd.member})`);
  else if (etcd?.decision) row('etcd', `member ${etcd.member} (${etcd.decision}), ${etcd.servers?.length ?? 0} members`);
  if (s.peers.length) row('peers', s.peers.length > 8 ? `${s.peers.slice(0, 8).join(', ')} and ${s.peers.length - 8} more` : s.peers.join(', '));
  if (s.weaveConsensus) {
    const c = s.weaveConsensus;
    row('weave', `${c.ipallocInit}: ${c.reason}`);
    if (c.contradiction) lines.push(`${' '.repeat(10)}DNS disagrees: ${c.contradiction}`);
  }
  row('agent', `${s.agentVersion}${s.imageVersion ? `  image ${s.imageVersion}` : ''}  updated ${formatDuration(now.getTime() - Date.parse(s.updatedAt))} ago`);
  if (s.phases.length) {
    lines.push('phases:');
    const width = Math.max(...s.phases.map((p) => p.name.length));
    for (const p of s.phases) {
      const took = p.startedAt ? ` ${formatDuration((p.endedAt ? Date.parse(p.endedAt) : now.getTime()) - Date.parse(p.startedAt))}` : '';
      lines.push(`  ${p.name.padEnd(width)}  ${p.state.padEnd(11)}${took}${p.error ? `  ${p.error}` : ''}${p.reason ? `  (${p.reason})` : ''}`);
    }
  }
  if (s.units.length) {
    lines.push('units:');
    const width = Math.max(...s.units.map((u) => u.name.length));
    for (const u of s.units) lines.push(`  ${u.name.padEnd(width)}  ${u.state}${u.error ? `  ${u.error}` : ''}`);
  }
  for (const [label, list] of [
    ['errors', s.errors],
    ['warnings', s.warnings],
  ] as const) {
    if (!list.length) continue;
    lines.push(`${label}:`);
    for (const e of list) lines.push(`  ${e}`);
  }
  return lines.join('\n');
}

export function formatDuration(ms: number): string {
  const sec = Math.max(0, Math.round(ms / 1000));
  if (sec < 60) return `${sec}s`;
  if (sec < 3600) return `${Math.floor(sec / 60)}m${String(sec % 60).padStart(2, '0')}s`;
  return `${Math.floor(sec / 3600)}h${String(Math.floor((sec % 3600) / 60)).padStart(2, '0')}m`;
}
