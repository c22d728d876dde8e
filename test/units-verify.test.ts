// The unit set: every file in units/ passes `systemd-analyze verify` with no output at all, in a root
// where the programs the units run exist (stubs made from the units' own Exec lines); the Kubernetes
// units are secure by flag and belong to the right role; and every EnvironmentFile= a role's units
// require exists once the pki phase (and on masters the etcd phase) has run.
import { execFile } from 'node:child_process';
import { chmod, cp, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import t from 'tap';
import { createHost } from '../agent/host.js';
import { createEtcdPhase } from '../agent/etcd.js';
import { decidePki, applyPki, readSecrets } from '../agent/pki.js';
import { loadRole } from '../agent/role-file.js';
import { parseUnitFile, listValues, type UnitFile } from '../agent/unit-file.js';
import { unitRoles } from '../agent/unit-match.js';
import { missingEnvironmentFiles } from '../agent/unit-needs.js';
import { UNITS_DIR, unitBinaries } from '../scripts/unit-binaries.js';
import { makeTestSecrets, nodeRoot, tempDir } from './helpers/secrets.js';
import { startUserManager } from './helpers/systemd-user.js';

const MASTER_UNITS = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kube-bootstrap'];
/** Every node's: masters are on the overlay too (their kubelet tainted NoSchedule). */
const NODE_UNITS = ['containerd', 'kubelet', 'kube-proxy'];

function run(cmd: string, args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, output: `${stdout}${stderr}` });
    });
  });
}

async function loadUnit(name: string): Promise<UnitFile> {
  const file = path.join(UNITS_DIR, name);
  const { unit, problems } = parseUnitFile(await readFile(file, 'utf8'), file);
  if (problems.length) throw problems[0];
  return unit;
}

const value = (unit: UnitFile, section: string, key: string) => listValues(unit, section, key).map((e) => e.value);
const execStart = (unit: UnitFile) => value(unit, 'Service', 'ExecStart').join(' ');

