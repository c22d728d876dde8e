// 3. The metal DNS server against dnsmasq, measured by Debian's dnsperf (the standard load tool for DNS
// servers; a generator of our own would be no yardstick). Both serve the same zone, made from one
// inventory: the metal server as operators run it (`node dist/metal.js serve`, per-source rate limit off),
// dnsmasq from a hosts file with the same names (`--local` makes it answer NXDOMAIN inside the zone).
// Three cases, the same query files for both, runs alternating so a change in the shared machine's
// load hits both, and who goes first alternating too (metal, dnsmasq, dnsmasq, metal, ...) so a load
// that rises or falls during a case weighs on both alike: UDP without EDNS, UDP with EDNS (dnsperf -e),
// and TCP for the 1000-record `minions.` answer. Then the metal server's memory after the load and
// holding 10,000 idle TCP connections, both as the last one opens and once they have been idle for
// IDLE_SECONDS (what a server holding idle clients costs; the first figure still has the burst of
// accepting them in it): it answers DNS in its own process and in worker processes (--dns-workers, one
// process per CPU in all by default), so the memory is all of its processes', PSS summed (shared pages
// once), with each one's RSS beside it.
// Beside each run's queries per second, the CPU time the server spent per query sent (user + system, from
// /proc, of the server and its child processes): on a shared machine whose speed changes from minute to
// minute, qps moves with the machine, while CPU per query is the server's own cost.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { onLines, runTimed } from './child.js';
import type { Bench } from './context.js';
import { REPO } from './node-root.js';
import { formatSpread, ratio, round3, spread, type Row } from './stats.js';
import { manyAddresses } from '../test/helpers/dns.js';
import { inventoryZone, loadInventory } from '../scripts/metal/inventory.js';

const CLUSTER = 'bench';
const ZONE = `${CLUSTER}.k8s`;
const MINIONS = 1000;
const IDLE_CONNECTIONS = 10_000;
const IDLE_SECONDS = 5;

interface Server {
  name: 'metal' | 'dnsmasq';
  port: number;
  child: ChildProcess;
}

interface Perf {
  qps: number;
  sent: number;
  lost: number;
  rcodes: string;
  /** CPU time (user + system) the server spent per query sent, in microseconds. */
  cpuUsPerQuery?: number;
}

/** A process's live children (the metal server's DNS workers), from /proc. */
async function childrenOf(pid: number): Promise<number[]> {
  return (await fs.readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).trim().split(/\s+/).filter(Boolean).map(Number);
}

/** USER_HZ: the unit of /proc/PID/stat's times on Linux (`getconf CLK_TCK`). */
const CLOCK_TICKS = 100;

/**
 * The CPU seconds a server has used: its own, its reaped children's (dnsmasq's forked TCP handlers) and its
 * live children's (the metal server's DNS workers), from /proc/PID/stat.
 */
async function cpuSeconds(pid: number): Promise<number> {
  const fields = async (p: number) => {
    const stat = await fs.readFile(`/proc/${p}/stat`, 'utf8').catch(() => '');
    // After the command name in parentheses: field 14 (utime) is index 11, then stime, cutime, cstime.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ').slice(11, 15).map(Number);
  };
  const [utime = 0, stime = 0, cutime = 0, cstime = 0] = await fields(pid);
  let ticks = utime + stime + cutime + cstime;
  for (const child of await childrenOf(pid)) {
    const [u = 0, s = 0] = await fields(child);
    ticks += u + s;
  }
  return ticks / CLOCK_TICKS;
}

