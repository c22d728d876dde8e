// The local cluster's decisions before anything boots: node layout, the inventory the metal server
// accepts, the QEMU command line, the iPXE hand-off, the cloud-config on the kernel command line, and
// the PID bookkeeping that lets `cluster down` stop exactly what `up` started.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { inventoryYaml, planNodes, clusterKernelArgs, tftpBootScript, GUEST_KERNEL_ARGS } from '../scripts/cluster/plan.js';
import { qemuArgs } from '../scripts/cluster/qemu.js';
import { isOurs, processesNaming, readState, startDetached, stopProcess, writeState, type ClusterState } from '../scripts/cluster/state.js';
import { bootTiming, systemdTotal } from '../scripts/cluster/timing.js';
import { main } from '../scripts/cluster.js';
import { renderNodes } from '../scripts/cluster/lifecycle.js';
import { parseInventory, inventoryZone } from '../scripts/metal/inventory.js';
import { networkConfig } from '../scripts/metal/boot-files.js';
import { checkKernelArg, KERNEL_COMMAND_LINE_MAX, machineScript } from '../scripts/metal/boot-files.js';
import { startMetalServer } from '../scripts/metal/server.js';
import { parse as parseYaml } from 'yaml';
import { InputError } from '../agent/errors.js';
import { readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { composeComponents, parseSwap } from '../scripts/cluster/components.js';
import { checkManifest } from '../image/manifest.mjs';

t.test('one master and two minions: names, roles, distinct MACs and LAN addresses', async (t) => {
  const nodes = planNodes(1, 2);
  t.same(nodes.map((n) => [n.name, n.role, n.address]), [
    ['master-1', 'master', '192.168.100.10'],
    ['minion-1', 'minion', '192.168.100.11'],
    ['minion-2', 'minion', '192.168.100.12'],
  ]);
  const macs = nodes.flatMap((n) => [n.lanMac, n.bootMac]);
  t.equal(new Set(macs).size, 6);
  for (const m of macs) t.match(m, /^52:54:00(:[0-9a-f]{2}){3}$/);
  t.throws(() => planNodes(0, 2), InputError);
  t.throws(() => planNodes(1, -1), InputError);
  t.throws(() => planNodes(1, 500), /at most 200 nodes/);
  t.equal(planNodes(1, 150).length, 151);
  t.equal(new Set(planNodes(1, 150).map((n) => n.address)).size, 151);
  t.same(planNodes(3, 2).map((n) => `${n.name} ${n.address}`), ['master-1 192.168.100.10', 'master-2 192.168.100.11', 'master-3 192.168.100.12', 'minion-1 192.168.100.13', 'minion-2 192.168.100.14'], 'three masters');
});

t.test('the inventory is one the metal server loads: DNS names and static LAN addresses for the LAN NIC', async (t) => {
  const nodes = planNodes(1, 2);
  const inv = parseInventory(inventoryYaml('local', 'k8s', nodes), 'inventory.yaml');
  t.same(inv.machines.map((m) => [m.hostname, m.role, m.mac, m.address]), nodes.map((n) => [n.name, n.role, n.lanMac, n.address]));
  const zone = inventoryZone(inv, 30);
  t.same(zone.records.get('masters.local.k8s'), ['192.168.100.10']);
  t.same(zone.records.get('minions.local.k8s'), ['192.168.100.11', '192.168.100.12']);
  const net = networkConfig(inv, inv.machines[1]!);
  t.match(net, `macaddress: "${nodes[1]!.lanMac}"`);
  t.match(net, '192.168.100.11/24');
  t.throws(() => inventoryYaml('Bad_Name', 'k8s', nodes), InputError);
});

t.test('the TFTP boot script chains to the metal server with the LAN MAC the inventory knows', async (t) => {
  const [node] = planNodes(1, 0);
  t.equal(tftpBootScript('http://10.0.2.2:8080', node!), `#!ipxe\nchain http://10.0.2.2:8080/ipxe?mac=${node!.lanMac}\n`);
});

t.test('the kernel command line as cloud-init reads it: the cluster config, the network config, no second activation', async (t) => {
  const key = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO+/x= kubeseed-cluster@local';
  const args = clusterKernelArgs(`${key}\n`);
  t.equal(args.at(-1), 'end_cc');
  for (const a of [...args, ...GUEST_KERNEL_ARGS]) t.equal(checkKernelArg(a), undefined, `${a.slice(0, 20)}... is a word the metal server accepts`);
  const inv = parseInventory(inventoryYaml('local', 'k8s', planNodes(1, 2)), 'inventory.yaml');
  const machine = inv.machines[2]!;
  const net = networkConfig(inv, machine, { host: '10.0.2.2', port: 53 });
  const script = machineScript('http://10.0.2.2:65535', machine, net, [...GUEST_KERNEL_ARGS, ...args]);
  const cmdline = /^kernel \S+ (.*)$/m.exec(script)![1]!;
  t.match(cmdline, / net\.ifnames=0 ip=eth0:dhcp /, 'DHCP on the boot NIC, which the inventory does not name');
  t.match(cmdline, / panic=-1 /, 'a guest that panics restarts (and so ends QEMU, which the watcher retries) instead of hanging');
  t.ok(cmdline.length <= KERNEL_COMMAND_LINE_MAX, `${cmdline.length} bytes: within the kernel's ${KERNEL_COMMAND_LINE_MAX}`);
  // cloud-init's own readers: the cc: config (util.read_conf_from_cmdline, every block joined) and the
  // network config its local stage applies (net.cmdline.read_kernel_cmdline_config).
  const py =
    'import json, sys\nfrom cloudinit import util\nfrom cloudinit.net import cmdline\n' +
    'print(json.dumps([util.read_conf_from_cmdline(sys.argv[1]), cmdline.read_kernel_cmdline_config(sys.argv[1])]))';
  const { stdout } = await promisify(execFile)('/usr/bin/python3', ['-c', py, cmdline]);
  const [config, early] = JSON.parse(stdout);
  t.same(config.ssh_authorized_keys, [key]);
  t.equal(config.disable_root, false);
  t.match(config.bootcmd[0][2], /^\{ test -e \/etc\/ssh\/ssh_host_ed25519_key \|\| ssh-keygen -q -t ed25519 .*>\/dev\/ttyS1$/, 'an ed25519 host key is made and reported on the second serial port');
  t.same(config.ssh_genkeytypes, ['ed25519'], 'and cloud-init makes no other (RSA costs seconds of a TCG guest)');
  t.equal(config.ssh_deletekeys, false, 'and cloud-init keeps them');
  t.equal(config.disable_network_activation, true, 'the network stage does not restart networkd and resolved');
  t.same(config.datasource, { NoCloud: { fs_label: null } }, 'NoCloud looks for no cidata disk: the seed is the URL');
  t.same(early, parseYaml(net), 'the local stage applies the same network config the seed serves');
  t.same(early.ethernets.boot.addresses, ['192.168.100.12/24'], 'with the address DNS publishes for minion-2');
});

t.test('a kernel command line past the kernel limit is refused at start, naming the machine', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'kubeseed-cmdline-'));
  await writeFile(join(dir, 'inventory.yaml'), inventoryYaml('local', 'k8s', planNodes(1, 0)));
  await t.rejects(
    startMetalServer({ inventory: join(dir, 'inventory.yaml'), imageDir: dir, dnsPort: 0, httpPort: 0, extraKernelArgs: ['x'.repeat(1800)], log: () => {} }),
    { name: 'InputError', message: /^master-1: its kernel command line would be \d+ bytes, over the kernel's 2047 \(shorten the --kernel-arg values\)$/ },
  );
});

