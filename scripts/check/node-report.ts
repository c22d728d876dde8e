// What each node's `agent status --json` answer means (agent/status.ts owns the table), asked over SSH a bounded
// number of nodes at a time, and the table cluster-check prints.
import { describeError } from '../../agent/errors.js';
import { answeredStateOf, exitCodeFor, STATUS_FILE, statusFromDocument, type AnsweredNodeState, type EtcdFacts, type Status } from '../../agent/status.js';
import { formatTarget, NoAnswer, openSession, type ExecResult, type SshOptions, type SshSession, type Target } from './ssh-session.js';

/** What the agent's answer means (agent/status.ts owns that table), or why there was no answer. */
export type NodeState = AnsweredNodeState | 'unreachable' | 'timeout';

export interface NodeReport {
  target: string;
  state: NodeState;
  role?: string;
  phase?: string;
  /** What the agent waits on, or the error that stopped it or us. */
  detail?: string;
  /** The node's `agent status --json` document, as agent/status.ts reads it. */
  status?: Status;
}

export const STATUS_COMMAND = 'agent status --json';

/**
 * The state the agent's status file names (its text, as a watcher reads it over SFTP), or undefined when it does
 * not parse. What a watcher reads while a node boots, instead of asking `agent status`: that starts Node, tens of
 * seconds of a starved TCG guest's CPU per look, taken from the agent it is watching.
 */
export function stateInStatusFile(text: string): unknown {
  try {
    return (JSON.parse(text) as { state?: unknown }).state;
  } catch {
    return undefined;
  }
}

/**
 * A report from the status file's text (undefined: there is no file yet) while the node is on its way; undefined
 * when only `agent status` can say (the file says ready or failed, or it does not parse), so that answer is the agent's.
 */
export function reportFromStatusFile(target: string, text: string | undefined): NodeReport | undefined {
  if (text === undefined) return { target, state: 'running', detail: `the agent has not written ${STATUS_FILE} yet` };
  const state = stateInStatusFile(text);
  if (state !== 'running' && state !== 'waiting' && state !== 'starting') return undefined;
  const report = reportFromStatus(target, { code: exitCodeFor(state), stdout: text, stderr: '' });
  return report.state === 'unreachable' ? undefined : report;
}

/** Turns one `agent status --json` answer into a report line. */
export function reportFromStatus(target: string, result: ExecResult): NodeReport {
  let status: Status | undefined;
  try {
    status = statusFromDocument(JSON.parse(result.stdout));
  } catch {
    status = undefined;
  }
  const state = answeredStateOf(result.code, status);
  if (!state || !status) {
    const why = (result.stderr.trim() || result.stdout.trim()).split('\n')[0] || 'no output';
    return { target, state: 'unreachable', detail: `${STATUS_COMMAND} exited ${result.code}: ${why}` };
  }
  return {
    target,
    state,
    ...(status.role && { role: status.role }),
    ...(status.phase && { phase: status.phase }),
    ...((status.waitingOn || status.errors[0]) && { detail: status.waitingOn || status.errors[0] }),
    status,
  };
}

export async function checkNode(target: Target, opts: SshOptions): Promise<NodeReport> {
  const name = formatTarget(target);
  let session: SshSession | undefined;
  try {
    session = await openSession(target, opts);
    return reportFromStatus(name, await session.exec(STATUS_COMMAND));
  } catch (err) {
    return { target: name, state: err instanceof NoAnswer ? 'timeout' : 'unreachable', detail: describeError(err) };
  } finally {
    session?.close();
  }
}

/** Checks every node, a bounded number at a time (a thousand cloud nodes must not open a thousand sockets). */
export async function checkNodes(targets: readonly Target[], opts: SshOptions, concurrency = 16): Promise<NodeReport[]> {
  const reports: NodeReport[] = new Array(targets.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < targets.length; i = next++) reports[i] = await checkNode(targets[i] as Target, opts);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, targets.length) }, worker));
  return reports;
}

export function renderTable(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length))) ?? [];
  return rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c] ?? 0)).join('  ').trimEnd()).join('\n');
}

const ETCD_ORDER = ['healthy', 'degraded', 'lost'] as const;

/**
 * The etcd cluster as the masters that answered see it: the worst health any of them reports (a master
 * that is down reports nothing, so the others' view names it), or undefined when no master reports one.
 */
export function etcdVerdict(reports: readonly NodeReport[]): string | undefined {
  const seen = reports
    .map((r) => ((r.status as Record<string, unknown> | undefined)?.etcd as EtcdFacts | undefined)?.health)
    .filter((h): h is NonNullable<EtcdFacts['health']> => h !== undefined && ETCD_ORDER.includes(h.state));
  if (!seen.length) return undefined;
  const worst = seen.reduce((a, b) => (ETCD_ORDER.indexOf(b.state) > ETCD_ORDER.indexOf(a.state) ? b : a));
  return `etcd ${worst.summary}`;
}

export function renderReports(reports: readonly NodeReport[]): string {
  const rows = [['NODE', 'STATE', 'ROLE', 'PHASE', 'DETAIL']];
  for (const r of reports) rows.push([r.target, r.state, r.role ?? '-', r.phase ?? '-', r.detail ?? '']);
  const ready = reports.filter((r) => r.state === 'ready').length;
  const etcd = etcdVerdict(reports);
  return `${renderTable(rows)}\n${ready} of ${reports.length} nodes ready${etcd ? `\n${etcd}` : ''}`;
}
