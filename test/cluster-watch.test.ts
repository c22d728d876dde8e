// The watcher `cluster up` and `start` run: what it reports when boots hang, and the state file it keeps
// saving while nodes power-cycle.
import t from 'tap';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readState, writeState, type ClusterState, type NodeState } from '../scripts/cluster/state.js';
import { watchNodes } from '../scripts/cluster/watch.js';

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
  t.same(state.nodes.map((n) => [n.name, n.state, n.boots]), [['master-1', 'failed', 2], ['minion-1', 'failed', 2]], 'each node was retried once, then failed');
  t.notOk(lines.some((l) => /ENOENT|Error/.test(l)), 'no node lost its retry to a state-file race');
  t.match(lines.join('\n'), /minion-1 +failed: no agent answer in time, and again on the retry/);
  t.same((await readState(dir))?.nodes.map((n) => n.state), ['failed', 'failed'], 'the state file says so');
});

t.test('concurrent saves of the state file all land, and leave no temporary file behind', async (t) => {
  const dir = await stateDir(t);
  const state: ClusterState = { cluster: 'local', domain: 'k8s', accel: 'tcg', memoryMb: 512, mcast: { group: '230.0.0.1', port: 1 }, nodes: [] };
  const writes = Array.from({ length: 20 }, () => writeState(dir, state));
  const results = await Promise.allSettled(writes);
  t.same(results.filter((r) => r.status === 'rejected'), [], 'no write fails');
  t.same(await readdir(dir), ['cluster.json']);
});
