// `metal serve|dnsmasq-conf|check`: bare-metal PXE boot and the cluster's DNS, from one inventory.
// Built into dist/metal.js by `npm run build` (one process, plain node: signals reach the server itself).
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { existingDirectory, parseCommandLine, required, runMain, UsageError } from '../agent/command-line.js';
import { claimPidFile } from './daemon/pid-file.js';
import type { DnsCounters } from './metal/dns-server.js';
import { isDnsWorker, runDnsWorker } from './metal/dns-workers.js';
import { renderDnsmasqConf } from './metal/dnsmasq-conf.js';
import { loadInventory } from './metal/inventory.js';
import { startMetalServer } from './metal/server.js';

const USAGE = `usage:
  metal serve --inventory FILE --image DIR [--listen ADDR] [--advertise ADDR] [--dns-port N] [--http-port N]
              [--secrets DIR] [--weave-password-file FILE] [--kernel-arg ARG]... [--pid-file FILE] [--log-queries]
              [--max-tcp N] [--tcp-idle SECONDS] [--rate-limit N] [--dns-workers N]
  metal dnsmasq-conf --inventory FILE --server-address ADDR [--interface IF] [--http-port N]
  metal check --inventory FILE`;

const OPTIONS = {
  inventory: { type: 'string' },
  image: { type: 'string' },
  listen: { type: 'string' },
  advertise: { type: 'string' },
  'dns-port': { type: 'string' },
  'http-port': { type: 'string' },
  secrets: { type: 'string' },
  'weave-password-file': { type: 'string' },
  'kernel-arg': { type: 'string', multiple: true },
  interface: { type: 'string' },
  'server-address': { type: 'string' },
  'pid-file': { type: 'string' },
  'log-queries': { type: 'boolean' },
  'max-tcp': { type: 'string' },
  'tcp-idle': { type: 'string' },
  'rate-limit': { type: 'string' },
  'dns-workers': { type: 'string' },
} as const;

function count(text: string | undefined, flag: string, fallback: number, max: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > max) throw new UsageError(`${flag} must be a number 0..${max}, got ${JSON.stringify(text)}`);
  return n;
}

const port = (text: string | undefined, flag: string, fallback: number) => count(text, flag, fallback, 65535);

/** One line: what the DNS server has done since start (SIGUSR1, and at stop). */
function formatCounters(c: DnsCounters): string {
  const pairs = (o: Record<string, number>) => Object.entries(o).map(([k, v]) => `${k}:${v}`).join(',') || 'none';
  const tcp = { open: c.tcp.open, accepted: c.tcp.accepted, refused: c.tcp.refused, 'idle-closed': c.tcp.idleClosed };
  const dropped = { response: c.dropped.response, malformed: c.dropped.malformed, 'rate-limited': c.dropped.rateLimited, 'bad-source': c.dropped.badSource, 'send-failed': c.dropped.sendFailed };
  return `dns counters queries=${c.queries} answers=${pairs(c.answers)} dropped=${pairs(dropped)} tcp=${pairs(tcp)}`;
}

/**
 * The overlay's password for every machine's user-data, from a file (its first line) so that it never shows in
 * the process list as an argument would. cloud-init writes it 0600 for weave.service alone.
 */
async function weavePassword(file: string): Promise<string> {
  const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new UsageError(`--weave-password-file ${JSON.stringify(file)}: cannot read: ${err.code ?? err.message}`);
  });
  const password = text.split('\n')[0]!.trim();
  if (!password) throw new UsageError(`--weave-password-file ${JSON.stringify(file)}: the first line is empty`);
  return password;
}

