// Phase `etcd` on a master root against a real DNS server on loopback: it waits while the masters record
// lists fewer masters than MASTER_COUNT (saying so in status), forms with the full list once two looks agree,
// issues its member certificates with its own address, and a re-run changes nothing. Offline (--root), so no
// running etcd is asked (test/etcd-cluster.test.ts runs the decisions against real members).
import { X509Certificate } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import * as path from 'node:path';
import t from 'tap';
import { envFileVars } from '../agent/contract/env-file.js';
import { parseNameserver } from '../agent/dns.js';
import { createEtcdPhase } from '../agent/etcd.js';
import { APISERVER_MEMBER_CERT, ETCD_ENV, ETCD_MEMBER_CERT, ETCD_SERVERS_ENV } from '../agent/etcd-files.js';
import { createHost } from '../agent/host.js';
import type { PhaseContext, StatusFacts } from '../agent/phase.js';
import { applyPki, decidePki, readSecrets } from '../agent/pki.js';
import { loadRole } from '../agent/role-file.js';
import { startTestDns } from './helpers/dns.js';
import { makeTestSecrets, nodeRoot } from './helpers/secrets.js';
import { until } from './helpers/until.js';

const RECORD = 'masters.demo.k8s';
const SELF = '10.0.0.12';
const interfaces = () => ({
  lo: [{ address: '127.0.0.1', netmask: '255.0.0.0', family: 'IPv4' as const, mac: '00:00:00:00:00:00', internal: true, cidr: '127.0.0.1/8' }],
  eth0: [{ address: SELF, netmask: '255.255.255.0', family: 'IPv4' as const, mac: '02:00:00:00:00:12', internal: false, cidr: `${SELF}/24` }],
});

async function masterContext(t: { teardown(fn: () => unknown): void }, nameserver: string, roleFile: string) {
  const root = await nodeRoot('master', await makeTestSecrets('demo'), roleFile);
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const logs: string[] = [];
  const reports: { waitingOn?: string | null; facts?: StatusFacts }[] = [];
  const host = createHost({ root, write: (line) => logs.push(line) });
  const loaded = await loadRole(host);
  if (loaded.state !== 'configured') throw new Error(`role file: ${loaded.state}`);
  await applyPki(host, decidePki(loaded.config, await readSecrets(host), new Date()));
  const ctx: PhaseContext = {
    host,
    config: loaded.config,
    nameserver: parseNameserver(nameserver),
    signal: new AbortController().signal,
    report: async (update) => void reports.push(update),
  };
  return { root, ctx, logs, reports };
}

t.test('waits for MASTER_COUNT masters in the record, then forms with them and its own certificates', async (t) => {
  const dns = await startTestDns('demo.k8s', { [RECORD]: ['10.0.0.11', SELF] }, 1);
  t.teardown(() => dns.close());
  const { root, ctx, logs, reports } = await masterContext(t, dns.nameserver, 'CLUSTER_NAME=demo\nMASTER_COUNT=3\n');
  const phase = createEtcdPhase({ interfaces, pollMs: 20, timeoutMs: 20_000, dnsTimeoutMs: 2000 });

  const running = phase.run(ctx);
  await until('the phase to say what it waits for', () => reports.some((r) => typeof r.waitingOn === 'string' && r.waitingOn.includes('it lists 2')), 10_000);
  t.match(reports.find((r) => r.waitingOn?.includes('it lists'))?.waitingOn, 'the masters record to list 3 masters (MASTER_COUNT=3); it lists 2: 10.0.0.11, 10.0.0.12');
  t.equal(await ctx.host.readFile(ETCD_ENV), undefined, 'nothing written while it waits');
  dns.records.set(RECORD, ['10.0.0.13', SELF, '10.0.0.11']);
  await running;

  const env = envFileVars((await ctx.host.readFile(ETCD_ENV))!, ETCD_ENV);
  t.same(env, {
    ETCD_NAME: SELF,
    ETCD_LISTEN_CLIENT_URLS: `https://${SELF}:2379,https://127.0.0.1:2379`,
    ETCD_ADVERTISE_CLIENT_URLS: `https://${SELF}:2379`,
    ETCD_LISTEN_PEER_URLS: `https://${SELF}:2380`,
    ETCD_INITIAL_ADVERTISE_PEER_URLS: `https://${SELF}:2380`,
    ETCD_INITIAL_CLUSTER: '10.0.0.11=https://10.0.0.11:2380,10.0.0.12=https://10.0.0.12:2380,10.0.0.13=https://10.0.0.13:2380',
    ETCD_INITIAL_CLUSTER_STATE: 'new',
    ETCD_INITIAL_CLUSTER_TOKEN: 'kubeseed-demo',
  });
  t.same(envFileVars((await ctx.host.readFile(ETCD_SERVERS_ENV))!, ETCD_SERVERS_ENV), {
    ETCD_SERVERS: 'https://10.0.0.11:2379,https://10.0.0.12:2379,https://10.0.0.13:2379',
  });
  const etcdCert = new X509Certificate(await readFile(path.join(root, ETCD_MEMBER_CERT.crt)));
  t.match(etcdCert.subjectAltName, `IP Address:${SELF}`, "etcd's member certificate carries this master's address");
  t.ok(etcdCert.checkIssued(new X509Certificate(await readFile(path.join(root, '/etc/kubernetes/pki/etcd-ca.crt')))), 'issued by the etcd CA');
  const apiCert = new X509Certificate(await readFile(path.join(root, APISERVER_MEMBER_CERT.crt)));
  t.match(apiCert.subjectAltName, /DNS:masters\.demo\.k8s.*IP Address:10\.0\.0\.12/, "the API server's names it and the masters name");
  t.same(reports.at(-1)?.facts, { etcd: { member: SELF, decision: 'new', servers: ['https://10.0.0.11:2379', 'https://10.0.0.12:2379', 'https://10.0.0.13:2379'] } });

  const issued = logs.filter((l) => l.startsWith('cert-issued')).length;
  t.equal(issued, 2, 'two certificates issued');
  await phase.run(ctx);
  t.equal(logs.filter((l) => l.startsWith('cert-issued')).length, issued, 'a re-run keeps them');
  t.equal(logs.filter((l) => l.startsWith('etcd-member ')).length, 1, 'and rewrites nothing');
});