/** A root with systemd's own units, a stub for every program the units run, and units/ installed. */
async function verifyRoot(): Promise<string> {
  const root = await tempDir('verify');
  await mkdir(path.join(root, 'usr/lib/systemd'), { recursive: true });
  await cp('/usr/lib/systemd/system', path.join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
  for (const program of await unitBinaries()) {
    await mkdir(path.join(root, path.dirname(program)), { recursive: true });
    await writeFile(path.join(root, program), '#!/bin/sh\nexit 0\n');
    await chmod(path.join(root, program), 0o755);
  }
  await cp(UNITS_DIR, path.join(root, 'etc/systemd/system'), { recursive: true });
  return root;
}

async function verify(root: string): Promise<{ code: number; output: string }> {
  const installed = path.join(root, 'etc/systemd/system');
  const files = (await readdir(installed)).map((name) => path.join(installed, name));
  return run('systemd-analyze', ['verify', `--root=${root}`, ...files]);
}

t.test('systemd-analyze verify prints nothing for every file in units/', async (t) => {
  const names = await readdir(UNITS_DIR);
  t.ok(names.length >= MASTER_UNITS.length + NODE_UNITS.length, `${names.length} unit files`);
  const root = await verifyRoot();
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const result = await verify(root);
  t.equal(result.output, '', 'no output on stdout or stderr');
  t.equal(result.code, 0);
});

t.test('verify does complain when a program a unit runs is missing (so the check above can fail)', async (t) => {
  const root = await verifyRoot();
  t.teardown(() => rm(root, { recursive: true, force: true }));
  await rm(path.join(root, 'usr/local/bin/kubelet'));
  const result = await verify(root);
  t.match(result.output, /kubelet\.service: Command \/usr\/local\/bin\/kubelet is not executable/);
});

t.test('Kubernetes units: role, restart policy, install target, binaries in /usr/local/bin', async (t) => {
  for (const [names, roles] of [[MASTER_UNITS, ['master']], [NODE_UNITS, ['master', 'minion']]] as const) {
    for (const name of names) {
      const unit = await loadUnit(`${name}.service`);
      t.same(unitRoles(unit), roles, `${name} runs on ${roles.join(' and ')}s`);
      t.same(value(unit, 'Service', 'Restart'), ['on-failure'], `${name} restarts on failure`);
      t.ok(Number(value(unit, 'Unit', 'StartLimitIntervalSec')[0]) > 0, `${name} has a start limit interval`);
      t.ok(Number(value(unit, 'Unit', 'StartLimitBurst')[0]) > 0, `${name} has a start limit burst`);
      t.same(value(unit, 'Install', 'WantedBy'), ['multi-user.target'], `${name} is wanted by multi-user.target`);
      t.match(execStart(unit), /^\/usr\/local\/bin\//, `${name} runs from /usr/local/bin`);
    }
  }
});

t.test('ordering: each component comes after what it talks to', async (t) => {
  const after = async (name: string) => value(await loadUnit(`${name}.service`), 'Unit', 'After').join(' ').split(/\s+/);
  t.ok((await after('kube-apiserver')).includes('etcd.service'));
  for (const name of ['kube-controller-manager', 'kube-scheduler', 'kube-bootstrap']) {
    t.ok((await after(name)).includes('kube-apiserver.service'), `${name} after the API server`);
  }
  t.ok((await after('kubelet')).includes('containerd.service'));
});

t.test('no insecure serving: TLS, authentication and authorisation on every component', async (t) => {
  const api = execStart(await loadUnit('kube-apiserver.service'));
  t.notMatch(api, /--insecure-port|--insecure-bind-address|AlwaysAllow|--anonymous-auth=true/);
  t.match(api, /--secure-port=6443/);
  t.match(api, /--authorization-mode=Node,RBAC/);
  t.match(api, /--enable-bootstrap-token-auth=true/);
  t.match(api, /--client-ca-file=\/etc\/kubernetes\/pki\/ca\.crt/);
  t.match(api, /--enable-admission-plugins=NodeRestriction/);
  // Every member's https client URL, from etcd-servers.env (phase etcd; test/etcd-membership.test.ts).
  t.match(api, /--etcd-servers=\$\{ETCD_SERVERS\}/);
  const cm = execStart(await loadUnit('kube-controller-manager.service'));
  // `*` is the default set, which holds csrapproving and csrsigning.
  t.match(cm, /--controllers=\*,bootstrapsigner,tokencleaner/);
  t.match(cm, /--cluster-signing-key-file=\/etc\/kubernetes\/pki\/ca\.key/);
  const etcd = execStart(await loadUnit('etcd.service'));
  t.match(etcd, /--client-cert-auth=true/);
  t.match(etcd, /--peer-client-cert-auth=true/);
  // Listen and advertise URLs are the member's (etcd.env, phase etcd; test/etcd-cluster.test.ts runs them).
  t.notMatch(etcd, /--listen-client-urls|--initial-cluster/);
  const kubelet = execStart(await loadUnit('kubelet.service'));
  t.match(kubelet, /--bootstrap-kubeconfig=\/etc\/kubernetes\/bootstrap-kubelet\.kubeconfig/);
  t.match(kubelet, /--config=\/etc\/kubernetes\/kubelet-config\.yaml/);
});

for (const role of ['master', 'minion'] as const) {
  t.test(`${role}: every required EnvironmentFile= of its Kubernetes units exists after the pki phase, and not before`, async (t) => {
    const secrets = await makeTestSecrets('demo');
    const root = await nodeRoot(role, secrets, 'CLUSTER_NAME=demo\n');
    t.teardown(() => rm(root, { recursive: true, force: true }));
    const host = createHost({ root, write: () => {} });
    // The Kubernetes units read the role file and what the pki phase writes (other phases own the rest).
    const units = await Promise.all([...(role === 'master' ? MASTER_UNITS : []), ...NODE_UNITS].map((n) => loadUnit(`${n}.service`)));

    const before = (await Promise.all(units.map((u) => missingEnvironmentFiles(host, u)))).flat().map((r) => r.path);
    t.ok(before.includes('/etc/kubernetes/cluster.env'), 'without the pki phase, cluster.env is reported missing');

    const loaded = await loadRole(host);
    if (loaded.state !== 'configured') throw new Error(`role file: ${loaded.state}`);
    await applyPki(host, decidePki(loaded.config, await readSecrets(host), new Date()));
    if (role === 'master') {
      // One master (MASTERS unset): its member is on loopback, decided without DNS or a running etcd.
      await createEtcdPhase().run({ host, config: loaded.config, nameserver: { host: '127.0.0.1', port: 53 }, signal: new AbortController().signal, report: async () => {} });
    }
    for (const unit of units) {
      t.same(await missingEnvironmentFiles(host, unit), [], `${path.basename(unit.file)}: nothing missing`);
    }
  });
}

t.test('each Kubernetes command line is accepted by its double, which refuses what the real binary does not take', async (t) => {
  const kubeDouble = path.resolve('test/fixtures/kube-double/kube-double');
  const apiDouble = path.resolve('test/fixtures/master-double/kube-apiserver');
  const bin = await tempDir('kube-double');
  t.teardown(() => rm(bin, { recursive: true, force: true }));
  const as = async (name: string, args: string[]) => {
    await cp(name === 'kube-apiserver' ? apiDouble : kubeDouble, path.join(bin, name)).catch(() => undefined);
    return new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile(path.join(bin, name), args, (err, _stdout, stderr) => resolve({ code: err ? Number(err.code) || 1 : 0, stderr })),
    );
  };
  const unitArgs = async (name: string) => {
    // ${VAR} stands for one argument from an environment file: any value will do for the flag check.
    const [program, ...args] = execStart(await loadUnit(`${name}.service`)).replace(/\$\{\w+\}/g, 'x').split(/\s+/);
    t.equal(program, `/usr/local/bin/${name}`);
    return args;
  };
  for (const name of ['kubelet', 'kube-proxy', 'kube-scheduler', 'kube-controller-manager']) {
    const args = (await unitArgs(name)).map((a) => (a === '--cloud-provider=x' ? '--cloud-provider=external' : a));
    const r = await as(name, args);
    t.equal(r.code, 0, `${name}: every flag of its unit is one the binary takes${r.stderr ? `: ${r.stderr.trim()}` : ''}`);
    t.equal(r.stderr, '', `${name}: and none is deprecated`);
  }
  // The API server double serves once its flags are parsed: --version stops it there, as it stops the real one.
  const api = await as('kube-apiserver', [...(await unitArgs('kube-apiserver')), '--version']);
  t.equal(api.code, 0, `kube-apiserver: every flag of its unit is one the binary takes${api.stderr ? `: ${api.stderr.trim()}` : ''}`);
  t.equal(api.stderr, '', 'kube-apiserver: and none is deprecated');

  const scheduler = await as('kube-scheduler', ['--kubeconfig=/etc/kubernetes/scheduler.kubeconfig', '--profiling=false']);
  t.match(scheduler.stderr, /Flag --kubeconfig has been deprecated/, 'a deprecated scheduler flag draws the warning');
  const configFlag = await as('kubelet', ['--config=/etc/kubernetes/kubelet-config.yaml', '--cgroup-driver=systemd']);
  t.match(configFlag.stderr, /Flag --cgroup-driver has been deprecated, This parameter should be set via the config file/, 'a kubelet flag with a config field draws the warning');
  const proxyByFlags = await as('kube-proxy', ['--kubeconfig=/etc/kubernetes/kube-proxy.kubeconfig', '--proxy-mode=iptables']);
  t.match(proxyByFlags.stderr, /all flags other than --config, --write-config-to, and --cleanup are deprecated/, 'kube-proxy configured by flags draws the warning');
  const admission = await as('kube-apiserver', ['--admission-control=NodeRestriction', '--version']);
  t.match(admission.stderr, /Flag --admission-control has been deprecated/, 'a deprecated API server flag draws the warning');
  for (const [name, flag] of [
    ['kubelet', '--pod-infra-container-image=registry.k8s.io/pause:3.10.1'],
    ['kubelet', '--cloud-config=/etc/kubernetes/cloud.conf'],
    ['kube-apiserver', '--cloud-provider=aws'],
  ] as const) {
    const removed = await as(name, [flag]);
    t.equal(removed.code, 1, `${name}: ${flag} (removed) stops it`);
    t.match(removed.stderr, `Error: unknown flag: ${flag.split('=')[0]}`);
  }
  // The kubelet takes --cloud-provider as "" or "external" only, as the role file does.
  const inTree = await as('kubelet', ['--config=/etc/kubernetes/kubelet-config.yaml', '--cloud-provider=aws']);
  t.equal(inTree.code, 1, 'an in-tree cloud provider stops the kubelet');
  t.match(inTree.stderr, 'built-in cloud providers are disabled');
  t.equal((await as('kubelet', ['--cloud-provider='])).code, 0, 'an empty one is no cloud provider');
});

t.test("etcd's data disk: one that will not mount keeps etcd down; none, or one mounted, lets it start (real systemd)", async (t) => {
  const m = await startUserManager();
  t.teardown(() => m.stop());
  const dir = await tempDir('etcd-disk');
  const diskThere = path.join(dir, 'by-label-kubeseed-etcd');
  // The real units' [Unit] sections (dependencies and order as shipped); a user manager cannot mount or
  // run etcd, so the disk's mount is /bin/true or /bin/false and etcd a sleep. The role-file condition goes.
  const unitSection = async (name: string) => (await readFile(path.join(UNITS_DIR, name), 'utf8')).split(/^\[Service\]/m)[0]!;
  const etcd = (await unitSection('etcd.service')).replace(/^ConditionPathExists=.*$/m, '');
  const disk = (await unitSection('kubeseed-etcd-disk.service')).replace(/^ConditionPathExists=.*$/m, `ConditionPathExists=${diskThere}`);
  await m.writeUnit('etcd.service', `${etcd}[Service]\nExecStart=/bin/sleep 300\n`);
  const state = async (name: string) => (await m.systemctl('show', '-p', 'ActiveState', '--value', name)).trim();
  const start = async (mount: string) => {
    await m.writeUnit('kubeseed-etcd-disk.service', `${disk}[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=${mount}\n`);
    await m.systemctl('daemon-reload');
    return m.systemctl('start', 'etcd.service').then(() => 'started', (e: { stderr: string }) => e.stderr.trim());
  };
  const reset = async () => {
    await m.systemctl('stop', 'etcd.service', 'kubeseed-etcd-disk.service');
    await m.systemctl('reset-failed');
  };

  await writeFile(diskThere, '');
  t.match(await start('/bin/false'), /dependency job for etcd\.service failed/i, 'the disk is there and its mount fails: the start of etcd fails');
  t.equal(await state('etcd.service'), 'inactive', 'and etcd is not running');
  t.equal(await state('kubeseed-etcd-disk.service'), 'failed');

  await reset();
  t.equal(await start('/bin/true'), 'started', 'the disk mounts: etcd starts');
  t.equal(await state('kubeseed-etcd-disk.service'), 'active');
  t.equal(await state('etcd.service'), 'active');

  await reset();
  await rm(diskThere);
  t.equal(await start('/bin/false'), 'started', 'no disk (EC2, or a master without one): its mount is skipped and etcd starts');
  t.equal(await state('kubeseed-etcd-disk.service'), 'inactive');
  t.equal(await state('etcd.service'), 'active');
});
