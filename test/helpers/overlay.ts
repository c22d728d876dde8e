// A minion's PhaseContext for the overlay tests: a temp root, the weave double first on PATH, captured
// logs and status reports, and a node whose interfaces the test chooses.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHost, type Host } from '../../agent/host.js';
import { parseNameserver } from '../../agent/dns.js';
import type { PhaseContext, RoleConfig, StatusFacts } from '../../agent/phase.js';
import type { Interfaces } from '../../agent/peers.js';

export const WEAVE_DOUBLE_DIR = fileURLToPath(new URL('../fixtures/weave-double', import.meta.url));

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
  /** What the weave double was called with: one array of arguments per call. */
  weaveCalls(): Promise<string[][]>;
  /** While this file exists, the weave double exits 1. */
  failFile: string;
  /** The last value each fact had in the reports. */
  facts(): StatusFacts;
}

export async function tempRoot(t: Cleanup, prefix = 'kubeseed-overlay-'): Promise<string> {
  const root = await mkdtemp(path.join(os.tmpdir(), prefix));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  return root;
}

export function minionConfig(vars: Record<string, string> = {}): RoleConfig {
  return {
    role: 'minion',
    file: '/etc/sysconfig/kubernetes-minions',
    cluster: 'demo',
    domain: 'k8s',
    apiEndpoint: 'https://masters.demo.k8s:6443',
    vars: { CLUSTER_NAME: 'demo', ...vars },
  };
}

export async function minionContext(
  t: Cleanup,
  nameserver: string,
  opts: { root?: string; vars?: Record<string, string>; host?: (h: Host) => Host } = {},
): Promise<MinionContext> {
  const root = opts.root ?? (await tempRoot(t));
  const callLog = path.join(root, '..', `${path.basename(root)}.weave-calls`);
  const failFile = path.join(root, '..', `${path.basename(root)}.weave-fail`);
  t.teardown(() => Promise.all([rm(callLog, { force: true }), rm(failFile, { force: true })]));
  const logs: string[] = [];
  const reports: MinionContext['reports'] = [];
  const host = createHost({
    root,
    env: { ...process.env, PATH: `${WEAVE_DOUBLE_DIR}:${process.env.PATH}`, WEAVE_DOUBLE_LOG: callLog, WEAVE_DOUBLE_FAIL: failFile },
    write: (line) => logs.push(line),
  });
  return {
    root,
    host: opts.host ? opts.host(host) : host,
    config: minionConfig(opts.vars),
    nameserver: parseNameserver(nameserver),
    signal: new AbortController().signal,
    async report(update) {
      reports.push(update);
    },
    logs,
    reports,
    failFile,
    async weaveCalls() {
      const text = await readFile(callLog, 'utf8').catch(() => '');
      return text.split('\n').filter(Boolean).map((line) => line.split('\t'));
    },
    facts() {
      return Object.assign({}, ...reports.map((r) => r.facts ?? {}));
    },
  };
}

