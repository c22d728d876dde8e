// Phase `etcd` on a master root against a real DNS server on loopback: it waits while the masters record
// lists fewer masters than MASTER_COUNT (saying so in status), forms with the full list once two looks agree,
// issues its member certificates with its own address, and a re-run changes nothing. Offline (--root), so no
// running etcd is asked (test/etcd-cluster.test.ts runs the decisions against real members). Where the data
// dir lives comes from the root's /proc/self/mountinfo: in RAM is a warning, a labelled disk not yet mounted a wait.
import { X509Certificate } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import t from 'tap';
import { envFileVars } from '../agent/contract/env-file.js';
import { parseNameserver } from '../agent/dns.js';
import { createEtcdPhase } from '../agent/etcd.js';
import { APISERVER_MEMBER_CERT, ETCD_DISK, ETCD_ENV, ETCD_MEMBER_CERT, ETCD_SERVERS_ENV, etcdStorage, MOUNTINFO } from '../agent/etcd-files.js';
import { createHost } from '../agent/host.js';
import type { PhaseContext } from '../agent/phase.js';
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
  const reports: Parameters<PhaseContext['report']>[0][] = [];
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

// Mount tables as the kernel writes them (proc(5)): a PXE node's RAM root, the labelled disk on it, an EC2 root.
const RAM_ROOT = [
  '1 1 0:2 / / rw - rootfs rootfs rw,size=745036k,nr_inodes=186259',
  '22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw',
  '24 1 0:23 / /run rw,nosuid,nodev shared:2 - tmpfs tmpfs rw,size=299444k,mode=755',
  '45 1 0:38 / /var/lib/etcd-backup rw,relatime shared:20 - ext4 /dev/vdc rw',
].join('\n');
const DISK = '60 1 253:16 / /var/lib/etcd rw,noatime shared:30 - ext4 /dev/vdb rw';
const EC2_ROOT = '25 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw,discard,errors=remount-ro\n26 25 0:5 / /dev rw shared:2 - devtmpfs udev rw';

t.test('where the data dir lives: RAM, the labelled disk, a root on disk, a disk not mounted yet', async (t) => {
  t.same(etcdStorage(RAM_ROOT, false), { kind: 'ram', mount: '/', fstype: 'rootfs' }, 'a PXE root: /var/lib/etcd-backup is another directory, not a parent');
  t.same(etcdStorage(`${RAM_ROOT}\n${DISK}`, true), { kind: 'kept', mount: '/var/lib/etcd', fstype: 'ext4' }, 'the labelled disk mounted on it');
  t.same(etcdStorage(EC2_ROOT, false), { kind: 'kept', mount: '/', fstype: 'ext4' }, "an EC2 root disk persists: no disk needed");
  t.same(etcdStorage(RAM_ROOT, true), { kind: 'unmounted' }, 'the disk is there but not mounted: the data dir must not be read yet');
  t.same(etcdStorage(`${EC2_ROOT}\n61 25 0:50 / /var/lib rw - tmpfs tmpfs rw`, false), { kind: 'ram', mount: '/var/lib', fstype: 'tmpfs' }, 'a tmpfs on a parent');
  t.same(etcdStorage(`${RAM_ROOT}\n${DISK}\n62 60 0:51 / /var/lib/etcd rw - tmpfs tmpfs rw`, true), { kind: 'ram', mount: '/var/lib/etcd', fstype: 'tmpfs' }, 'stacked: the mount on top holds it (a tmpfs over the disk)');
  t.same(etcdStorage('70 1 0:2 / /var/lib/etcd\\040old rw - ext4 /dev/vdb rw\n' + RAM_ROOT, false), { kind: 'ram', mount: '/', fstype: 'rootfs' }, 'an escaped space is part of a mount point');
  t.same(etcdStorage(undefined, false), { kind: 'unknown' }, 'no mount table (an offline root): nothing said');
});

t.test('a data dir in RAM: one warning line and a status warning; a labelled disk not yet mounted: it waits', async (t) => {
  const { ctx, logs, reports } = await masterContext(t, '127.0.0.1:53', 'CLUSTER_NAME=demo\n');
  const mountinfo = path.join(ctx.host.resolve('/'), MOUNTINFO);
  await mkdir(path.dirname(mountinfo), { recursive: true });
  await writeFile(mountinfo, RAM_ROOT);
  const phase = createEtcdPhase({ pollMs: 20, timeoutMs: 20_000 });
  await phase.run(ctx);
  const warnings = logs.filter((l) => l.startsWith('etcd-data-in-ram '));
  t.equal(warnings.length, 1, 'one log line');
  t.match(warnings[0], /dir=\/var\/lib\/etcd fs=rootfs warning="etcd's data dir \/var\/lib\/etcd is in RAM \(rootfs at \/\): a power-off of this master loses its member's data .*of every master at once the cluster's; give masters a disk labelled kubeseed-etcd"/);
  t.match(reports.find((r) => r.warning)?.warning, /is in RAM/, 'and the same words for `agent status`');

  logs.length = 0;
  reports.length = 0;
  await mkdir(path.dirname(ctx.host.resolve(ETCD_DISK)), { recursive: true });
  await writeFile(ctx.host.resolve(ETCD_DISK), '');
  const running = phase.run(ctx);
  await until('the phase to wait for the disk', () => reports.some((r) => r.waitingOn?.includes('kubeseed-etcd')), 10_000);
  t.equal(reports.find((r) => r.waitingOn)?.waitingOn, 'the disk labelled kubeseed-etcd to be mounted at /var/lib/etcd (kubeseed-etcd-disk.service)');
  await writeFile(mountinfo, `${RAM_ROOT}\n${DISK}\n`);
  await running;
  t.notOk(logs.some((l) => l.startsWith('etcd-data-in-ram')), 'on the disk: no warning');
  t.match(reports.at(-1)?.facts, { etcd: { member: '127.0.0.1', decision: 'new' } }, 'and then decides the member');
});
