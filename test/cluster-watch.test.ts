// scripts/cluster/watch.ts, the watcher `cluster up`, `start` and `status` run: what it reports when boots hang,
// the state file it keeps saving while nodes power-cycle, and `status` on a cluster an earlier `up` left ready
// (every node is still asked over SSH, and report.html is written from their answers, not from cluster.json).
import t from 'tap';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NodeReport } from '../scripts/check/node-report.js';
import { exitCodeFor, STATUS_FILE, type AgentState } from '../agent/status.js';
import { keepPrevious, previousOf, readState, writeState, type ClusterState, type NodeState } from '../scripts/cluster/state.js';
import { watchNodes } from '../scripts/cluster/watch.js';
import { openClusterPage, REPORT_FILE } from '../scripts/web/cluster-page.js';
import { generateKeyPair, startSshServer, type TestSshServer } from './helpers/ssh-server.js';
import { recordStatusStream } from './helpers/status-stream.js';

const start = Date.parse('2026-12-02T10:00:00.000Z');
const stream = await recordStatusStream(start);
const lastAnswer = (node: string) => stream.events.filter((e) => e.node === node).at(-1)!.result;

t.test('cluster status on a cluster up left ready: every node is asked once, and report.html shows their phases', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'kubeseed-watch-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const client = generateKeyPair();
  const servers: TestSshServer[] = [];
  t.teardown(async () => {
    for (const s of servers) await s.close();
  });
  // Two nodes an earlier `up` saw ready; now one is still ready and the other's agent has failed since.
  const answers: Record<string, { stdout: string; code: number }> = {
    'master-1': lastAnswer('master-1'),
    'minion-1': { ...lastAnswer('minion-1'), code: 1, stdout: JSON.stringify({ ...JSON.parse(lastAnswer('minion-1').stdout), state: 'failed', errors: ['units: kubelet.service failed'] }) },
  };
  const nodes: NodeState[] = [];
  for (const [name, answer] of Object.entries(answers)) {
    // The status file says what `agent status` answers, as on a node (the watch reads one, then asks the other).
    const server = await startSshServer(client.publicKey, (command) => (command === 'agent status --json' ? answer : { stdout: '', code: 127 }), {
      files: (path) => (path === STATUS_FILE ? answer.stdout : undefined),
    });
    servers.push(server);
    const [type, blob] = server.hostPublicKey.split(' ');
    await writeFile(join(dir, `${name}.console`), 'booted\n');
    await writeFile(join(dir, `${name}.report`), `-----BEGIN SSH HOST KEY KEYS-----\n${type} ${blob}\n-----END SSH HOST KEY KEYS-----\n`);
    const role = name.startsWith('master') ? 'master' : 'minion';
    nodes.push({ name, role, address: '', lanMac: '', bootMac: '', sshPort: server.port, power: 'on', boots: 1, poweredOnAt: start, readyAt: start + 60_000, state: 'ready', phase: 'units' });
  }
  // A third node, powered off since: its key, known from an earlier watch, must stay in known_hosts when this
  // watch rewrites the file with the keys it has read (the e2e's next SSH to it failed without that).
  nodes.push({ name: 'minion-2', role: 'minion', address: '', lanMac: '', bootMac: '', sshPort: 9, power: 'off', boots: 1, state: 'off' });
  const earlierKey = '[127.0.0.1]:9 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJm0k2aC7sD1d1E3cQp0bZlQ2f2yK8o3o2u5qB5vN8rX';
  await writeFile(join(dir, 'known_hosts'), `${earlierKey}\n`);
  const state: ClusterState = { cluster: 'local', domain: 'k8s', accel: 'tcg', memoryMb: 512, mcast: { group: '230.0.0.1', port: 1 }, nodes };
  const page = await openClusterPage(state, dir, undefined, () => undefined);
  const heard: string[] = [];
  const ok = await watchNodes(state, {
    ...following(t, dir, client.privateKey),
    save: async () => undefined,
    log: () => undefined,
    onReport: (node: NodeState, report: NodeReport) => {
      heard.push(node.name);
      page.report(node, report);
    },
    // Shorter than any SSH handshake: the watch must not end on cluster.json's "ready" before anyone answered.
    pollMs: 1,
    // As `cluster status` calls it: one full pass, every answer awaited (a longer watch ends at the first
    // failure, and under load minion-1's could come before master-1's).
    timeoutMs: 0,
  });
  await page.finish();
  t.same(heard.sort(), ['master-1', 'minion-1'], 'every node that is on was asked');
  t.same(
    servers.map((s) => s.commands.filter((c) => c === 'agent status --json').length),
    [1, 1],
    'each asked `agent status` once, the ready master too, though its file says ready: cluster.json is an earlier watch\'s',
  );
  const knownHosts = (await readFile(join(dir, 'known_hosts'), 'utf8')).split('\n').filter(Boolean);
  t.equal(knownHosts.length, 3, 'known_hosts: the two keys read now and the one kept');
  t.ok(knownHosts.includes(earlierKey), "the powered-off node's earlier key is kept");
  t.equal(ok, false, 'a node that failed since is not called ready');
  t.equal(nodes.find((n) => n.name === 'minion-1')?.state, 'failed');
  const html = await readFile(join(dir, REPORT_FILE), 'utf8');
  t.match(html, /<tr id="node-minion-1" class="state-failed"[^]*units: kubelet\.service failed/, 'the report says what the node says now');
  for (const phase of ['pki', 'wait-for-masters', 'cni', 'weave', 'units']) t.match(html, new RegExp(`minion-1[^]*${phase}`), `minion-1's ${phase} phase is on the timeline`);
  t.notMatch(html, /power-on to ready/, 'no row is drawn from boot times alone');
});

