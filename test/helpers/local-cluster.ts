// Driving `npm run cluster` from an e2e test: the command with its progress in the test log, the state it
// keeps, SSH to a node (host keys checked against what the nodes reported) and `cluster-check` over them.
import type { Test } from 'tap';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { openSession, type SshSession } from '../../scripts/check/ssh-session.js';
import { parseKnownHosts } from '../../scripts/check/known-hosts.js';
import { readState, type ClusterState, type NodeState } from '../../scripts/cluster/state.js';

export const REPO = path.resolve(import.meta.dirname, '../..');

export interface CommandResult {
  code: number;
  out: string;
}

function run(t: Test, args: string[]): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = spawn('npx', ['tsx', ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
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

export function localCluster(stateDir: string) {
  const file = (name: string) => path.join(stateDir, name);
  const state = async (): Promise<ClusterState> => {
    const s = await readState(stateDir);
    if (!s) throw new Error(`no cluster.json in ${stateDir}`);
    return s;
  };
  return {
    /** `npm run cluster -- ARGS --state-dir DIR`. */
    cluster: (t: Test, ...args: string[]) => run(t, ['scripts/cluster.ts', ...args, '--state-dir', stateDir]),
    /** `npm run cluster-check` against the nodes, each SSH answer bounded by `timeoutS`. */
    check: async (t: Test, nodes: readonly NodeState[], timeoutS = 20) =>
      run(t, [
        'scripts/cluster-check.ts',
        '--hosts', nodes.map((n) => `127.0.0.1:${n.sshPort}`).join(','),
        '--key', file('id_ed25519'),
        '--known-hosts', file('known_hosts'),
        '--timeout', String(timeoutS),
      ]),
    state,
    node: async (name: string): Promise<NodeState> => {
      const node = (await state()).nodes.find((n) => n.name === name);
      if (!node) throw new Error(`no node ${name} in ${stateDir}`);
      return node;
    },
    ssh: async (node: NodeState): Promise<SshSession> => {
      const knownHosts = parseKnownHosts(await readFile(file('known_hosts'), 'utf8'));
      const privateKey = await readFile(file('id_ed25519'), 'utf8');
      return openSession({ host: '127.0.0.1', port: node.sshPort }, { username: 'root', privateKey, knownHosts, timeoutMs: 60_000 });
    },
  };
}

/** Retries `attempt` every `everyMs` until it returns a value, at most `limitMs`; the error names what it waited for. */
export async function waitFor<T>(what: string, limitMs: number, everyMs: number, attempt: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const got = await attempt();
    if (got !== undefined) return got;
    if (Date.now() >= deadline) throw new Error(`gave up after ${Math.round(limitMs / 1000)} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
