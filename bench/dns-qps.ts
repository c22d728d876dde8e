// 3. The metal DNS server against dnsmasq: answers per second on loopback for masters. (3 records,
// one UDP packet) and minions. (1000 records: UDP says TC, so the full answer is a TCP query on a new
// connection, as the agent asks). Both servers run alone in their own process and serve the same
// names; one load generator (bench/dns-load.ts, a Node process) drives both, alternating runs so a
// change in the shared machine's load hits both. On 2 cores the generator competes with the server:
// a generator-bound dnsmasq figure understates dnsmasq, so the ratio can only flatter us.
import { spawn, type ChildProcess } from 'node:child_process';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { bundled, onLines, runTimed } from './child.js';
import type { Bench } from './context.js';
import { formatSpread, ratio, round3, spread, type Row } from './stats.js';
import { manyAddresses } from '../test/helpers/dns.js';

const MASTERS = 'masters.demo.k8s';
const MINIONS = 'minions.demo.k8s';

interface Server {
  name: 'metal' | 'dnsmasq';
  port: number;
  child: ChildProcess;
}

interface Load {
  answered: number;
  lost: number;
  errors: number;
  rcodes: Record<string, number>;
  ancount: number;
  truncated: number;
  qps: number;
}

/** A port free for UDP right now (dnsmasq binds TCP on it too; a clash shows as a failed start). */
async function freePort(): Promise<number> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(resolve));
  return port;
}

function firstLine(child: ChildProcess, what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr?.on('data', (d) => (err += d));
    onLines(child, (line) => resolve(line));
    child.on('close', (code) => reject(new Error(`${what} exited ${code}: ${err.trim()}`)));
    setTimeout(() => reject(new Error(`${what}: not serving after 10 s`)), 10_000).unref();
  });
}

async function startMetal(dir: string, records: Record<string, string[]>): Promise<Server> {
  const file = path.join(dir, 'records.json');
  await fs.writeFile(file, JSON.stringify(records));
  const child = spawn(process.execPath, [await bundled('dns-serve'), file], { stdio: ['ignore', 'pipe', 'pipe'] });
  const port = Number(await firstLine(child, 'metal DNS server'));
  return { name: 'metal', port, child };
}

/** dnsmasq serving the same names from a hosts file, authoritative for nothing else. */
async function startDnsmasq(dir: string, records: Record<string, string[]>): Promise<Server> {
  const hosts = path.join(dir, 'hosts');
  await fs.writeFile(hosts, Object.entries(records).flatMap(([name, addrs]) => addrs.map((a) => `${a} ${name}\n`)).join(''));
  await fs.chmod(dir, 0o755); // dnsmasq drops to nobody
  const port = await freePort();
  const child = spawn(
    'dnsmasq',
    ['--keep-in-foreground', '--log-facility=-', `--port=${port}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts', `--addn-hosts=${hosts}`, '--pid-file=', '--local-ttl=5', '--conf-file=/dev/null'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let err = '';
  child.stderr?.on('data', (d) => (err += d));
  // dnsmasq says nothing on stdout; wait until it answers.
  for (let i = 0; i < 50; i++) {
    if (child.exitCode !== null) throw new Error(`dnsmasq exited ${child.exitCode}: ${err.trim()}`);
    const probe = await runTimed(process.execPath, [await bundled('dns-load'), '127.0.0.1', String(port), MASTERS, 'udp', '1', '0.2', '1'], { timeoutMs: 5000 });
    if (probe.code === 0 && (JSON.parse(probe.stdout) as Load).answered === 1) return { name: 'dnsmasq', port, child };
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGTERM');
  throw new Error(`dnsmasq not answering on ${port}: ${err.trim()}`);
}

function stop(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (server.child.exitCode !== null) return resolve();
    server.child.on('close', () => resolve());
    server.child.kill('SIGTERM');
  });
}

export const dnsServer: Bench = {
  name: 'dns',
  async run({ quick, log }) {
    const load = await bundled('dns-load');
    const reps = quick ? 1 : 3;
    const seconds = quick ? 1 : 2;
    const records = { [MASTERS]: manyAddresses(3, 1), [MINIONS]: manyAddresses(1000, 100) };
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kubeseed-bench-dns-'));
    const servers: Server[] = [];
    const cases = [
      { what: 'masters. (3 records, UDP)', name: MASTERS, transport: 'udp', inflight: 32, goal: true },
      { what: 'minions. (1000 records, TCP after TC)', name: MINIONS, transport: 'tcp', inflight: 8, goal: false },
    ] as const;
    const runs: Record<string, Record<string, Load[]>> = {};
    const rows: Row[] = [];
    try {
      servers.push(await startMetal(dir, records), await startDnsmasq(dir, records));
      for (const c of cases) {
        runs[c.what] = { metal: [], dnsmasq: [] };
        for (let rep = 0; rep < reps; rep++)
          for (const server of servers) {
            const r = await runTimed(process.execPath, [load, '127.0.0.1', String(server.port), c.name, c.transport, String(c.inflight), String(seconds), '1000000'], { timeoutMs: (seconds + 10) * 1000 });
            if (r.code !== 0) throw new Error(`load generator against ${server.name}: ${r.stderr.trim()}`);
            const result = JSON.parse(r.stdout) as Load;
            runs[c.what]![server.name]!.push(result);
            log(`dns: ${c.what} ${server.name}: ${Math.round(result.qps)} answers/s, ${result.ancount} records, lost ${result.lost}, errors ${result.errors}`);
          }
        const qps = (s: 'metal' | 'dnsmasq') => spread(runs[c.what]![s]!.map((r) => r.qps));
        const records = (s: 'metal' | 'dnsmasq') => runs[c.what]![s]![0]?.ancount;
        rows.push({ bench: 'dns', what: `metal: ${c.what}`, result: formatSpread(qps('metal'), 'qps'), goal: '', met: null });
        rows.push({ bench: 'dns', what: `dnsmasq: ${c.what}`, result: formatSpread(qps('dnsmasq'), 'qps'), goal: '', met: null });
        const x = ratio(qps('dnsmasq').median, qps('metal').median);
        const same = records('metal') === records('dnsmasq') ? '' : ` (answers differ: ${records('metal')} vs ${records('dnsmasq')} records)`;
        rows.push({ bench: 'dns', what: `dnsmasq / metal: ${c.what}`, result: `${round3(x)}x${same}`, goal: c.goal ? '<= 2x' : '', met: c.goal ? x <= 2 : null });
      }
    } finally {
      await Promise.all(servers.map(stop));
      await fs.rm(dir, { recursive: true, force: true });
    }
    return {
      rows,
      data: { reps, seconds, cases, runs },
      method: `bench/dns-load.ts (Node, one process) against each server in its own process: UDP ${cases[0].inflight} queries in flight, TCP ${cases[1].inflight} connections (one query each); ${reps} runs of ${seconds} s per server and case, alternating`,
    };
  },
};