function node(name: string, role: 'master' | 'minion'): NodeState {
  return { name, role, address: '192.168.100.10', lanMac: '', bootMac: '', sshPort: 1, power: 'off', boots: 0 };
}

async function stateDir(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'cluster-watch-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

t.test('every node hangs twice: the watch fails, though the failed nodes end up powered off', async (t) => {
  const dir = await stateDir(t);
  const state: ClusterState = { cluster: 'local', domain: 'k8s', accel: 'tcg', memoryMb: 512, mcast: { group: '230.0.0.1', port: 1 }, nodes: [node('master-1', 'master'), node('minion-1', 'minion')] };
  const powerOn = async (n: NodeState) => {
    Object.assign(n, { power: 'on', state: 'booting', poweredOnAt: Date.now() - 1000, boots: n.boots + 1 });
    await writeState(dir, state);
  };
  const powerOff = async (n: NodeState) => {
    Object.assign(n, { power: 'off', state: 'off' });
    await writeState(dir, state);
  };
  for (const n of state.nodes) await powerOn(n);
  const lines: string[] = [];
  const ok = await watchNodes(state, {
    stateDir: dir,
    privateKey: '',
    timeoutMs: 20_000,
    allowWaiting: false,
    hangMs: Infinity,
    // Already past: no agent ever answers, so each node is booted again once, then given up on.
    bootDeadlineMs: 0,
    files: () => ({ consoleLog: join(dir, 'none.log'), reportLog: join(dir, 'none.report') }),
    powerOn,
    powerOff,
    isRunning: async () => true,
    save: () => writeState(dir, state),
    log: (line) => lines.push(line),
    pollMs: 5,
  });
  t.equal(ok, false, 'the watch reports failure (cluster up exits 1)');
  // The watch ends at the first node given up on; the other may still be in its retry by then.
  const given = state.nodes.filter((n) => n.state === 'failed');
  t.ok(given.length >= 1, 'a node was given up on');
  t.ok(given.every((n) => n.boots === 2), 'only after its one retry');
  t.notOk(lines.some((l) => /ENOENT|Error/.test(l)), 'no node lost its retry to a state-file race');
  t.match(lines.join('\n'), /(master|minion)-1 +failed: no agent answer in time, and again on the retry/);
  t.same((await readState(dir))?.nodes.map((n) => n.state), state.nodes.map((n) => n.state), 'the state file says what the watch ended with');
});

t.test('start NODE: the nodes ready since an earlier watch are never rebooted, however long ago they booted', async (t) => {
  const dir = await stateDir(t);
  const up = { ...node('master-1', 'master'), power: 'on' as const, boots: 1, poweredOnAt: Date.now() - 3_600_000, readyAt: Date.now() - 3_000_000, state: 'ready' as const };
  // Port 9: nothing answers SSH there, as a busy guest may not for a while.
  const state: ClusterState = { cluster: 'local', domain: 'k8s', accel: 'tcg', memoryMb: 512, mcast: { group: '230.0.0.1', port: 1 }, nodes: [{ ...up, sshPort: 9 }] };
  const touched: string[] = [];
  await watchNodes(state, {
    stateDir: dir,
    privateKey: '',
    timeoutMs: 1_000,
    allowWaiting: false,
    hangMs: 0,
    bootDeadlineMs: 0,
    files: () => ({ consoleLog: join(dir, 'none.log'), reportLog: join(dir, 'none.report') }),
    powerOn: async (n) => void touched.push(`on ${n.name}`),
    powerOff: async (n) => void touched.push(`off ${n.name}`),
    isRunning: async () => true,
    save: () => writeState(dir, state),
    log: () => undefined,
    pollMs: 5,
  });
  t.same(touched, [], 'master-1, ready an hour ago and slow to answer, keeps running (its etcd data lives in RAM)');
});

t.test('a node whose QEMU exits (a guest panic with panic=-1 under -no-reboot) is booted again, even after it was ready', async (t) => {
  const dir = await stateDir(t);
  const up = { ...node('master-1', 'master'), power: 'on' as const, boots: 1, poweredOnAt: Date.now() - 600_000, readyAt: Date.now() - 300_000, state: 'ready' as const, sshPort: 9 };
  const state: ClusterState = { cluster: 'local', domain: 'k8s', accel: 'tcg', memoryMb: 512, mcast: { group: '230.0.0.1', port: 1 }, nodes: [up] };
  const touched: string[] = [];
  const lines: string[] = [];
  let exited = true;
  await watchNodes(state, {
    stateDir: dir,
    privateKey: '',
    timeoutMs: 500,
    allowWaiting: false,
    hangMs: Infinity,
    bootDeadlineMs: Infinity,
    files: () => ({ consoleLog: join(dir, 'none.log'), reportLog: join(dir, 'none.report') }),
    powerOn: async (n) => {
      touched.push(`on ${n.name}`);
      Object.assign(n, { power: 'on', boots: n.boots + 1 });
    },
    powerOff: async (n) => {
      touched.push(`off ${n.name}`);
      Object.assign(n, { power: 'off' });
    },
    // The first look finds QEMU gone; the new boot's QEMU keeps running.
    isRunning: async () => {
      const running = !exited;
      exited = false;
      return running;
    },
    save: () => writeState(dir, state),
    log: (line) => lines.push(line),
    pollMs: 5,
  });
  t.same(touched, ['off master-1', 'on master-1'], 'powered off and on once, not left hanging');
  t.match(lines.join('\n'), /master-1 +QEMU exited: powering off and booting again \(that boot's console: \S+\/none\.prev\.log\)/, 'names where that boot\'s console was kept');
});

t.test("a power cycle keeps the last boot's console beside the new one", async (t) => {
  const dir = await stateDir(t);
  const log = join(dir, 'console.log');
  await keepPrevious(log);
  t.same(await readdir(dir), [], 'no console yet: nothing to keep, no error');
  await writeFile(log, 'Kernel panic - not syncing: first boot\n');
  await keepPrevious(log);
  t.same(await readdir(dir), ['console.prev.log']);
  t.equal(await readFile(previousOf(log), 'utf8'), 'Kernel panic - not syncing: first boot\n');
  await writeFile(log, 'second boot\n');
  await keepPrevious(log);
  t.equal(await readFile(previousOf(log), 'utf8'), 'second boot\n', 'the boot before replaces the older one');
});

t.test('concurrent saves of the state file all land, and leave no temporary file behind', async (t) => {
  const dir = await stateDir(t);
  const state: ClusterState = { cluster: 'local', domain: 'k8s', accel: 'tcg', memoryMb: 512, mcast: { group: '230.0.0.1', port: 1 }, nodes: [] };
  const writes = Array.from({ length: 20 }, () => writeState(dir, state));
  const results = await Promise.allSettled(writes);
  t.same(results.filter((r) => r.status === 'rejected'), [], 'no write fails');
  t.same(await readdir(dir), ['cluster.json']);
});

/** A status document as the agent writes it, in the given state (and waiting on the masters unless ready or failed). */
function statusDocument(state: AgentState): string {
  const extra = state === 'ready' ? {} : state === 'failed' ? { errors: ['units: kubelet.service failed'] } : { waitingOn: 'masters' };
  return JSON.stringify({ ...JSON.parse(lastAnswer('minion-1').stdout), state, ...extra });
}

/**
 * A booted node on a real SSH server: its status file, served over SFTP, says each of `states` in turn, one per
 * read (undefined: not written yet; the last one stays), or what `states` says at its nth read; `agent status
 * --json` answers from the file as it is then.
 */
async function bootedNode(
  t: { teardown(fn: () => unknown): void },
  dir: string,
  publicKey: string,
  name: string,
  states: (AgentState | undefined)[] | ((read: number) => AgentState | undefined),
) {
  let reads = 0;
  const now = () => (typeof states === 'function' ? states(reads) : states[Math.min(Math.max(reads - 1, 0), states.length - 1)]);
  const server = await startSshServer(
    publicKey,
    (command) => {
      if (command !== 'agent status --json') return { stdout: 'Startup finished in 1s (kernel) + 2s (userspace) = 3s\n', code: 0 };
      const state = now() ?? 'starting';
      return { stdout: statusDocument(state), code: exitCodeFor(state) };
    },
    {
      files: (path) => {
        if (path !== STATUS_FILE) return undefined;
        reads += 1;
        const state = now();
        return state && statusDocument(state);
      },
    },
  );
  t.teardown(() => server.close());
  const [type, blob] = server.hostPublicKey.split(' ');
  await writeFile(join(dir, `${name}.console`), 'booted\n');
  await writeFile(join(dir, `${name}.report`), `-----BEGIN SSH HOST KEY KEYS-----\n${type} ${blob}\n-----END SSH HOST KEY KEYS-----\n`);
  const role = name.startsWith('master') ? 'master' : 'minion';
  const state: NodeState = { ...node(name, role), sshPort: server.port, power: 'on', boots: 1, poweredOnAt: Date.now(), state: 'booting' };
  return { server, state, statusAsked: () => server.commands.filter((c) => c === 'agent status --json').length };
}

t.test('while a node boots the watch reads its status file over SFTP; only the answer that counts runs `agent status` (Node) on the guest', async (t) => {
  const dir = await stateDir(t);
  const client = generateKeyPair();
  const minion = await bootedNode(t, dir, client.publicKey, 'minion-1', [undefined, 'waiting', 'ready']);
  const state: ClusterState = { cluster: 'local', domain: 'k8s', accel: 'tcg', memoryMb: 512, mcast: { group: '230.0.0.1', port: 1 }, nodes: [minion.state] };
  const lines: string[] = [];
  const ok = await watchNodes(state, {
    ...following(t, dir, client.privateKey),
    save: async () => undefined,
    log: (line) => lines.push(line),
    pollMs: 1,
  });
  t.equal(ok, true);
  t.same(minion.server.commands.filter((c) => c !== 'systemd-analyze'), ['agent status --json'], 'Node ran once, for ready; no command read the file');
  t.ok(minion.server.reads.length >= 3 && minion.server.reads.every((p) => p === STATUS_FILE), 'the file was read over SFTP on every pass');
  t.equal(minion.server.sftpSessions, 1, 'over one SFTP channel');
  t.match(lines.join('\n'), /minion-1 +running : the agent has not written \/run\/kubeseed\/status\.json yet/);
  t.match(lines.join('\n'), /minion-1 +waiting [^\n]*: masters/);
  t.match(lines.join('\n'), /minion-1 +ready in \d+ s/);
  t.equal(minion.state.state, 'ready');
});

t.test('a node ready while another boots is asked `agent status` once, not at every pass (it starts Node on the guest)', async (t) => {
  const dir = await stateDir(t);
  const client = generateKeyPair();
  const master = await bootedNode(t, dir, client.publicKey, 'master-1', ['ready']);
  // Not written yet, then waiting, until the ready master has been looked at for 8 passes (each pass reads its file once).
  const minion = await bootedNode(t, dir, client.publicKey, 'minion-1', (read) => (read < 3 ? undefined : master.server.reads.length < 8 ? 'waiting' : 'ready'));
  const state: ClusterState = { cluster: 'local', domain: 'k8s', accel: 'tcg', memoryMb: 512, mcast: { group: '230.0.0.1', port: 1 }, nodes: [master.state, minion.state] };
  const ok = await watchNodes(state, { ...following(t, dir, client.privateKey), timeoutMs: 10_000, save: async () => undefined, log: () => undefined, pollMs: 1 });
  t.equal(ok, true);
  t.ok(master.server.reads.length >= 8, 'the ready master was watched for 8 passes and more');
  t.equal(master.statusAsked(), 1, 'the master was asked `agent status` once');
  t.equal(minion.statusAsked(), 1, 'the minion once, at its ready');
  t.equal(master.state.state, 'ready');
});

t.test('a node confirmed ready whose status file then says something else is asked `agent status` again', async (t) => {
  const dir = await stateDir(t);
  const client = generateKeyPair();
  const master = await bootedNode(t, dir, client.publicKey, 'master-1', [...Array<AgentState>(5).fill('ready'), 'failed']);
  const minion = await bootedNode(t, dir, client.publicKey, 'minion-1', ['waiting']);
  const state: ClusterState = { cluster: 'local', domain: 'k8s', accel: 'tcg', memoryMb: 512, mcast: { group: '230.0.0.1', port: 1 }, nodes: [master.state, minion.state] };
  const ok = await watchNodes(state, { ...following(t, dir, client.privateKey), timeoutMs: 10_000, save: async () => undefined, log: () => undefined, pollMs: 1 });
  t.equal(ok, false, 'the watch ends on the failure');
  t.equal(master.statusAsked(), 2, 'once for its ready, once when its file said failed');
  t.equal(master.state.state, 'failed');
  t.match(master.state.detail, /kubelet\.service failed/, "the agent's answer, not the file's");
});

/**
 * Watching nodes that are already on, over SSH, never powering one on or off. `status` passes timeout 0 (one
 * pass), `start` its --timeout: with 0 the old code's ending on cluster.json's "ready" depended on whether the
 * first check fell in the same millisecond; a longer pass always shows it.
 */
function following(t: { fail(message: string): unknown }, dir: string, privateKey: string) {
  return {
    stateDir: dir,
    privateKey,
    timeoutMs: 30_000,
    allowWaiting: false,
    hangMs: Infinity,
    bootDeadlineMs: Infinity,
    files: (n: NodeState) => ({ consoleLog: join(dir, `${n.name}.console`), reportLog: join(dir, `${n.name}.report`) }),
    powerOn: async () => void t.fail('never powers a node on'),
    powerOff: async () => void t.fail('never powers a node off'),
    isRunning: async () => true,
  };
}