/** The inventory: one master (a cluster has one until HA lands) and 1000 minions, each also under its own hostname. */
function inventoryYaml(): string {
  const mac = (i: number) => `52:54:00:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
  const machine = (i: number, role: string, address: string) => `  - {mac: "${mac(i)}", hostname: ${role}${i}, address: ${address}, role: ${role}}`;
  return [
    `cluster: ${CLUSTER}`,
    'machines:',
    ...manyAddresses(1, 1).map((a, i) => machine(i + 1, 'master', a)),
    ...manyAddresses(MINIONS, 1000).map((a, i) => machine(i + 100, 'minion', a)),
    '',
  ].join('\n');
}

/** What a cluster asks all day (its role names, a host, a name that is not there, an AAAA it lacks). */
const UDP_MIX = [`masters.${ZONE} A`, `master1.${ZONE} A`, `minion100.${ZONE} A`, `minion600.${ZONE} A`, `nobody.${ZONE} A`, `masters.${ZONE} AAAA`];

function firstLine(child: ChildProcess, match: RegExp, what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr?.on('data', (d) => (err += d));
    onLines(child, (line) => match.test(line) && resolve(line));
    child.on('close', (code) => reject(new Error(`${what} exited ${code}: ${err.trim()}`)));
    setTimeout(() => reject(new Error(`${what}: not serving after 20 s`)), 20_000).unref();
  });
}

async function startMetal(dir: string, inventory: string): Promise<Server> {
  const image = path.join(dir, 'image');
  await fs.mkdir(image);
  // --max-tcp twice the idle connections: each answering process enforces its share (max-tcp / processes),
  // so twice leaves room however the 10,000 end up split.
  const child = spawn(
    process.execPath,
    [path.join(REPO, 'dist/metal.js'), 'serve', '--inventory', inventory, '--image', image, '--dns-port', '0', '--http-port', '0', '--pid-file', path.join(dir, 'metal.pid'), '--rate-limit', '0', '--max-tcp', String(2 * IDLE_CONNECTIONS), '--tcp-idle', '120'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const line = await firstLine(child, /^metal serving /, 'metal serve');
  return { name: 'metal', port: Number(/dns=127\.0\.0\.1:(\d+)/.exec(line)?.[1]), child };
}

async function startDnsmasq(dir: string, hosts: string, probeQueries: string, port: number): Promise<Server> {
  await fs.chmod(dir, 0o755); // dnsmasq drops to nobody
  const child = spawn(
    'dnsmasq',
    ['--keep-in-foreground', '--log-facility=-', `--port=${port}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts', `--addn-hosts=${hosts}`, `--local=/${ZONE}/`, '--pid-file=', '--local-ttl=30', '--conf-file=/dev/null'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let err = '';
  child.stderr?.on('data', (d) => (err += d));
  for (let i = 0; i < 50; i++) {
    if (child.exitCode !== null) throw new Error(`dnsmasq exited ${child.exitCode}: ${err.trim()}`);
    const probe = await dnsperf(port, probeQueries, ['-l', '1', '-n', '1']);
    if (probe.sent > 0 && probe.lost === 0) return { name: 'dnsmasq', port, child };
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGTERM');
  throw new Error(`dnsmasq not answering on ${port}: ${err.trim()}`);
}

async function dnsperf(port: number, queries: string, args: string[]): Promise<Perf> {
  const r = await runTimed('dnsperf', ['-s', '127.0.0.1', '-p', String(port), '-d', queries, ...args], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`dnsperf ${args.join(' ')}: exit ${r.code}: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' ')}`);
  const num = (label: string) => Number(new RegExp(`${label}:\\s+([\\d.]+)`).exec(r.stdout)?.[1] ?? NaN);
  return { qps: num('Queries per second'), sent: num('Queries sent'), lost: num('Queries lost'), rcodes: /Response codes:\s+(.*)/.exec(r.stdout)?.[1]?.trim() ?? '' };
}

interface Memory {
  /** Resident set of each process, the server's own first, then its DNS workers. */
  rss: number[];
  /**
   * Proportional set size summed over them: each shared page (the node binary, mapped by every process)
   * counted once in all, so the sum is what the server costs the machine; RSS counts it in every process.
   */
  pss: number;
}

/** The server process and its children (the DNS workers), from /proc. */
async function memoryMb(pid: number): Promise<Memory> {
  const children = await childrenOf(pid);
  const rss: number[] = [];
  let pss = 0;
  for (const p of [pid, ...children]) {
    const rollup = await fs.readFile(`/proc/${p}/smaps_rollup`, 'utf8');
    rss.push(Number(/^Rss:\s+(\d+) kB/m.exec(rollup)?.[1]) / 1024);
    pss += Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1]) / 1024;
  }
  return { rss, pss };
}

