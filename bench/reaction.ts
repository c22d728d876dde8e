// 1. Reaction: from the moment the master's API server comes up to the moment a minion stops waiting.
// Ours is the shipped bundle (`agent run --once`, a child process on an offline root); the peer is the
// cncf/demo loop `until curl -s http://masters...; do sleep 5; done` run by bash. Both watch the same
// HTTP server and start before it listens; it begins listening (and answering 200 on every path,
// /readyz included) at a random moment 2-7 s after both are waiting, so the loop's 5 s period is
// sampled evenly and our backoff has reached its cap, as it has on a real node whose masters take
// minutes. The agent resolves masters.demo.k8s through the dns2 server every attempt; curl cannot be
// pointed at a DNS server on another port, so the loop gets the address for free (`--resolve`): the
// peer does strictly less work per try, which can only flatter it.
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { onLines } from './child.js';
import type { Bench } from './context.js';
import { BUNDLE, nodeRoots, selfAddress, type Roots } from './node-root.js';
import { formatSpread, ratio, round3, spread } from './stats.js';
import { startTestDns } from '../test/helpers/dns.js';

const NAME = 'masters.demo.k8s';
/** The cncf/demo wait, with the address pinned (see above); $1 is curl's --resolve, $2 the URL. */
const LOOP = 'until curl -s --resolve "$1" "$2" >/dev/null; do sleep 5; done; echo ready';
const BATCH = 5;

interface Trial {
  delayMs: number;
  /** Seconds from "listening" to the agent's masters-ready line; null when it never came. */
  ours: number | null;
  loop: number | null;
  problem?: string;
}

/** Free loopback ports, all held at once so two trials of a batch never get the same one. */
async function reservePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<http.Server>((resolve) => {
      const s = http.createServer();
      s.listen(0, '127.0.0.1', () => resolve(s));
    })),
  );
  const ports = servers.map((s) => (s.address() as AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

function deadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms / 1000} s`)), ms))),
  ]);
}

async function trial(port: number, nameserver: string, roots: Roots, delayMs: number): Promise<Trial> {
  const root = await roots.make('minion', `CLUSTER_NAME=demo\nAPI_ENDPOINT=http://${NAME}:${port}\n`);
  const server = http.createServer((_req, res) => res.end('ok'));
  const agent = spawn(process.execPath, [BUNDLE, 'run', '--once', '--root', root, '--nameserver', nameserver], { stdio: ['ignore', 'pipe', 'pipe'] });
  const loop = spawn('bash', ['-c', LOOP, 'bash', `${NAME}:${port}:127.0.0.1`, `http://${NAME}:${port}/readyz`], { stdio: ['ignore', 'pipe', 'ignore'] });
  let agentErr = '';
  agent.stderr?.on('data', (d) => (agentErr += d));
  const exited = (child: ChildProcess, what: string) =>
    new Promise<never>((_, reject) =>
      child.on('close', (code) => reject(new Error(`${what} exited ${code} before it was done${child === agent && agentErr ? `: ${agentErr.trim().split('\n').pop()}` : ''}`))),
    );
  const waiting = new Promise<void>((resolve) => onLines(agent, (line) => line.startsWith('phase-start phase=wait-for-masters') && resolve()));
  const oursDone = new Promise<number>((resolve) => onLines(agent, (line, at) => line.startsWith('masters-ready') && resolve(at)));
  const loopDone = new Promise<number>((resolve) => onLines(loop, (line, at) => line === 'ready' && resolve(at)));
  const result: Trial = { delayMs, ours: null, loop: null };
  try {
    await deadline(Promise.race([waiting, exited(agent, 'agent')]), 60_000, 'agent to start waiting');
    await new Promise((r) => setTimeout(r, delayMs));
    const readyAt = performance.now();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', resolve);
    });
    const [ours, peer] = await Promise.allSettled([
      deadline(Promise.race([oursDone, exited(agent, 'agent')]), 30_000, 'agent'),
      deadline(Promise.race([loopDone, exited(loop, 'loop')]), 30_000, 'loop'),
    ]);
    const seconds = (at: number) => Math.round(at - readyAt) / 1000;
    if (ours.status === 'fulfilled') result.ours = seconds(ours.value);
    if (peer.status === 'fulfilled') result.loop = seconds(peer.value);
    const failed = [ours, peer].filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => String(r.reason?.message ?? r.reason));
    if (failed.length) result.problem = failed.join('; ');
  } catch (err) {
    result.problem = err instanceof Error ? err.message : String(err);
  } finally {
    for (const child of [agent, loop]) if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
  return result;
}

export const reaction: Bench = {
  name: 'reaction',
  async run({ quick, log }) {
    const trials = quick ? BATCH : 20;
    const self = selfAddress();
    const dns = await startTestDns('demo.k8s', { [NAME]: ['127.0.0.1'], 'minions.demo.k8s': self ? [self] : [] });
    const roots = await nodeRoots('demo');
    const results: Trial[] = [];
    try {
      for (let done = 0; done < trials; done += BATCH) {
        const n = Math.min(BATCH, trials - done);
        const ports = await reservePorts(n);
        log(`reaction: trials ${done + 1}-${done + n} of ${trials}`);
        results.push(...(await Promise.all(ports.map((port) => trial(port, dns.nameserver, roots, Math.round(2000 + Math.random() * 5000))))));
      }
    } finally {
      await roots.close();
      await dns.close();
    }
    const ours = results.flatMap((r) => (r.ours === null ? [] : [r.ours]));
    const loop = results.flatMap((r) => (r.loop === null ? [] : [r.loop]));
    const problems = results.flatMap((r) => (r.problem ? [r.problem] : []));
    const rows = [];
    if (ours.length) {
      const s = spread(ours);
      rows.push({ bench: 'reaction', what: 'agent: master up -> done waiting', result: formatSpread(s, 's', true), goal: '< 1 s median', met: s.median < 1 });
    }
    if (loop.length) rows.push({ bench: 'reaction', what: 'cncf/demo curl loop (sleep 5)', result: formatSpread(spread(loop), 's', true), goal: '', met: null });
    if (ours.length && loop.length) {
      const x = ratio(spread(loop).median, spread(ours).median);
      rows.push({ bench: 'reaction', what: 'loop median / agent median', result: `${round3(x)}x`, goal: '>= 3x', met: x >= 3 });
    }
    if (problems.length) rows.push({ bench: 'reaction', what: `failed trials (${problems.length} of ${trials})`, result: problems[0] ?? '', goal: '', met: false });
    return {
      rows,
      data: { trials: results, ours: ours.length ? spread(ours) : null, loop: loop.length ? spread(loop) : null },
      method: 'shipped agent (run --once, child process, DNS via dns2 each attempt) vs bash+curl loop with --resolve; same HTTP server starts listening 2-7 s after both wait; 5 trials at a time',
    };
  },
};
