// The weaver double (test/fixtures/weave-double/weaver) as a running router on loopback: a free port for its
// control API and a bridge of its own (the double creates it as the real router does; a unique name keeps
// parallel tests apart, and teardown deletes it). Waits, bounded, until GET /status answers.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const WEAVER_DOUBLE = fileURLToPath(new URL('../fixtures/weave-double/weaver', import.meta.url));
const run = promisify(execFile);
let bridges = 0;

interface Cleanup {
  teardown(fn: () => unknown): void;
}

export interface RunningRouter {
  /** host:port of its --http-addr. */
  address: string;
  bridge: string;
  /** Everything it logged (stderr) up to this call, every line of a request already answered included. */
  log(): Promise<string>;
  /** The peers it dials, from GET /status/targets. */
  targets(): Promise<string[]>;
  stop(): Promise<void>;
  /** Starts it again on the same address (a restarted weave.service). */
  start(): Promise<void>;
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** The command line after --weave-bridge, given the address to serve on: by default a fixed name and that address. */
type Args = (address: string) => string[];
const DEFAULT_ARGS: Args = (address) => ['--name=02:00:00:00:0a:05', `--http-addr=${address}`];

export async function startWeaverDouble(
  t: Cleanup,
  args: Args = DEFAULT_ARGS,
  env: NodeJS.ProcessEnv = {},
  /** Where to serve; a free loopback port unless given (the agent's bundle dials the real 127.0.0.1:6784). */
  fixedAddress?: string,
): Promise<RunningRouter> {
  const address = fixedAddress ?? `127.0.0.1:${await freePort()}`;
  const bridge = `ksw${process.pid % 100000}x${bridges++}`;
  let child: ChildProcess | undefined;
  let stderr = '';
  let syncs = 0;
  const start = async () => {
    const proc = spawn(WEAVER_DOUBLE, [`--weave-bridge=${bridge}`, ...args(address)], {
      env: { PATH: process.env.PATH, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child = proc;
    proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`the weaver double exited ${proc.exitCode} before serving ${address}: ${stderr}`);
      const up = await fetch(`http://${address}/status`).then(
        () => true,
        () => false,
      );
      if (up) return;
      if (Date.now() > deadline) throw new Error(`the weaver double did not answer GET http://${address}/status within 10 s: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const stop = async () => {
    const proc = child;
    child = undefined;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGTERM');
    await exited;
  };
  t.teardown(async () => {
    await stop();
    await run('ip', ['link', 'del', bridge]).catch(() => undefined);
  });
  await start();
  return {
    address,
    bridge,
    // The double writes each line before it answers, but its stderr pipe and the HTTP socket race to this
    // process: a request whose own log line has arrived proves every earlier line has too.
    async log() {
      const marker = `/status?logged=${++syncs}`;
      await fetch(`http://${address}${marker}`);
      const deadline = Date.now() + 10_000;
      while (!stderr.includes(`GET ${marker} `)) {
        if (Date.now() > deadline) throw new Error(`the weaver double did not log GET ${marker} within 10 s: ${stderr}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      return stderr;
    },
    async targets() {
      const text = await (await fetch(`http://${address}/status/targets`)).text();
      return text.split('\n').filter(Boolean);
    },
    stop,
    start,
  };
}
