// Child processes for the benches: the load generators and probes run in their own process (so they
// do not share an event loop with the server they measure), bundled by esbuild exactly as the agent is.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { build } from 'esbuild';
import { REPO } from './node-root.js';

const bundles = new Map<string, Promise<string>>();

/** bench/<name>.ts as one CJS file for plain `node` (built once per run). */
export function bundled(name: string): Promise<string> {
  let out = bundles.get(name);
  if (!out) {
    out = (async () => {
      const dir = await fs.mkdtemp(path.join(os.tmpdir(), `kubeseed-bench-${name}-`));
      const outfile = path.join(dir, `${name}.cjs`);
      await build({
        entryPoints: [path.join(REPO, 'bench', `${name}.ts`)],
        bundle: true,
        platform: 'node',
        target: 'node18',
        format: 'cjs',
        outfile,
        logLevel: 'error',
      });
      return outfile;
    })();
    bundles.set(name, out);
  }
  return out;
}

export async function removeBundles(): Promise<void> {
  for (const file of await Promise.all(bundles.values())) await fs.rm(path.dirname(file), { recursive: true, force: true });
  bundles.clear();
}

export interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a program to the end (killed after timeoutMs): exit status, output and wall time. */
export function runTimed(cmd: string, args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(opts.env ? { env: opts.env } : {}) });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - started });
    });
  });
}

/** Peak resident set of a program in MB, from GNU time (wait4's ru_maxrss), with its exit status. */
export async function peakRssMb(cmd: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<{ mb: number; run: Finished }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kubeseed-bench-rss-'));
  try {
    const file = path.join(dir, 'rss');
    const run = await runTimed('/usr/bin/time', ['-f', '%M', '-o', file, cmd, ...args], opts);
    const kb = Number((await fs.readFile(file, 'utf8')).trim().split('\n').pop());
    return { mb: kb / 1024, run };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** Calls onLine for every line the child prints on stdout, with the time it arrived. */
export function onLines(child: ChildProcess, onLine: (line: string, at: number) => void): void {
  let buffer = '';
  child.stdout?.on('data', (d: Buffer) => {
    const at = performance.now();
    buffer += d.toString();
    let nl: number;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      onLine(buffer.slice(0, nl), at);
      buffer = buffer.slice(nl + 1);
    }
  });
}
