// Following the VMs of a local cluster from power-on to ready: each node's host keys come from its
// second serial port (in cloud-init's keys_to_console format), then its status file over SFTP and, for the answer
// that counts, its `agent status --json` over SSH. One progress line
// per change; a boot that hangs (about one in 25 under TCG) is powered off and retried once.
import { readFile, stat, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { fingerprint, hostKeysFromConsole, knownHostsLines, knownHostsName, parseKnownHosts, type HostKey } from '../check/known-hosts.js';
import { reportFromStatus, reportFromStatusFile, stateInStatusFile, STATUS_COMMAND, type NodeReport } from '../check/node-report.js';
import { openSession, type SshSession } from '../check/ssh-session.js';
import { previousOf, type ClusterState, type NodeState } from './state.js';
import { enabledUnits, STATUS_FILE } from '../../agent/status.js';
import { bootTiming } from './timing.js';

export interface NodeFiles {
  /** ttyS0: kernel and boot messages; its growth tells a slow boot from a hung one. */
  consoleLog: string;
  /** ttyS1: where the node reports its SSH host keys. */
  reportLog: string;
}

export interface WatchOptions {
  stateDir: string;
  privateKey: string;
  /** Give up after this long. */
  timeoutMs: number;
  /** Nodes that may stop at "waiting" (the master they wait for is powered off on purpose). */
  allowWaiting: boolean;
  /** A boot whose console log has not grown for this long, with no agent answering yet, is hung. */
  hangMs: number;
  /** No agent answer this long after power-on: hung as well. */
  bootDeadlineMs: number;
  files(node: NodeState): NodeFiles;
  powerOn(node: NodeState): Promise<void>;
  powerOff(node: NodeState): Promise<void>;
  isRunning(node: NodeState): Promise<boolean>;
  save(): Promise<void>;
  log(line: string): void;
  /** Every answer a node gives, whole (the live page draws its phases from it). */
  onReport?(node: NodeState, report: NodeReport): void;
  pollMs?: number;
}

interface Tracker {
  keys: HostKey[];
  session?: SshSession;
  consoleSize: number;
  consoleGrewAt: number;
  answered: boolean;
  line: string;
  /**
   * Answered this watch. A state read from cluster.json is an earlier run's: `status` (and `start`) must hear
   * every node once before calling it ready, or they would report, and write report.html from, the past.
   */
  heard: boolean;
  /**
   * `agent status` said ready in this watch, and the status file has said ready ever since: the node keeps that
   * answer. Asking again every pass started Node on it every 2 s (about 2 s of guest CPU each) while others booted.
   */
  readyConfirmed: boolean;
  /** Between the power-off and power-on of a retry: neither on nor done. */
  rebooting: boolean;
  /** Hung twice: powered off for good. */
  failed: boolean;
}

export const KNOWN_HOSTS = 'known_hosts';

function elapsed(since: number): string {
  return `${Math.round((Date.now() - since) / 1000)}s`.padStart(5);
}

/** Follows every powered-on node until all are ready (or waiting, when allowed). True on success. */
export async function watchNodes(state: ClusterState, opts: WatchOptions): Promise<boolean> {
  const started = Date.now();
  const trackers = new Map<string, Tracker>();
  const fresh = (): Tracker => ({ keys: [], consoleSize: 0, consoleGrewAt: Date.now(), answered: false, line: '', heard: false, readyConfirmed: false, rebooting: false, failed: false });
  const say = (node: NodeState, t: Tracker, text: string) => {
    if (text === t.line) return;
    t.line = text;
    opts.log(`[${elapsed(started)}] ${node.name.padEnd(10)} ${text}`);
  };
  const writeKnownHosts = async () => {
    const file = path.join(opts.stateDir, KNOWN_HOSTS);
    // A node whose keys this watch has not read yet keeps the lines an earlier watch wrote for it: `status`
    // asks every node again, and must not drop the master's key because a minion answered first.
    const before = (await readFile(file, 'utf8').catch(() => '')).split('\n');
    const text = state.nodes
      .map((n) => {
        const keys = trackers.get(n.name)?.keys ?? [];
        if (keys.length) return knownHostsLines('127.0.0.1', n.sshPort, keys);
        const name = `${knownHostsName('127.0.0.1', n.sshPort)} `;
        return before.filter((l) => l.startsWith(name)).map((l) => `${l}\n`).join('');
      })
      .join('');
    await writeFile(file, text);
  };
  const reboot = async (node: NodeState, t: Tracker, why: string) => {
    t.rebooting = true;
    try {
      await powerCycle(node, t, why);
    } finally {
      t.rebooting = false;
    }
  };
  const powerCycle = async (node: NodeState, t: Tracker, why: string) => {
    t.session?.close();
    await opts.powerOff(node);
    if (node.boots >= 2) {
      t.failed = true;
      node.state = 'failed';
      node.detail = `${why}, and again on the retry`;
      say(node, t, `failed: ${node.detail}`);
      return;
    }
    say(node, t, `${why}: powering off and booting again (that boot's console: ${previousOf(opts.files(node).consoleLog)})`);
    // A new boot starts from nothing it learnt (keys, session, answers), but is still rebooting until it is on.
    delete t.session;
    Object.assign(t, fresh(), { rebooting: true });
    await opts.powerOn(node);
  };

  let stopped = false;
  const poll = async (node: NodeState) => {
    let t = trackers.get(node.name);
    if (!t) trackers.set(node.name, (t = fresh()));
    if (node.power !== 'on' || node.state === 'failed') return;
    if (!(await opts.isRunning(node))) return reboot(node, t, 'QEMU exited');
    const { consoleLog, reportLog } = opts.files(node);
    const size = (await stat(consoleLog).catch(() => undefined))?.size ?? 0;
    if (size !== t.consoleSize) Object.assign(t, { consoleSize: size, consoleGrewAt: Date.now() });
    // Only a boot that has not reached ready can hang: a node ready since an earlier watch (the others of a
    // `cluster start NODE`) is not rebooted for being up longer than the boot deadline, which wiped their RAM roots.
    if (!t.answered && node.readyAt === undefined) {
      const quiet = Date.now() - t.consoleGrewAt;
      if (quiet > opts.hangMs) return reboot(node, t, `console silent for ${Math.round(quiet / 1000)} s`);
      if (Date.now() - (node.poweredOnAt ?? 0) > opts.bootDeadlineMs) return reboot(node, t, 'no agent answer in time');
    }
    if (t.keys.length === 0) {
      t.keys = hostKeysFromConsole(await readFile(reportLog, 'utf8').catch(() => ''));
      if (t.keys.length === 0) return say(node, t, size ? 'booting' : 'powered on');
      await writeKnownHosts();
      say(node, t, `host key ${fingerprint(t.keys[0]?.blob ?? '')}`);
    }
    if (!t.session) {
      const knownHosts = parseKnownHosts(knownHostsLines('127.0.0.1', node.sshPort, t.keys));
      t.session = await openSession({ host: '127.0.0.1', port: node.sshPort }, { username: 'root', privateKey: opts.privateKey, knownHosts, timeoutMs: 60_000, execTimeoutMs: 240_000 }).catch(
        () => undefined,
      );
      if (!t.session) return say(node, t, 'waiting for ssh');
    }
    // The status file on every pass, over the session's one SFTP channel (about 17 ms of an idle guest's CPU per
    // read, against 160 ms for an exec of cat); `agent status` for the answer that counts, once per ready.
    // A failed read (undefined) goes to `agent status`, as a failed exec of cat did.
    const file = await t.session.readFile(STATUS_FILE).then((text) => ({ text }), () => undefined);
    if (stopped) return; // the answer came after we stopped watching: the state is already saved
    // Ready by `agent status` in this watch, and the file still says so: that answer stands.
    if (t.readyConfirmed && file?.text !== undefined && stateInStatusFile(file.text) === 'ready') return;
    const early = file && reportFromStatusFile(node.name, file.text);
    const result = early ? undefined : await t.session.exec(STATUS_COMMAND).catch(() => undefined);
    if (stopped) return;
    if (!early && !result) {
      t.session.close();
      delete t.session;
      t.readyConfirmed = false;
      return;
    }
    const report = early || reportFromStatus(node.name, result as NonNullable<typeof result>);
    t.readyConfirmed = !early && report.state === 'ready';
    t.heard = true;
    t.answered = report.state !== 'unreachable' || t.answered;
    Object.assign(node, { state: report.state, phase: report.phase, detail: report.detail, units: enabledUnits(report.status) });
    if (report.state === 'ready' && node.readyAt === undefined) {
      node.readyAt = Date.now();
      // Once per boot, at ready: where the time went (the agent's phases and systemd's own account).
      const analyze = await t.session.exec('systemd-analyze').catch(() => undefined);
      const timing = bootTiming(report.status, node.poweredOnAt ?? node.readyAt, node.readyAt, analyze?.stdout);
      if (timing) node.timing = timing;
    }
    opts.onReport?.(node, report);
    const ready = report.state === 'ready' ? ` in ${Math.round(((node.readyAt ?? 0) - (node.poweredOnAt ?? 0)) / 1000)} s` : '';
    say(node, t, `${report.state}${ready} ${report.phase ?? ''}${report.detail ? `: ${report.detail}` : ''}`);
  };

  // Each node is polled on its own: one slow guest (a status over SSH can take minutes under TCG on a busy
  // host) must not hold back the others' progress lines.
  const inflight = new Map<string, Promise<void>>();
  const settled = () => {
    if ([...trackers.values()].some((t) => t.rebooting)) return false;
    const on = state.nodes.filter((n) => n.power === 'on');
    return on.every((n) => trackers.get(n.name)?.heard && (n.state === 'ready' || (opts.allowWaiting && n.state === 'waiting')));
  };
  // A node that failed twice is powered off, so it is no longer among the nodes that are on: without its
  // tracker's word the watch would call the rest "settled" and `up` would exit 0 with nothing ready.
  const anyFailed = () => [...trackers.values()].some((t) => t.failed) || state.nodes.some((n) => n.power === 'on' && n.state === 'failed');
  try {
    for (;;) {
      for (const node of state.nodes.filter((n) => n.power === 'on' && !inflight.has(n.name))) {
        inflight.set(node.name, poll(node).catch((err: unknown) => opts.log(`${node.name}: ${String(err)}`)).finally(() => inflight.delete(node.name)));
      }
      const timedOut = Date.now() - started > opts.timeoutMs;
      // On the last pass, let every poll in flight finish: `status` (timeout 0) is exactly one full pass.
      if (timedOut) await Promise.allSettled(inflight.values());
      else await new Promise((r) => setTimeout(r, opts.pollMs ?? 2000));
      await opts.save();
      if (anyFailed()) return false;
      if (settled()) return true;
      if (timedOut) {
        if (opts.timeoutMs > 0) opts.log(`gave up after ${Math.round(opts.timeoutMs / 1000)} s`);
        return false;
      }
    }
  } finally {
    stopped = true;
    for (const t of trackers.values()) t.session?.close();
    await Promise.allSettled(inflight.values());
    // What the last polls decided (a node given up on) must reach cluster.json, not only the log.
    await opts.save();
  }
}
