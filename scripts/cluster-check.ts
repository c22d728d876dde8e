// `npm run cluster-check -- --hosts a,b,c --key FILE --known-hosts FILE`: asks every node for
// `agent status --json` over SSH and says whether the cluster is ready. Host keys are checked against a
// known_hosts file built from what the nodes reported on their consoles; an unknown key is refused.
// Works the same for the local QEMU cluster (forwarded ports on 127.0.0.1) and for cloud nodes.
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { pathToFileURL } from 'node:url';
import ssh2 from 'ssh2';
import { asUsage, parseCommandLine, required, runCommand, UsageError, wholeNumber } from '../agent/command-line.js';
import { InputError, describeError } from '../agent/errors.js';
import { answeredStateOf, type AnsweredNodeState } from '../agent/status.js';
import { fingerprint, isKnownHostKey, parseKnownHosts, type KnownHost } from './known-hosts.js';

/**
 * For the handshake and for `agent status`: a TCG guest of the local cluster takes seconds for each (node alone
 * starts in about 2.4 s there), so 10 s read every such node as down.
 */
export const DEFAULT_TIMEOUT_MS = 60_000;

export interface Target {
  host: string;
  port: number;
}

export interface SshOptions {
  username: string;
  privateKey: string;
  knownHosts: readonly KnownHost[];
  /** For the handshake; also for each command unless execTimeoutMs says otherwise. */
  timeoutMs?: number;
  execTimeoutMs?: number;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The node did not answer in time (handshake or command): it may be up but slow, unlike a refused connection. */
export class NoAnswer extends Error {}

export interface SshSession {
  /** `input`, when given, is the command's standard input (how a test hands a node a file). */
  exec(command: string, input?: Buffer): Promise<ExecResult>;
  close(): void;
}

export function formatTarget(t: Target): string {
  return t.port === 22 ? t.host : `${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`;
}

/** `host`, `host:port`, `[v6]:port`, comma-separated. */
export function parseTargets(text: string, defaultPort = 22): Target[] {
  const targets = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((item) => {
      const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(item) ?? /^([^:\s[\]]+)(?::(\d+))?$/.exec(item);
      const host = m?.[1];
      const port = m?.[2] === undefined ? defaultPort : Number(m[2]);
      const hostOk = host !== undefined && (isIP(host) !== 0 || /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/i.test(host));
      if (!hostOk || !Number.isInteger(port) || port < 1 || port > 65535) {
        throw new InputError(`--hosts: expected host[:port], got ${JSON.stringify(item)}`, { value: item });
      }
      return { host, port };
    });
  if (targets.length === 0) throw new InputError('--hosts: no hosts given');
  return targets;
}

/** Opens one SSH connection; rejects when the host key is not a known one for this host and port. */
export function openSession(target: Target, opts: SshOptions): Promise<SshSession> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    let refusedKey: string | undefined;
    let ready = false;
    // Rejects every command in flight when the connection dies after 'ready' (their streams never close then).
    let lost: (err: Error) => void = () => undefined;
    const connectionLost = new Promise<never>((_, rejectLost) => (lost = rejectLost));
    connectionLost.catch(() => undefined);
    client.once('ready', () => {
      ready = true;
      resolve({
        exec: (command, input) => Promise.race([execOn(client, command, opts.execTimeoutMs ?? opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, input), connectionLost]),
        close: () => client.end(),
      });
    });
    // ssh2 may emit several errors (and more after 'ready'): an unhandled one would crash the caller.
    client.on('error', (err) => {
      client.end();
      if (ready) return lost(new Error(`${formatTarget(target)}: ${err.message}`));
      // ssh2 marks its own handshake timer with level 'client-timeout'.
      if ((err as { level?: string }).level === 'client-timeout') {
        return reject(new NoAnswer(`${formatTarget(target)}: no SSH handshake within ${Math.round((opts.timeoutMs ?? DEFAULT_TIMEOUT_MS) / 1000)} s`));
      }
      reject(new Error(refusedKey ? `${formatTarget(target)}: host key ${refusedKey} is not in known_hosts, refusing to connect` : `${formatTarget(target)}: ${describeConnectError(err)}`));
    });
    client.connect({
      host: target.host,
      port: target.port,
      username: opts.username,
      privateKey: opts.privateKey,
      readyTimeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      // A VM that is powered off mid-session never sends a FIN: keepalives notice, and the session errors out.
      // Patient ones: a TCG guest on a busy host can be silent for tens of seconds and still be fine.
      keepaliveInterval: 15_000,
      keepaliveCountMax: 8,
      hostVerifier: (key: Buffer) => {
        if (isKnownHostKey(opts.knownHosts, target.host, target.port, key)) return true;
        refusedKey = fingerprint(key);
        return false;
      },
    });
  });
}

/** A refused or unroutable connection in words; the raw message otherwise. */
function describeConnectError(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ECONNREFUSED') return `connection refused (${err.message})`;
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return `no route to host (${err.message})`;
  return err.message;
}

