// The product end to end: `npm run cluster -- up` boots the image as real machines under QEMU (one master,
// two minions), PXE-booted from the metal server, and every node turns itself into its role. Then the
// variant the design exists for: minions booted while the master is off wait for it, and finish once it
// starts. `cluster down` leaves no process behind. Node facts are read over SSH (host keys checked).
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { openSession, type SshSession } from '../../scripts/check/ssh-session.js';
import { parseKnownHosts } from '../../scripts/check/known-hosts.js';
import { isOurs, processesNaming, readState, type ClusterState, type NodeState } from '../../scripts/cluster/state.js';

const REPO = path.resolve(import.meta.dirname, '../..');
const stateDir = await mkdtemp(path.join(tmpdir(), 'kubeseed-e2e-cluster-'));

/** Runs the cluster command; its progress lines go to the test log as they come. */
function cluster(...args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn('npx', ['tsx', 'scripts/cluster.ts', ...args, '--state-dir', stateDir], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const take = (chunk: Buffer) => {
      out += chunk.toString();
      for (const line of chunk.toString().split('\n').filter((l) => l.trim() && !l.startsWith('npm warn'))) t.comment(line);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('close', (code) => resolve({ code: code ?? 1, out }));
  });
}

function bootTime(node: NodeState): string {
  const secs = node.readyAt && node.poweredOnAt ? `${Math.round((node.readyAt - node.poweredOnAt) / 1000)} s` : 'not ready';
  return `${node.name} (${node.role}): power-on to ready ${secs}`;
}

async function state(): Promise<ClusterState> {
  const s = await readState(stateDir);
  if (!s) throw new Error(`no cluster.json in ${stateDir}`);
  return s;
}

async function ssh(node: NodeState): Promise<SshSession> {
  const knownHosts = parseKnownHosts(await readFile(path.join(stateDir, 'known_hosts'), 'utf8'));
  const privateKey = await readFile(path.join(stateDir, 'id_ed25519'), 'utf8');
  return openSession({ host: '127.0.0.1', port: node.sshPort }, { username: 'root', privateKey, knownHosts, timeoutMs: 60_000 });
}

async function agentStatus(s: SshSession): Promise<Record<string, any>> {
  return JSON.parse((await s.exec('agent status --json')).stdout);
}

/** Which roles a unit belongs to, by DESIGN.md's rule, read from units/ (not from the agent's own code). */
async function unitRoles(): Promise<Map<string, string[]>> {
  const roles = new Map<string, string[]>();
  for (const name of await readdir(path.join(REPO, 'units'))) {
    const text = await readFile(path.join(REPO, 'units', name), 'utf8');
    const conds = [...text.matchAll(/^ConditionPathExists=(\|?)(!?)\/etc\/sysconfig\/kubernetes-(masters|minions)\s*$/gm)].map((m) => ({
      trigger: m[1] === '|',
      negate: m[2] === '!',
      role: m[3] === 'masters' ? 'master' : 'minion',
    }));
    if (!conds.length) continue;
    const holds = (only: string) => (c: (typeof conds)[number]) => (c.role === only) !== c.negate;
    roles.set(
      name,
      ['master', 'minion'].filter((r) => {
        const plain = conds.filter((c) => !c.trigger);
        const triggers = conds.filter((c) => c.trigger);
        return plain.every(holds(r)) && (triggers.length === 0 || triggers.some(holds(r)));
      }),
    );
  }
  return roles;
}

t.teardown(async () => {
  await cluster('down');
});