async function serve(values: ReturnType<typeof parse>['values']): Promise<number> {
  const pidFile = values['pid-file'] ?? 'metal.pid';
  const maxTcp = count(values['max-tcp'], '--max-tcp', 10000, 1_000_000);
  const idle = count(values['tcp-idle'], '--tcp-idle', 10, 3600);
  if (idle === 0) throw new UsageError('--tcp-idle must be a number 1..3600, got "0"');
  const rate = count(values['rate-limit'], '--rate-limit', 1000, 1_000_000_000);
  // This process answers too: with one worker fewer than CPUs, one process answers per CPU.
  const dnsWorkers = count(values['dns-workers'], '--dns-workers', availableParallelism() - 1, 64);
  const dnsPort = port(values['dns-port'], '--dns-port', 53);
  const httpPort = port(values['http-port'], '--http-port', 8080);
  const inventory = required(values.inventory, '--inventory');
  // A mistyped --image would serve 404s to every machine that PXE-boots: refused before anything starts.
  const imageDir = existingDirectory('--image', required(values.image, '--image'));
  const passwordFile = values['weave-password-file'];
  const userDataVars: Record<string, string> = passwordFile === undefined ? {} : { WEAVE_PASSWORD: await weavePassword(passwordFile) };
  // Written before the servers start, so whoever reads "metal serving" can already signal us by it.
  const removePidFile = await claimPidFile(pidFile, 'a metal server');
  const server = await startMetalServer({
    inventory,
    imageDir,
    listen: values.listen ?? '127.0.0.1',
    ...(values.advertise !== undefined && { advertise: values.advertise }),
    dnsPort,
    httpPort,
    extraKernelArgs: values['kernel-arg'] ?? [],
    ...(values.secrets !== undefined && { secretsDir: values.secrets }),
    userDataVars,
    logQueries: values['log-queries'] ?? false,
    dnsLimits: { tcpConnections: maxTcp, tcpIdleMs: idle * 1000, queriesPerSecond: rate },
    dnsWorkers,
    collectGarbage,
  }).catch(async (err: unknown) => {
    await removePidFile();
    throw err;
  });
  collectGarbage();
  // A bad new inventory is logged by reload() and the old one keeps being served.
  process.on('SIGHUP', () => void server.reload().catch(() => {}).finally(collectGarbage));
  process.on('SIGUSR1', () => void server.dnsCounters().then((c) => console.log(formatCounters(c))));
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await server.close();
  await removePidFile();
  console.log(formatCounters(await server.dnsCounters()));
  console.log('metal stopped');
  return 0;
}

// A long-running server's memory is its high-water mark: V8 does not hand a grown heap back. Parsing a
// 1000-machine inventory grows the young generation towards its 16 MB default and leaves RSS that much
// higher for good; young spaces held at 1 MB keep it near what is live (measured with a 1003-machine
// inventory: 78 -> 65 MB serving), at a cost no query notices (dnsperf qps unchanged within noise).
setFlagsFromString('--max-semi-space-size=1');
setFlagsFromString('--semi-space-growth-factor=1');
// Reading the inventory (YAML) and rendering user-data leave the server's old generation at 12 MB, of which
// 5 MB is live: V8 does not collect and give back the rest on its own while the server idles. One full
// collection once serving (and after a reload) gives most of it back: 17.5-18.7 MB anonymous memory
// instead of 22-24 (smaps, three runs). Twice: after one alone it was 17 or 23, by chance, the second
// compacts what the first freed. `gc` is only reachable from a context made after --expose-gc is set.
// The DNS service collects too once a burst of TCP connections handed to its workers is over
// (dns-workers.ts): there the live connections are spread over every page of the old generation, so a
// collection without compaction keeps the pages (after one, 11 MB of the heap was live and 29.7 MB
// still held); compacting, as for these few collections alone, gives them back (14 MB held).
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const collectGarbage = () => {
  setFlagsFromString('--compact-on-every-full-gc');
  gc();
  gc();
  setFlagsFromString('--no-compact-on-every-full-gc');
};

const parse = (args: string[]) => parseCommandLine(args, OPTIONS, { positionals: true });

// A DNS worker (dns-workers.ts) runs this same file: it only answers queries, for the process that forked it.
if (isDnsWorker()) runDnsWorker();
else runMain({ name: 'metal', usage: USAGE }, async (argv) => {
  const { values, positionals } = parse(argv);
  const [command, extra] = positionals;
  if (extra !== undefined) throw new UsageError(`unexpected argument ${JSON.stringify(extra)}`);
  if (command === 'serve') return serve(values);
  if (command !== 'check' && command !== 'dnsmasq-conf') {
    throw new UsageError(command === undefined ? 'a command is required (serve, dnsmasq-conf or check)' : `unknown command ${JSON.stringify(command)}`);
  }
  const inventoryFile = required(values.inventory, '--inventory');

  const inv = await loadInventory(inventoryFile);
  if (command === 'check') {
    const n = (role: string) => inv.machines.filter((m) => m.role === role).length;
    console.log(`${inventoryFile}: ok: cluster ${inv.cluster}.${inv.domain}, ${n('master')} master(s), ${n('minion')} minion(s)`);
    return 0;
  }
  process.stdout.write(
    renderDnsmasqConf(inv, {
      interface: values.interface ?? 'eth0',
      serverAddress: required(values['server-address'], '--server-address'),
      httpPort: port(values['http-port'], '--http-port', 8080),
    }),
  );
  return 0;
});
