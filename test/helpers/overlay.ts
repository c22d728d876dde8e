// A node's PhaseContext for the overlay tests: a temp root with a machine ID (the Weave peer name comes from
// it), captured logs and status reports, and a node whose interfaces the test chooses.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHost, type Host } from '../../agent/host.js';
import { parseNameserver } from '../../agent/dns.js';
import type { PhaseContext, RoleConfig, StatusFacts } from '../../agent/phase.js';
import type { Interfaces } from '../../agent/peers.js';

/** The machine ID the test roots carry, and the peer name the agent derives from it. */
export const MACHINE_ID = '0123456789abcdef0123456789abcdef';

/** eth0 10.0.0.5 and eth1 192.168.7.9 (plus loopback and IPv6 on each), as os.networkInterfaces() shows them. */
export const NODE_INTERFACES: Interfaces = {
  lo: [
    { address: '127.0.0.1', netmask: '255.0.0.0', family: 'IPv4', mac: '00:00:00:00:00:00', internal: true, cidr: '127.0.0.1/8' },
    { address: '::1', netmask: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', family: 'IPv6', mac: '00:00:00:00:00:00', internal: true, cidr: '::1/128', scopeid: 0 },
  ],
  eth0: [
    { address: '10.0.0.5', netmask: '255.255.255.0', family: 'IPv4', mac: '02:00:00:00:00:05', internal: false, cidr: '10.0.0.5/24' },
    { address: 'fe80::5', netmask: 'ffff:ffff:ffff:ffff::', family: 'IPv6', mac: '02:00:00:00:00:05', internal: false, cidr: 'fe80::5/64', scopeid: 2 },
  ],
  eth1: [
    { address: '192.168.7.9', netmask: '255.255.255.0', family: 'IPv4', mac: '02:00:00:00:07:09', internal: false, cidr: '192.168.7.9/24' },
  ],
};

export interface Cleanup {
  teardown(fn: () => unknown): void;
}

export interface MinionContext extends PhaseContext {
  root: string;
  logs: string[];
  reports: { waitingOn?: string | null; facts?: StatusFacts }[];
  /** The last value each fact had in the reports. */
  facts(): StatusFacts;
}

export async function tempRoot(t: Cleanup, prefix = 'kubeseed-overlay-'): Promise<string> {
  const root = await mkdtemp(path.join(os.tmpdir(), prefix));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  return root;
}

export function minionConfig(vars: Record<string, string> = {}, role: 'master' | 'minion' = 'minion'): RoleConfig {
  return {
    role,
    file: role === 'minion' ? '/etc/sysconfig/kubernetes-minions' : '/etc/sysconfig/kubernetes-masters',
    cluster: 'demo',
    domain: 'k8s',
    apiEndpoint: 'https://masters.demo.k8s:6443',
    vars: { CLUSTER_NAME: 'demo', ...vars },
  };
}

export async function minionContext(
  t: Cleanup,
  nameserver: string,
  opts: { root?: string; vars?: Record<string, string>; host?: (h: Host) => Host; role?: 'master' | 'minion' } = {},
): Promise<MinionContext> {
  const root = opts.root ?? (await tempRoot(t));
  await mkdir(path.join(root, 'etc'), { recursive: true });
  await writeFile(path.join(root, 'etc/machine-id'), `${MACHINE_ID}\n`);
  const logs: string[] = [];
  const reports: MinionContext['reports'] = [];
  const host = createHost({ root, write: (line) => logs.push(line) });
  return {
    root,
    host: opts.host ? opts.host(host) : host,
    config: minionConfig(opts.vars, opts.role),
    nameserver: parseNameserver(nameserver),
    signal: new AbortController().signal,
    async report(update) {
      reports.push(update);
    },
    logs,
    reports,
    facts() {
      return Object.assign({}, ...reports.map((r) => r.facts ?? {}));
    },
  };
}