t.test('QEMU command line: PXE from user networking with the SSH forward on loopback, the LAN on multicast, a master\'s etcd disk', async (t) => {
  const vm = {
    name: 'kubeseed-local-minion-1',
    accel: 'tcg' as const,
    memoryMb: 512,
    bootMac: '52:54:00:6b:02:02',
    lanMac: '52:54:00:6b:01:02',
    tftpDir: '/s/nodes/minion-1/tftp',
    sshPort: 40022,
    mcast: { group: '230.0.0.1', port: 41000 },
    consoleLog: '/s/nodes/minion-1/console.log',
    reportLog: '/s/nodes/minion-1/report.log',
    pidFile: '/s/nodes/minion-1/qemu.pid',
  };
  const args = qemuArgs(vm);
  const joined = args.join(' ');
  t.match(joined, '-accel tcg -cpu max -smp 1 -m 512');
  t.match(joined, '-boot n');
  t.match(joined, 'user,id=boot,tftp=/s/nodes/minion-1/tftp,bootfile=boot.ipxe,hostfwd=tcp:127.0.0.1:40022-:22');
  t.match(joined, 'virtio-net-pci,netdev=boot,mac=52:54:00:6b:02:02,bootindex=1');
  t.match(joined, 'socket,id=lan,mcast=230.0.0.1:41000,localaddr=127.0.0.1');
  t.match(joined, 'virtio-net-pci,netdev=lan,mac=52:54:00:6b:01:02');
  t.match(joined, '-serial file:/s/nodes/minion-1/console.log -serial file:/s/nodes/minion-1/report.log');
  t.match(joined, '-pidfile /s/nodes/minion-1/qemu.pid');
  t.match(qemuArgs({ ...vm, accel: 'kvm' }).join(' '), '-accel kvm -cpu host');
  t.notMatch(joined, '-drive', 'a minion has no disk');
  t.match(
    qemuArgs({ ...vm, etcdDisk: '/s/nodes/master-1/etcd.img' }).join(' '),
    '-drive if=none,id=etcd,format=raw,file=/s/nodes/master-1/etcd.img -device virtio-blk-pci,drive=etcd',
    "a master's etcd disk is a raw virtio disk",
  );
});