t.test('one master and two minions come up from the image', async (t) => {
  const up = await cluster('up', '--masters', '1', '--minions', '2');
  if (!t.equal(up.code, 0, 'cluster up succeeds')) return;
  t.match(up.out, /NODE\s+ROLE\s+ADDRESS\s+SSH\s+STATE\s+PHASE\s+UNITS\s+POWER-ON TO READY/, 'it ends with the node table');
  t.match(up.out, /NODE\s+ROLE\s+POWER-ON TO READY\s+BEFORE AGENT \(FLOOR\)\s+AGENT OWN/, 'and where each boot went');
  const report = await readFile(path.join(stateDir, 'report.html'), 'utf8');
  t.match(report, /cluster check: 3 of 3 nodes ready/, 'it leaves its report, the page of the boot (scripts/web)');
  for (const name of ['master-1', 'minion-1', 'minion-2']) t.match(report, new RegExp(`<tr id="node-${name}" class="state-ready"`), `the report has ${name}'s row`);
  const s = await state();
  const roles = await unitRoles();
  const minions = s.nodes.filter((n) => n.role === 'minion');
  for (const node of s.nodes) {
    t.equal(node.state, 'ready', `${node.name} is ready`);
    t.comment(bootTime(node));
    const session = await ssh(node);
    try {
      const status = await agentStatus(session);
      t.equal(status.role, node.role, `${node.name} says it is a ${node.role}`);
      t.equal(status.state, 'ready');
      const mine = status.units as { name: string; state: string }[];
      t.same(mine.filter((u) => u.state !== 'active' && u.state !== 'succeeded'), [], `${node.name}: every unit of its role is active`);
      // Quiet steady state: PID 1 has not reloaded since the agent said ready (reconcile passes read only).
      const readySince = Date.parse(String((status.phases as { name: string; endedAt?: string }[]).find((p) => p.name === 'units')?.endedAt)) / 1000;
      const pid1 = (await session.exec('journalctl _PID=1 -o short-unix --no-pager')).stdout.split('\n');
      const reloads = pid1.filter((l) => /Reloading\.?$/.test(l) && Number(l.split(' ')[0]) > readySince);
      t.same(reloads, [], `${node.name}: no "Reloading." from PID 1 after ready`);
      // Each role's units enabled, the other role's not.
      const units = [...roles.keys()];
      const enabled = (await session.exec(`systemctl is-enabled ${units.join(' ')}`)).stdout.trim().split('\n');
      units.forEach((unit, i) => {
        const mine = roles.get(unit)?.includes(node.role) ?? false;
        t.equal(enabled[i] === 'enabled', mine, `${node.name}: ${unit} ${mine ? 'enabled' : 'not enabled'}`);
      });
      if (node.role === 'minion') {
        const wait = (status.phases as { name: string; state: string; startedAt?: string; endedAt?: string }[]).find((p) => p.name === 'wait-for-masters');
        t.equal(wait?.state, 'done', `${node.name} waited for the masters`);
        t.same(status.masters, [s.nodes.find((n) => n.role === 'master')?.address], `${node.name} found the master over DNS`);
        const other = minions.find((m) => m !== node) as NodeState;
        const env = (await session.exec('cat /run/kubeseed/weave.env')).stdout;
        t.match(env, new RegExp(`^PEERS="?${other.address.replaceAll('.', '\\.')}"?$`, 'm'), `${node.name}: PEERS is the other minion`);
        t.match(env, /^MEMBERS="?2"?$/m, `${node.name}: MEMBERS=2`);
        const weave = (await session.exec('journalctl -u weave.service -o cat --no-pager')).stdout;
        t.match(weave, new RegExp(`launch .*consensus=2 ${other.address.replaceAll('.', '\\.')}`), `${node.name}: weave was launched with the other minion`);
        t.notMatch(weave, new RegExp(`consensus=2 .*${node.address.replaceAll('.', '\\.')}\\b`), `${node.name}: and not with itself`);
      } else {
        t.notOk((await session.exec('test -e /run/kubeseed/weave.env')).code === 0, 'a master has no weave.env');
      }
    } finally {
      session.close();
    }
  }
  const status = await cluster('status');
  t.equal(status.code, 0, 'cluster status re-reads the same: all ready');
  t.match(status.out, '3 of 3 nodes ready');
});

t.test('minions booted while the master is off wait for it, and finish when it starts', async (t) => {
  t.equal((await cluster('down')).code, 0);
  const up = await cluster('up', '--masters', '1', '--minions', '2', '--defer', 'master-1');
  if (!t.equal(up.code, 0, 'up returns once the minions are waiting')) return;
  let s = await state();
  for (const node of s.nodes.filter((n) => n.role === 'minion')) {
    t.equal(node.state, 'waiting', `${node.name} is waiting`);
    const session = await ssh(node);
    try {
      const status = await agentStatus(session);
      t.equal(status.phase, 'wait-for-masters');
      t.match(status.waitingOn, /masters\.local\.k8s/, `${node.name} says it waits on the masters: ${status.waitingOn}`);
    } finally {
      session.close();
    }
  }
  t.equal(s.nodes.find((n) => n.role === 'master')?.power, 'off');
  const start = await cluster('start', 'master-1');
  t.equal(start.code, 0, 'starting the master lets every node finish');
  s = await state();
  for (const node of s.nodes) {
    t.equal(node.state, 'ready', `${node.name} is ready`);
    t.comment(bootTime(node));
  }
});

t.test('cluster down leaves no process behind', async (t) => {
  const before = await state();
  const pids = [before.metal?.pid, ...before.nodes.map((n) => n.pid)].filter((p): p is number => p !== undefined);
  t.ok(pids.length >= 4, 'the metal server and three VMs were running');
  const down = await cluster('down');
  t.equal(down.code, 0);
  t.match(down.out, /stopped \d+ processes; none left/);
  for (const pid of pids) t.notOk(await isOurs(pid, stateDir), `pid ${pid} is gone`);
  t.same(await processesNaming(stateDir), []);
});
