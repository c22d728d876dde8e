// The state directory of a local cluster: one JSON file naming every process `cluster up` started
// (by PID, with a marker from its command line so a recycled PID is never killed), the ports, and what
// each node last reported. `cluster status` and `cluster down` work from it alone.
import { readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import * as path from 'node:path';
import { InputError } from '../../agent/errors.js';
import type { Role } from '../../agent/dns-names.js';
import type { Accel } from './qemu.js';
import type { BootTiming } from './timing.js';

export type Power = 'off' | 'on';

export interface NodeState {
  name: string;
  role: Role;
  address: string;
  lanMac: string;
  bootMac: string;
  sshPort: number;
  power: Power;
  pid?: number;
  /** ms since the epoch when QEMU was started for the current boot. */
  poweredOnAt?: number;
  /** ms since the epoch when the agent first said ready in this boot. */
  readyAt?: number;
  /** Boots of this node so far (a hung boot is retried once). */
  boots: number;
  state?: string;
  phase?: string;
  detail?: string;
  units?: string[];
  /** Where this boot's time went, taken when the node first said ready. */
  timing?: BootTiming;
}

export interface ClusterState {
  cluster: string;
  domain: string;
  accel: Accel;
  memoryMb: number;
  mcast: { group: string; port: number };
  metal?: { pid: number; httpPort: number; dnsPort: number; baseUrl: string };
  nodes: NodeState[];
}

export const STATE_FILE = 'cluster.json';

export async function readState(stateDir: string): Promise<ClusterState | undefined> {
  const file = path.join(stateDir, STATE_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    return JSON.parse(text) as ClusterState;
  } catch {
    throw new InputError('not valid JSON; remove the state directory after stopping its processes by hand', { file });
  }
}

let writes = 0;

export async function writeState(stateDir: string, state: ClusterState): Promise<void> {
  const file = path.join(stateDir, STATE_FILE);
  // One temporary name per write: the watcher saves while nodes power-cycle, and two writers sharing one
  // name lose a rename (ENOENT), which left a node powered off instead of booted again.
  const tmp = `${file}.${process.pid}.${++writes}.tmp`;
  await writeFile(tmp, `${JSON.stringify(state, null, 2)}\n`);
  await rename(tmp, file);
}

/** The command line of a live process, or undefined when there is none with this PID. */
async function cmdline(pid: number): Promise<string | undefined> {
  try {
    return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').join(' ');
  } catch {
    return undefined;
  }
}

/** True when PID is alive and is still the process we started (its command line names the marker). */
export async function isOurs(pid: number | undefined, marker: string): Promise<boolean> {
  if (!pid) return false;
  const cmd = await cmdline(pid);
  return cmd !== undefined && cmd.includes(marker);
}

/** Our own process and its ancestors (npx, tsx, a shell): their command lines may name the state dir too. */
async function ourLineage(): Promise<Set<number>> {
  const lineage = new Set<number>();
  for (let pid = process.pid; pid > 1 && !lineage.has(pid); ) {
    lineage.add(pid);
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    pid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  }
  return lineage;
}

/** Every live process, besides us and our ancestors, whose command line names the marker: what `down` must leave at zero. */
export async function processesNaming(marker: string): Promise<number[]> {
  const lineage = await ourLineage();
  const pids = (await readdir('/proc')).filter((p) => /^\d+$/.test(p)).map(Number).filter((p) => !lineage.has(p));
  const found: number[] = [];
  for (const pid of pids) if ((await cmdline(pid))?.includes(marker)) found.push(pid);
  return found;
}

/** SIGTERM, then SIGKILL after the grace period; only if the PID is still ours. True when it is gone. */
export async function stopProcess(pid: number | undefined, marker: string, graceMs = 5000): Promise<boolean> {
  if (!(await isOurs(pid, marker))) return true;
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(pid as number, sig);
    } catch {
      // gone already
    }
  };
  signal('SIGTERM');
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!(await isOurs(pid, marker))) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  signal('SIGKILL');
  for (let i = 0; i < 50; i++) {
    if (!(await isOurs(pid, marker))) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

/** Where keepPrevious moves a log: `console.log` → `console.prev.log`. */
export function previousOf(file: string): string {
  const { dir, name, ext } = path.parse(file);
  return path.join(dir, `${name}.prev${ext}`);
}

/**
 * Moves a node's log aside (over the one moved before) so that its next boot starts the file afresh while the
 * last boot's stays readable: the console of a boot that ended in a panic or a reboot is all that tells why.
 */
export async function keepPrevious(file: string): Promise<void> {
  await rename(file, previousOf(file)).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

/** Starts a process that outlives us (its own session, output to a log file) and returns its PID. */
export function startDetached(command: string, args: string[], logFile: string, env: NodeJS.ProcessEnv = process.env): number {
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn(command, args, { detached: true, stdio: ['ignore', fd, fd], env });
    child.on('error', () => undefined); // reported below: no PID
    if (child.pid === undefined) throw new Error(`could not start ${command}`);
    child.unref();
    return child.pid;
  } finally {
    closeSync(fd);
  }
}