t.test('state: written whole, read back; PIDs are stopped only while they are still ours', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'cluster-state-'));
  const state: ClusterState = {
    cluster: 'local',
    domain: 'k8s',
    accel: 'tcg',
    memoryMb: 512,
    mcast: { group: '230.0.0.1', port: 1 },
    nodes: [],
  };
  t.equal(await readState(dir), undefined);
  await writeState(dir, state);
  t.same(await readState(dir), state);
  await writeFile(join(dir, 'cluster.json'), '{');
  await t.rejects(readState(dir), InputError);

  // A long sleeper whose command line names our "state dir", as QEMU's -pidfile does.
  const marker = join(dir, 'marker');
  const pid = startDetached(process.execPath, ['-e', 'setInterval(() => {}, 1000)', marker], join(dir, 'log'));
  t.ok(await isOurs(pid, marker));
  t.same(await processesNaming(marker), [pid]);
  t.notOk(await isOurs(pid, join(dir, 'other')), 'another marker: not ours');
  t.ok(await stopProcess(pid, join(dir, 'other')), 'a PID that is not ours counts as gone...');
  t.ok(await isOurs(pid, marker), '...and is left alone');
  t.ok(await stopProcess(pid, marker));
  t.notOk(await isOurs(pid, marker));
  t.same(await processesNaming(marker), []);

  // A process that ignores SIGTERM gets SIGKILL after the grace period.
  const stubborn = startDetached(process.execPath, ['-e', 'process.on("SIGTERM", () => {}); setInterval(() => {}, 1000)', marker], join(dir, 'log'));
  await new Promise((r) => setTimeout(r, 200));
  t.ok(await stopProcess(stubborn, marker, 500));
  t.same(await processesNaming(marker), []);
  t.throws(() => startDetached('/nonexistent/qemu', [], join(dir, 'log')), /could not start/);
});