/** One command; rejects when it has not finished within the timeout (the session is then of no more use). */
function execOn(client: ssh2.Client, command: string, timeoutMs: number, input?: Buffer): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.end();
      reject(new NoAnswer(`${command}: no answer within ${Math.round(timeoutMs / 1000)} s`));
    }, timeoutMs);
    client.exec(command, (err, stream) => {
      if (err) {
        clearTimeout(timer);
        return reject(err);
      }
      let stdout = '';
      let stderr = '';
      let code = -1;
      stream.on('data', (d: Buffer) => (stdout += d.toString()));
      stream.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      stream.on('exit', (c: number | null) => (code = c ?? -1));
      stream.on('close', () => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr });
      });
      stream.end(input);
    });
  });
}

/** What the agent's answer means (agent/status.ts owns that table), or why there was no answer. */
export type NodeState = AnsweredNodeState | 'unreachable' | 'timeout';

export interface NodeReport {
  target: string;
  state: NodeState;
  role?: string;
  phase?: string;
  /** What the agent waits on, or the error that stopped it or us. */
  detail?: string;
  /** The whole `agent status --json` document, as the node wrote it. */
  status?: Record<string, unknown>;
}

export const STATUS_COMMAND = 'agent status --json';

/** Turns one `agent status --json` answer into a report line. */
export function reportFromStatus(target: string, result: ExecResult): NodeReport {
  let status: Record<string, unknown> | undefined;
  try {
    const parsed: unknown = JSON.parse(result.stdout);
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) status = parsed as Record<string, unknown>;
  } catch {
    status = undefined;
  }
  const state = answeredStateOf(result.code, status);
  if (!state) {
    const why = (result.stderr.trim() || result.stdout.trim()).split('\n')[0] || 'no output';
    return { target, state: 'unreachable', detail: `${STATUS_COMMAND} exited ${result.code}: ${why}` };
  }
  const text = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  return {
    target,
    state,
    role: text(status?.role),
    phase: text(status?.phase),
    detail: text(status?.waitingOn) ?? text((status?.errors as unknown[] | undefined)?.[0]),
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

export function renderReports(reports: readonly NodeReport[]): string {
  const rows = [['NODE', 'STATE', 'ROLE', 'PHASE', 'DETAIL']];
  for (const r of reports) rows.push([r.target, r.state, r.role ?? '-', r.phase ?? '-', r.detail ?? '']);
  const ready = reports.filter((r) => r.state === 'ready').length;
  return `${renderTable(rows)}\n${ready} of ${reports.length} nodes ready`;
}

const USAGE = `usage: npm run cluster-check -- --hosts HOST[:PORT],... --key FILE --known-hosts FILE [--user NAME] [--port N] [--timeout SECONDS] [--json]
Exit 0 every node ready, 1 some node is not (or unreachable), 2 bad usage or input (the message names it).`;

/** Exit code: 0 every node ready, 1 some node is not, 2 bad usage or input. */
export async function main(argv: string[], out = (s: string) => console.log(s), err = (s: string) => console.error(s)): Promise<number> {
  return runCommand({ name: 'cluster-check', usage: USAGE }, argv, async () => {
    const { values } = parseCommandLine(argv, {
      hosts: { type: 'string' },
      key: { type: 'string' },
      'known-hosts': { type: 'string' },
      user: { type: 'string', default: 'root' },
      port: { type: 'string', default: '22' },
      timeout: { type: 'string', default: String(DEFAULT_TIMEOUT_MS / 1000) },
      json: { type: 'boolean', default: false },
    });
    const hosts = required(values.hosts, '--hosts');
    const keyFile = required(values.key, '--key');
    const knownHostsFile = required(values['known-hosts'], '--known-hosts');
    const port = wholeNumber('--port', values.port, { min: 1, max: 65535 });
    const timeout = Number(values.timeout);
    if (!(timeout > 0)) throw new UsageError(`--timeout must be a positive number of seconds, got ${JSON.stringify(values.timeout)}`);
    // Exit 1 means "a node is not ready": a bad host list or an unreadable file is the caller's mistake, exit 2.
    const { targets, knownHosts, privateKey } = await asUsage(async () => ({
      targets: parseTargets(hosts, port),
      knownHosts: parseKnownHosts(await readInput(knownHostsFile, '--known-hosts'), knownHostsFile),
      privateKey: await readInput(keyFile, '--key'),
    }));
    const reports = await checkNodes(targets, { username: values.user, privateKey, knownHosts, timeoutMs: timeout * 1000 });
    out(values.json ? JSON.stringify(reports, null, 2) : renderReports(reports));
    return reports.every((r) => r.state === 'ready') ? 0 : 1;
  }, { out, err });
}

async function readInput(file: string, flag: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw new InputError(`${flag} ${JSON.stringify(file)}: cannot read: ${(e as NodeJS.ErrnoException).code ?? describeError(e)}`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  process.exit(await main(process.argv.slice(2)));
}
