// The shipped agent (dist/agent.js) as a node runs it: freshly built, copied where no node_modules is,
// started as a child process with plain node (no tap loader).
import type { Test } from 'tap';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Builds the bundle and copies it into a fresh work directory (removed at teardown). */
export async function prepareBundle(t: Test, prefix: string): Promise<{ bundle: string; work: string }> {
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: REPO, stdio: 'ignore' });
  const work = await fs.mkdtemp(path.join(os.tmpdir(), `${prefix}-`));
  t.teardown(() => fs.rm(work, { recursive: true, force: true }));
  const bundle = path.join(work, 'agent.js');
  await fs.copyFile(path.join(REPO, 'dist/agent.js'), bundle);
  return { bundle, work };
}

export interface AgentResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunningAgent {
  child: ChildProcess;
  done: Promise<AgentResult>;
  output(): string;
}

/** Asynchronous on purpose: the DNS and HTTP servers the agent talks to live in the test's event loop. */
export function startAgent(bundle: string, args: string[], env: NodeJS.ProcessEnv = {}): RunningAgent {
  const { NODE_OPTIONS: _, ...base } = process.env;
  const child = spawn(process.execPath, [bundle, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...base, ...env },
    timeout: 60_000,
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<AgentResult>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { child, done, output: () => stdout };
}