t.test('the node table: role, address, phase, units and power-on-to-ready time', async (t) => {
  const state: ClusterState = {
    cluster: 'local',
    domain: 'k8s',
    accel: 'tcg',
    memoryMb: 512,
    mcast: { group: '230.0.0.1', port: 1 },
    nodes: [
      { name: 'master-1', role: 'master', address: '192.168.100.10', lanMac: '', bootMac: '', sshPort: 4001, power: 'on', boots: 1, poweredOnAt: 1000, readyAt: 53_400, state: 'ready', phase: 'units', units: ['etcd.service', 'kube-apiserver.service'] },
      { name: 'minion-1', role: 'minion', address: '192.168.100.11', lanMac: '', bootMac: '', sshPort: 4002, power: 'on', boots: 1, poweredOnAt: 1000, state: 'waiting', phase: 'wait-for-masters', detail: 'https://masters.local.k8s:6443/readyz (refused)' },
      { name: 'minion-2', role: 'minion', address: '192.168.100.12', lanMac: '', bootMac: '', sshPort: 4003, power: 'off', boots: 0 },
    ],
  };
  const table = renderNodes(state);
  t.match(table, /NODE\s+ROLE\s+ADDRESS\s+SSH\s+STATE\s+PHASE\s+UNITS\s+POWER-ON TO READY/);
  t.match(table, /master-1\s+master\s+192\.168\.100\.10\s+127\.0\.0\.1:4001\s+ready\s+units\s+etcd,kube-apiserver\s+52 s/);
  t.match(table, /minion-1\s+minion\s+192\.168\.100\.11\s+127\.0\.0\.1:4002\s+waiting\s+wait-for-masters\s+-\s+-/);
  t.match(table, /minion-2\s+minion\s+192\.168\.100\.12\s+127\.0\.0\.1:4003\s+off/);
  t.match(table, '1 of 3 nodes ready');
  t.match(table, 'waiting: minion-1: https://masters.local.k8s:6443/readyz (refused)');
});

t.test('where the time went: the floor, the agent own time, the waits and systemd-analyze, per node', async (t) => {
  const status = {
    startedAt: '2026-12-02T10:00:40.000Z',
    phases: [
      { name: 'pki', startedAt: '2026-12-02T10:00:41.000Z', endedAt: '2026-12-02T10:00:42.000Z' },
      { name: 'wait-for-masters', startedAt: '2026-12-02T10:00:42.000Z', endedAt: '2026-12-02T10:01:32.000Z', waitedMs: 49_500 },
      { name: 'units', startedAt: '2026-12-02T10:01:32.000Z', endedAt: '2026-12-02T10:01:44.000Z', waitedMs: 9_000 },
    ],
  };
  const analyze = 'Startup finished in 2.512s (kernel) + 1min 3.5s (userspace) = 1min 6.012s\nmulti-user.target reached after 1min 3.4s in userspace.\n';
  // The host saw power-on at 0 and ready at 110 s; the agent ran 64 s of it (10:00:40 to 10:01:44).
  const timing = bootTiming(status, 1_000, 111_000, analyze);
  t.same(timing, {
    powerOnToReady: 110,
    beforeAgent: 46,
    agentOwn: 5.5,
    waitingOnOthers: 49.5,
    unitsStarting: 9,
    systemd: 66,
    phases: { pki: 1, 'wait-for-masters': 50, units: 12 },
  });
  t.equal(systemdTotal('Bootup is not yet finished (org.freedesktop.systemd1.Manager.FinishTimestampMonotonic=0).'), undefined);
  t.equal(bootTiming({ phases: [] }, 0, 1), undefined, 'a status without times gives no timing');
  const table = renderNodes({
    cluster: 'local', domain: 'k8s', accel: 'tcg', memoryMb: 1536, mcast: { group: '230.0.0.1', port: 1 },
    nodes: [{ name: 'minion-1', role: 'minion', address: '192.168.100.11', lanMac: '', bootMac: '', sshPort: 4002, power: 'on', boots: 1, poweredOnAt: 1_000, readyAt: 111_000, state: 'ready', timing: timing! }],
  });
  t.match(table, /NODE\s+ROLE\s+POWER-ON TO READY\s+BEFORE AGENT \(FLOOR\)\s+AGENT OWN\s+WAITING ON OTHERS\s+UNITS STARTING\s+SYSTEMD-ANALYZE/);
  t.match(table, /minion-1\s+minion\s+110 s\s+46 s\s+5\.5 s\s+49\.5 s\s+9 s\s+66 s/);
});

