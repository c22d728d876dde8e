// `npm run cluster -- watch`: follows a running cluster without touching it, asking every node for its
// status document over SSH with cluster-check's code, again and again, and prints one line per change;
// `--web` also serves the live page. A local cluster is named by its state directory (cluster.json gives
// the nodes, their power-on times and SSH ports); any other (EC2, bare metal) by the same --hosts, --key and
// --known-hosts as `cluster-check`. It never powers anything on or off: `up` and `start` do that.
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseCommandLine, runCommand, UsageError } from '../../agent/command-line.js';
import { InputError } from '../../agent/errors.js';
import { checkNodes, type NodeReport } from '../check/node-report.js';
import { formatTarget, parseTargets, type SshOptions, type Target } from '../check/ssh-session.js';
import { readState } from '../cluster/state.js';
import { KNOWN_HOSTS } from '../cluster/watch.js';
import { parseKnownHosts } from '../check/known-hosts.js';
import { clusterModel, interrupted } from './cluster-page.js';
import { serveLivePage, type LiveOptions } from './live-server.js';
import type { PageModel } from './page.js';

const USAGE = `usage: cluster watch [--state-dir .cache/cluster | --hosts HOST[:PORT],... --key FILE --known-hosts FILE [--user root]]
                     [--every SECONDS] [--web [--port N] [--listen 127.0.0.1]]`;

const OPTIONS = {
  'state-dir': { type: 'string', default: '.cache/cluster' },
  hosts: { type: 'string' },
  key: { type: 'string' },
  'known-hosts': { type: 'string' },
  user: { type: 'string', default: 'root' },
  every: { type: 'string', default: '5' },
  web: { type: 'boolean', default: false },
  port: { type: 'string', default: '0' },
  listen: { type: 'string', default: '127.0.0.1' },
} as const;

/** Where the nodes are, asked afresh at every pass (a local cluster's nodes come and go with start/stop). */
export interface WatchSource {
  targets(): Promise<{ name: string; target: Target }[]>;
  ssh: SshOptions;
  /** The page for the latest answers. */
  model(reports: ReadonlyMap<string, NodeReport>, now: number): Promise<PageModel>;
}

export interface WatchOptions {
  everyMs: number;
  web?: LiveOptions;
  log(line: string): void;
  /** The live page is up (tests open it from here). */
  onServing?(url: string): void;
}

async function readInput(file: string, flag: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new InputError(`${flag}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { file });
  }
}

/** A local cluster's state directory: the nodes that are powered on, at their forwarded SSH ports. */
export async function localSource(stateDir: string, user: string): Promise<WatchSource> {
  const dir = path.resolve(stateDir);
  const load = async () => (await readState(dir)) ?? fail(`no cluster here: ${dir} has no cluster.json`);
  await load();
  const knownHostsFile = path.join(dir, KNOWN_HOSTS);
  // The key `cluster up` made for the cluster (scripts/cluster.ts), next to the known_hosts its watcher wrote.
  const ssh: SshOptions = { username: user, privateKey: await readInput(path.join(dir, 'id_ed25519'), '--state-dir'), knownHosts: [], timeoutMs: 60_000 };
  return {
    ssh,
    async targets() {
      // Host keys arrive as nodes boot: read known_hosts again at each pass.
      ssh.knownHosts = parseKnownHosts(await readFile(knownHostsFile, 'utf8').catch(() => ''), knownHostsFile);
      const state = await load();
      return state.nodes.filter((n) => n.power === 'on').map((n) => ({ name: n.name, target: { host: '127.0.0.1', port: n.sshPort } }));
    },
    model: async (reports, now) => clusterModel(await load(), reports, now),
  };
}

/** Any nodes reachable over SSH, as `cluster-check` reaches them. */
export async function hostsSource(hosts: string, keyFile: string, knownHostsFile: string, user: string): Promise<WatchSource> {
  const targets = parseTargets(hosts).map((target) => ({ name: formatTarget(target), target }));
  const knownHosts = parseKnownHosts(await readInput(knownHostsFile, '--known-hosts'), knownHostsFile);
  return {
    ssh: { username: user, privateKey: await readInput(keyFile, '--key'), knownHosts, timeoutMs: 10_000 },
    targets: async () => targets,
    model: async (reports, now) => ({ title: `kubeseed nodes (${targets.length})`, now, nodes: targets.map(({ name }) => ({ name, ...(reports.has(name) && { report: reports.get(name) }) })) }),
  };
}

function fail(message: string): never {
  throw new InputError(message);
}

const line = (name: string, r: NodeReport) => `${name} ${r.state}${r.phase ? ` ${r.phase}` : ''}${r.detail ? `: ${r.detail}` : ''}`;

/** Passes until `signal` aborts; one line per node whose answer changed. */
export async function watchCluster(source: WatchSource, opts: WatchOptions, signal: AbortSignal): Promise<void> {
  const reports = new Map<string, NodeReport>();
  let latest = await source.model(reports, Date.now());
  const server = opts.web ? await serveLivePage(() => ({ ...latest, now: Date.now() }), opts.web) : undefined;
  if (server) {
    opts.log(`live page: ${server.url}`);
    opts.onServing?.(server.url);
  }
  try {
    while (!signal.aborted) {
      const targets = await source.targets();
      const answers = await checkNodes(
        targets.map((t) => t.target),
        source.ssh,
      );
      for (const [i, { name }] of targets.entries()) {
        const report = answers[i] as NodeReport;
        const before = reports.get(name);
        if (!before || line(name, before) !== line(name, report)) opts.log(line(name, report));
        reports.set(name, report);
      }
      latest = await source.model(reports, Date.now());
      server?.changed();
      await sleep(opts.everyMs, undefined, { signal }).catch(() => undefined);
    }
  } finally {
    await server?.close();
  }
}

export function watchCommand(argv: string[], log: (line: string) => void, err: (line: string) => void = (line) => void process.stderr.write(`${line}\n`)): Promise<number> {
  const io = { out: log, err };
  return runCommand({ name: 'cluster watch', usage: USAGE }, argv, async () => {
    const { values } = parseCommandLine(argv, OPTIONS);
    const every = Number(values.every);
    if (!(every > 0)) throw new UsageError(`--every: expected a positive number of seconds, got ${JSON.stringify(values.every)}`);
    const port = Number(values.port);
    if (!/^\d+$/.test(values.port) || port > 65535) throw new UsageError(`--port: expected a port number (0 for any free one), got ${JSON.stringify(values.port)}`);
    const remote = [values.hosts, values.key, values['known-hosts']];
    if (remote.some((v) => v !== undefined) && remote.some((v) => v === undefined)) throw new UsageError('--hosts, --key and --known-hosts go together');
    const source = values.hosts
      ? await hostsSource(values.hosts, values.key as string, values['known-hosts'] as string, values.user)
      : await localSource(values['state-dir'], values.user);
    const controller = new AbortController();
    void interrupted().then(() => controller.abort());
    await watchCluster(source, { everyMs: every * 1000, ...(values.web && { web: { port, host: values.listen } }), log }, controller.signal);
    return 0;
  }, io);
}