const formatMemory = (m: Memory) =>
  `${m.pss.toFixed(1)} MB PSS in all, RSS ${m.rss.map((r) => r.toFixed(1)).join(' + ')} MB (server${m.rss.length > 1 ? ` + ${m.rss.length - 1} DNS worker${m.rss.length > 2 ? 's' : ''}` : ''})`;

/** Opens `n` TCP connections that send nothing; closes them when the returned function is called. */
async function holdConnections(port: number, n: number): Promise<() => void> {
  const sockets: net.Socket[] = [];
  for (let i = 0; i < n; i += 500) {
    const batch = Array.from({ length: Math.min(500, n - i) }, () => net.connect(port, '127.0.0.1'));
    sockets.push(...batch);
    await Promise.all(batch.map((s) => new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject))));
  }
  return () => sockets.forEach((s) => s.destroy());
}

/** Asks the server for its counters (SIGUSR1) until `n` TCP connections are open; 60 s at most. */
async function openConnections(server: Server, n: number): Promise<void> {
  let open = -1;
  onLines(server.child, (line) => {
    const m = /^dns counters .* tcp=open:(\d+),/.exec(line);
    if (m) open = Number(m[1]);
  });
  for (const until = Date.now() + 60_000; open < n; ) {
    if (Date.now() > until) throw new Error(`metal serve: ${open} of ${n} TCP connections open after 60 s`);
    server.child.kill('SIGUSR1');
    await new Promise((r) => setTimeout(r, 250));
  }
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
    const reps = quick ? 1 : 5;
    const seconds = quick ? 2 : 4;
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kubeseed-bench-dns-'));
    const inventory = path.join(dir, 'inventory.yaml');
    await fs.writeFile(inventory, inventoryYaml());
    const zone = inventoryZone(await loadInventory(inventory), 30);
    const hosts = path.join(dir, 'hosts');
    await fs.writeFile(hosts, [...zone.records].flatMap(([name, addresses]) => addresses.map((a) => `${a} ${name}\n`)).join(''));
    await fs.writeFile(path.join(dir, 'udp.txt'), `${UDP_MIX.join('\n')}\n`);
    await fs.writeFile(path.join(dir, 'tcp.txt'), `minions.${ZONE} A\n`);
    const cases = [
      { what: 'UDP, no EDNS (6-name mix)', file: 'udp.txt', args: ['-c', '2', '-q', '32'] },
      { what: 'UDP, EDNS (6-name mix)', file: 'udp.txt', args: ['-e', '-c', '2', '-q', '32'] },
      { what: `TCP, minions. (${MINIONS} records)`, file: 'tcp.txt', args: ['-m', 'tcp', '-c', '4', '-q', '4'] },
    ];
    const servers: Server[] = [];
    const runs: Record<string, Record<string, Perf[]>> = {};
    const rows: Row[] = [];
    const memory: Record<string, Memory> = {};
    try {
      const metal = await startMetal(dir, inventory);
      servers.push(metal);
      // dnsmasq on a port free for UDP and TCP: the metal server's own, moved by one, checked by dnsmasq's
      // start; moved on when taken (the ports next to a random one are often some connection's own).
      for (let offset = 1; ; offset++) {
        const started = await startDnsmasq(dir, hosts, path.join(dir, 'udp.txt'), metal.port + offset).catch((err: Error) => err);
        if (!(started instanceof Error)) {
          servers.push(started);
          break;
        }
        if (offset === 20 || !/Address already in use/.test(started.message)) throw started;
      }
      for (const c of cases) {
        runs[c.what] = { metal: [], dnsmasq: [] };
        for (let rep = 0; rep < reps; rep++)
          for (const server of rep % 2 ? [...servers].reverse() : servers) {
            const cpuBefore = await cpuSeconds(server.child.pid!);
            const result = await dnsperf(server.port, path.join(dir, c.file), ['-l', String(seconds), ...c.args]);
            result.cpuUsPerQuery = ((await cpuSeconds(server.child.pid!)) - cpuBefore) * 1e6 / result.sent;
            runs[c.what]![server.name]!.push(result);
            log(`dns: ${c.what} ${server.name}: ${Math.round(result.qps)} qps, lost ${result.lost} of ${result.sent}, ${result.rcodes}, ${result.cpuUsPerQuery.toFixed(1)} µs CPU per query`);
          }
        const qps = (s: 'metal' | 'dnsmasq') => spread(runs[c.what]![s]!.map((r) => r.qps));
        const lost = (s: 'metal' | 'dnsmasq') => runs[c.what]![s]!.reduce((n, r) => n + r.lost, 0);
        rows.push({ bench: 'dns', what: `metal: ${c.what}`, result: `${formatSpread(qps('metal'), 'qps')}, lost ${lost('metal')}`, goal: '', met: null });
        rows.push({ bench: 'dns', what: `dnsmasq: ${c.what}`, result: `${formatSpread(qps('dnsmasq'), 'qps')}, lost ${lost('dnsmasq')}`, goal: '', met: null });
        const x = ratio(qps('metal').median, qps('dnsmasq').median);
        rows.push({ bench: 'dns', what: `metal / dnsmasq: ${c.what}`, result: `${round3(x)}x`, goal: '>= 1x', met: x >= 1 });
        for (const name of ['metal', 'dnsmasq'] as const) {
          const cpu = spread(runs[c.what]![name]!.map((r) => r.cpuUsPerQuery!));
          rows.push({ bench: 'dns', what: `${name} CPU per query: ${c.what}`, result: formatSpread(cpu, 'µs'), goal: '', met: null });
        }
      }
      const pid = metal.child.pid!;
      const before = await memoryMb(pid);
      const release = await holdConnections(metal.port, IDLE_CONNECTIONS);
      // Connected is not yet held: the server hands each connection to a worker. Measure once its counters
      // (SIGUSR1) say they are all open.
      await openConnections(metal, IDLE_CONNECTIONS);
      const opened = await memoryMb(pid);
      await new Promise((r) => setTimeout(r, IDLE_SECONDS * 1000));
      const idle = await memoryMb(pid);
      release();
      memory.afterLoad = before;
      memory.connectionsOpened = opened;
      memory.idleConnections = idle;
      rows.push({ bench: 'dns', what: `metal memory after the load`, result: formatMemory(before), goal: '', met: null });
      rows.push({ bench: 'dns', what: `metal memory as the last of ${IDLE_CONNECTIONS} TCP connections opens`, result: formatMemory(opened), goal: '', met: null });
      rows.push({ bench: 'dns', what: `metal memory, ${IDLE_CONNECTIONS} TCP connections idle for ${IDLE_SECONDS} s`, result: formatMemory(idle), goal: '< 80 MB', met: idle.pss < 80 });
    } finally {
      await Promise.all(servers.map(stop));
      await fs.rm(dir, { recursive: true, force: true });
    }
    return {
      rows,
      data: { reps, seconds, cases, runs, memory },
      method: `dnsperf against \`node dist/metal.js serve\` (--rate-limit 0) and dnsmasq serving the same inventory's names; ${reps} runs of ${seconds} s per server and case, alternating (metal first, then dnsmasq first, in turn); CPU per query from /proc/PID/stat (user + system of the server and its children, over each run, per query sent); memory from /proc/PID/smaps_rollup of the server and its DNS workers (PSS summed, RSS each), as the last idle connection opened and ${IDLE_SECONDS} s later`,
    };
  },
};