t.test('components: the kube-apiserver double swapped into the doubles, pinned by its own sha256', async (t) => {
  const out = await mkdtemp(join(tmpdir(), 'cluster-components-'));
  const base = 'test/fixtures/components-double';
  const manifest = await composeComponents(base, join(base, 'manifest.json'), [parseSwap('kube-apiserver=test/fixtures/master-double/kube-apiserver')], out);
  const doc = JSON.parse(await readFile(manifest, 'utf8'));
  const api = doc.components.find((c: { name: string }) => c.name === 'kube-apiserver');
  const bytes = await readFile('test/fixtures/master-double/kube-apiserver');
  t.equal(api.digest, createHash('sha256').update(bytes).digest('hex'));
  t.same(await readFile(join(out, api.file)), bytes);
  for (const c of doc.components.filter((x: { name: string }) => x.name !== 'kube-apiserver')) {
    const file = await readFile(join(out, c.file));
    t.equal(createHash('sha256').update(file).digest('hex'), c.digest, `${c.name} still matches its pin`);
  }
  t.same(checkManifest(doc).problems, [], 'the composed manifest is one provision takes');
  await t.rejects(composeComponents(base, join(base, 'manifest.json'), [['kube-nothing', 'x']], out), /no component named kube-nothing/);
  await t.rejects(composeComponents(base, join(base, 'manifest.json'), [['kubelet', '/nonexistent']], out), /cannot read \/nonexistent/);
  const tarball = join(out, 'tarball.json');
  await writeFile(tarball, JSON.stringify({ components: [{ name: 'etcd', kind: 'tarball', members: { etcd: '/usr/local/bin/etcd' } }] }));
  await t.rejects(composeComponents(base, tarball, [['etcd', 'test/fixtures/master-double/kube-apiserver']], out), /--component etcd: only a "file" component can be swapped/);
  t.throws(() => parseSwap('kubelet'), /expected NAME=FILE/);
});

t.test('CLI: bad usage is refused before anything starts', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'cluster-cli-'));
  await t.rejects(main(['bogus']), /unknown command "bogus"/);
  await t.rejects(main(['up', '--masters', '0', '--state-dir', dir]), /--masters must be a whole number of at least 1, got "0"/);
  await t.rejects(main(['up', '--minions', 'two', '--state-dir', dir]), /--minions/);
  await t.rejects(main(['up', '--accel', 'xen', '--state-dir', dir]), /--accel must be auto, kvm or tcg, got "xen"/);
  await t.rejects(main(['up', '--defer', 'master-9', '--state-dir', dir]), /--defer: no node named master-9/);
  await t.rejects(main(['up', '--state-dir', join(dir, 'a,b')]), /must not contain a comma/);
  await t.rejects(main(['status', '--state-dir', dir]), /no cluster here/);
  await t.rejects(main(['start', '--state-dir', dir]), /no cluster here/);
  const out: string[] = [];
  t.equal(await main(['down', '--state-dir', dir], (s) => out.push(s)), 0);
  t.match(out.join('\n'), 'nothing to stop');
});

t.test('the CLI process exits 2 with a one-line message on bad usage', async (t) => {
  const r = await promisify(execFile)('npx', ['tsx', 'scripts/cluster.ts', 'up', '--memory', 'lots']).then(
    () => ({ code: 0, stderr: '' }),
    (e: { code: number; stderr: string }) => e,
  );
  t.equal(r.code, 2);
  t.match(r.stderr, /^cluster: --memory must be a whole number of MiB of at least 256, got "lots"\nusage: /);
});
