// The product end to end: `npm run cluster -- up` boots the image as real machines under QEMU (one master,
// two minions), PXE-booted from the metal server, and every node turns itself into its role. Then the
// variant the design exists for: minions booted while the master is off wait for it, and finish once it
// starts. `cluster down` leaves no process behind. Node facts are read over SSH (host keys checked).
import t from 'tap';
import { mkdtemp, readFile, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import type { SshSession } from '../../scripts/check/ssh-session.js';
import { isOurs, processesNaming, type NodeState } from '../../scripts/cluster/state.js';
import { localCluster, REPO } from '../helpers/local-cluster.js';
import { BUSYBOX_IMAGE, busyboxImageTar } from '../helpers/busybox-image.js';
import { makeTestSecrets } from '../helpers/secrets.js';

const stateDir = await mkdtemp(path.join(tmpdir(), 'kubeseed-e2e-cluster-'));

const local = localCluster(stateDir);
/** Runs the cluster command; its progress lines go to the test log as they come. */
const cluster = (...args: string[]) => local.cluster(t, ...args);
const { state, ssh } = local;

function bootTime(node: NodeState): string {
  const secs = node.readyAt && node.poweredOnAt ? `${Math.round((node.readyAt - node.poweredOnAt) / 1000)} s` : 'not ready';
  return `${node.name} (${node.role}): power-on to ready ${secs}`;
}

async function agentStatus(s: SshSession): Promise<Record<string, any>> {
  return JSON.parse((await s.exec('agent status --json')).stdout);
}

/** Which roles a unit belongs to, by DESIGN.md's rule, read from units/ (not from the agent's own code). */
async function unitRoles(): Promise<Map<string, string[]>> {
  const roles = new Map<string, string[]>();
  for (const name of await readdir(path.join(REPO, 'units'))) {
    const text = await readFile(path.join(REPO, 'units', name), 'utf8');
    const conds = [...text.matchAll(/^ConditionPathExists=(\|?)(!?)\/etc\/sysconfig\/kubernetes-(masters|minions)\s*$/gm)].map((m) => ({
      trigger: m[1] === '|',
      negate: m[2] === '!',
      role: m[3] === 'masters' ? 'master' : 'minion',
    }));
    if (!conds.length) continue;
    const holds = (only: string) => (c: (typeof conds)[number]) => (c.role === only) !== c.negate;
    roles.set(
      name,
      ['master', 'minion'].filter((r) => {
        const plain = conds.filter((c) => !c.trigger);
        const triggers = conds.filter((c) => c.trigger);
        return plain.every(holds(r)) && (triggers.length === 0 || triggers.some(holds(r)));
      }),
    );
  }
  return roles;
}

t.teardown(async () => {
  await cluster('down');
});

t.test('one master and two minions come up from the image', async (t) => {
  const up = await cluster('up', '--masters', '1', '--minions', '2');
  if (!t.equal(up.code, 0, 'cluster up succeeds')) return;
  t.match(up.out, /NODE\s+ROLE\s+ADDRESS\s+SSH\s+STATE\s+PHASE\s+UNITS\s+POWER-ON TO READY/, 'it ends with the node table');
  t.match(up.out, /NODE\s+ROLE\s+POWER-ON TO READY\s+BEFORE AGENT \(FLOOR\)\s+AGENT OWN/, 'and where each boot went');
  const report = await readFile(path.join(stateDir, 'report.html'), 'utf8');
  t.match(report, /cluster check: 3 of 3 nodes ready/, 'it leaves its report, the page of the boot (scripts/web)');
  for (const name of ['master-1', 'minion-1', 'minion-2']) t.match(report, new RegExp(`<tr id="node-${name}" class="state-ready"`), `the report has ${name}'s row`);
  const s = await state();
  const roles = await unitRoles();
  const password = (await readFile(path.join(stateDir, 'weave-password'), 'utf8')).trim();
  for (const node of s.nodes) {
    t.equal(node.state, 'ready', `${node.name} is ready`);
    t.comment(bootTime(node));
    const session = await ssh(node);
    try {
      const status = await agentStatus(session);
      t.equal(status.role, node.role, `${node.name} says it is a ${node.role}`);
      t.equal(status.state, 'ready');
      const mine = status.units as { name: string; state: string }[];
      t.same(mine.filter((u) => u.state !== 'active' && u.state !== 'succeeded'), [], `${node.name}: every unit of its role is active`);
      // The kubelet and kube-proxy find the API through the system resolver, not the agent's DNS client.
      const masterAddress = s.nodes.find((n) => n.role === 'master')?.address ?? '';
      const getent = await session.exec(`getent hosts masters.${s.cluster}.${s.domain}`);
      t.match(getent.stdout, new RegExp(`^${masterAddress.replaceAll('.', '\\.')}\\s+masters\\.`, 'm'), `${node.name}: getent hosts finds the master through the system resolver`, { getent });
      // The image's /etc/.updated and /var/.updated (provision's `updated` step): the update units that would redo
      // dpkg's triggers on every RAM-root boot were skipped.
      const updateUnits = ['ldconfig.service', 'systemd-journal-catalog-update.service', 'systemd-update-done.service'];
      const ran = (await session.exec(`systemctl show -p ConditionResult --value ${updateUnits.join(' ')}`)).stdout.split('\n').filter(Boolean);
      t.same(ran, updateUnits.map(() => 'no'), `${node.name}: ${updateUnits.join(', ')} skipped at boot`);
      // The seed is the URL on the kernel command line (metal's fs_label: null): no blkid search for a cidata disk.
      const blkid = (await session.exec(`grep -c "Running command \\['blkid'" /var/log/cloud-init.log`)).stdout.trim();
      t.equal(blkid, '0', `${node.name}: cloud-init ran no blkid looking for a seed disk`);
      // Each role's units enabled, the other role's not.
      const units = [...roles.keys()];
      const enabled = (await session.exec(`systemctl is-enabled ${units.join(' ')}`)).stdout.trim().split('\n');
      units.forEach((unit, i) => {
        const mine = roles.get(unit)?.includes(node.role) ?? false;
        t.equal(enabled[i] === 'enabled', mine, `${node.name}: ${unit} ${mine ? 'enabled' : 'not enabled'}`);
      });
      if (node.role === 'minion') {
        const wait = (status.phases as { name: string; state: string; startedAt?: string; endedAt?: string }[]).find((p) => p.name === 'wait-for-masters');
        t.equal(wait?.state, 'done', `${node.name} waited for the masters`);
        t.same(status.masters, [s.nodes.find((n) => n.role === 'master')?.address], `${node.name} found the master over DNS`);
      }
      // Weave on every node, the master included: weaver run by systemd, no Docker, no weave script.
      const others = s.nodes.filter((n) => n !== node).map((n) => n.address);
      t.equal((await session.exec('systemctl is-active weave.service')).stdout.trim(), 'active', `${node.name}: weave.service is active`);
      const env = (await session.exec('cat /run/kubeseed/weave.env')).stdout;
      t.match(env, new RegExp(`^IPALLOC_INIT="?${node.role === 'master' ? 'consensus=1' : 'observer'}"?$`, 'm'), `${node.name}: the ${node.role === 'master' ? 'master starts the ring' : 'minion joins as an observer'}`);
      const pid = (await session.exec('systemctl show -p MainPID --value weave.service')).stdout.trim();
      const argv = (await session.exec(`tr '\\0' ' ' < /proc/${pid}/cmdline`)).stdout;
      t.match(argv, /\/usr\/local\/bin\/weaver .*--http-addr=127\.0\.0\.1:6784/, `${node.name}: the router runs from weave.service, its API on loopback`);
      t.notOk(argv.includes(password) || /password/i.test(argv), `${node.name}: the router's argv holds no password`);
      t.notMatch((await session.exec('cat /etc/sysconfig/kubernetes-*')).stdout, /WEAVE_PASSWORD/, `${node.name}: nor does the role file`);
      t.equal((await session.exec('stat -c %a /etc/kubeseed/weave-password.env')).stdout.trim(), '600', `${node.name}: the password file is 0600`);
      t.equal((await session.exec('test -e /opt/cni/bin/weave-net && test -e /opt/cni/bin/weave-ipam')).code, 0, `${node.name}: /opt/cni/bin/weave-net and weave-ipam exist`);
      t.equal((await session.exec('ip link show weave')).code, 0, `${node.name}: the router made the weave bridge`);
      const routerStatus = (await session.exec('curl -sf 127.0.0.1:6784/status')).stdout;
      t.match(routerStatus, /Encryption: enabled/, `${node.name}: curl 127.0.0.1:6784/status answers, the overlay encrypted`);
      t.match(routerStatus, new RegExp(`Targets: ${others.length}\\b`), `${node.name}: /status counts the other nodes as targets`);
      const targets = (await session.exec('curl -sf 127.0.0.1:6784/status/targets')).stdout.split('\n').filter(Boolean).sort();
      t.same(targets, [...others].sort(), `${node.name}: the router dials the other nodes (/status/targets), not itself`);
      t.equal((await session.exec('command -v docker weave')).stdout.trim(), '', `${node.name}: no docker, no weave script`);
    } finally {
      session.close();
    }
  }
  const status = await cluster('status');
  t.equal(status.code, 0, 'cluster status re-reads the same: all ready');
  t.match(status.out, '3 of 3 nodes ready');
});

t.test("the master's real etcd serves client TLS to the API server's certificate only", async (t) => {
  const master = (await state()).nodes.find((n) => n.role === 'master') as NodeState;
  const session = await ssh(master);
  try {
    const pki = '/etc/kubernetes/pki';
    const etcdctl = (auth: string) =>
      session.exec(`etcdctl --endpoints=https://127.0.0.1:2379 --cacert=${pki}/etcd-ca.crt ${auth} --dial-timeout=10s --command-timeout=30s endpoint health`);
    t.match((await session.exec('readlink -f /usr/local/bin/etcd')).stdout.trim(), '/usr/bin/etcd', "the unit's etcd is Debian's");
    // etcd may still be starting right after the agent enabled it: bounded retry, naming what it waits for.
    let ok = await etcdctl(`--cert=${pki}/apiserver-etcd-client.crt --key=${pki}/apiserver-etcd-client.key`);
    for (let i = 0; i < 20 && ok.code !== 0; i++) {
      await new Promise((r) => setTimeout(r, 3000));
      ok = await etcdctl(`--cert=${pki}/apiserver-etcd-client.crt --key=${pki}/apiserver-etcd-client.key`);
    }
    t.equal(ok.code, 0, `etcdctl endpoint health with the API server's client certificate succeeds: ${ok.stdout}${ok.stderr}`);
    t.match(`${ok.stdout}${ok.stderr}`, /127\.0\.0\.1:2379 is healthy/);

    const bare = await etcdctl('');
    t.not(bare.code, 0, 'without a client certificate it is refused');
    t.match(`${bare.stdout}${bare.stderr}`, /unhealthy|certificate|tls/i, bare.stderr.trim().split('\n').at(-1) ?? '');

    // A client certificate of the same kind, from another cluster's etcd CA.
    const other = await makeTestSecrets('other');
    const cert = await readFile(path.join(other, 'apiserver-etcd-client.crt'));
    const key = await readFile(path.join(other, 'apiserver-etcd-client.key'));
    t.equal((await session.exec('umask 077 && mkdir -p /tmp/other-ca && cat > /tmp/other-ca/client.crt', cert)).code, 0);
    t.equal((await session.exec('umask 077 && cat > /tmp/other-ca/client.key', key)).code, 0);
    const foreign = await etcdctl('--cert=/tmp/other-ca/client.crt --key=/tmp/other-ca/client.key');
    t.not(foreign.code, 0, 'with a client certificate from another CA it is refused');
    t.match(`${foreign.stdout}${foreign.stderr}`, /unhealthy|certificate|tls/i, foreign.stderr.trim().split('\n').at(-1) ?? '');
  } finally {
    session.close();
  }
});

t.test('on a minion, the real containerd and runc run a container the real CNI plugins network', async (t) => {
  const minion = (await state()).nodes.find((n) => n.role === 'minion') as NodeState;
  const session = await ssh(minion);
  try {
    const sh = async (command: string, input?: Buffer) => {
      const r = await session.exec(command, input);
      if (r.code !== 0) t.comment(`${command}: exit ${r.code}: ${r.stderr.trim()}`);
      return r;
    };
    const elf = await sh('for f in /opt/cni/bin/loopback /opt/cni/bin/bridge /opt/cni/bin/host-local /opt/cni/bin/portmap; do printf "%s " "$f"; head -c 4 "$f" | od -An -c | tr -d " "; done');
    t.match(elf.stdout, /loopback 177ELF/, 'loopback is an ELF binary');
    t.match(elf.stdout, /bridge 177ELF/, 'bridge is an ELF binary');
    t.match(elf.stdout, /host-local 177ELF/, 'host-local is an ELF binary');
    t.match(elf.stdout, /portmap 177ELF/, 'portmap is an ELF binary');

    t.match((await sh('systemctl is-active containerd.service')).stdout.trim(), 'active', 'containerd.service runs');
    t.match((await sh('cat /etc/containerd/config.toml')).stdout, /SystemdCgroup = true/, "the agent's containerd config is in place");
    // The CRI plugin read that config: it is loaded, not skipped or failed.
    t.match((await sh('ctr plugins ls')).stdout, /io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok/, 'the CRI plugin loaded with that config');

    const tar = await busyboxImageTar();
    t.equal((await sh('cat > /tmp/busybox-oci.tar', tar)).code, 0, `a ${Math.round(tar.length / 1024)} KB image built offline from busybox-static is on the node`);
    const imported = await sh('ctr -n kubeseed-e2e images import /tmp/busybox-oci.tar && ctr -n kubeseed-e2e images ls -q');
    t.match(imported.stdout, BUSYBOX_IMAGE, 'containerd imported it');

    // The network namespace the container will join, set up by the real plugins as a runtime calls them.
    const cni = (plugin: string, ifname: string, conf: object) =>
      sh(
        `CNI_COMMAND=ADD CNI_CONTAINERID=kubeseed-e2e CNI_NETNS=/run/netns/kubeseed-e2e CNI_IFNAME=${ifname} CNI_PATH=/opt/cni/bin /opt/cni/bin/${plugin}`,
        Buffer.from(JSON.stringify({ cniVersion: '0.4.0', name: 'kubeseed-e2e', ...conf })),
      );
    t.equal((await sh('ip netns add kubeseed-e2e')).code, 0, 'a network namespace for the container');
    const lo = await cni('loopback', 'lo', { type: 'loopback' });
    t.equal(lo.code, 0, 'the loopback plugin brings up lo in it');
    const bridge = await cni('bridge', 'eth0', { type: 'bridge', bridge: 'kubeseed-e2e0', isGateway: true, ipam: { type: 'host-local', subnet: '10.250.0.0/24' } });
    t.equal(bridge.code, 0, 'the bridge plugin with host-local IPAM gives it eth0');
    t.match(bridge.stdout, /"address":\s*"10\.250\.0\.\d+\/24"/, `host-local handed out an address: ${bridge.stdout.replace(/\s+/g, ' ')}`);

    const hostNs = (await sh('readlink /proc/self/ns/net')).stdout.trim();
    const nsInode = (await sh('stat -L -c %i /run/netns/kubeseed-e2e')).stdout.trim();
    // --no-pivot: a PXE-booted node's root is the initramfs, where the kernel refuses pivot_root (runc: "pivot_root .:
    // invalid argument"); runc then confines the container with MS_MOVE and chroot, as on any RAM root.
    const run = await sh(
      'ctr -n kubeseed-e2e run --rm --no-pivot --runc-systemd-cgroup --cgroup system.slice:kubeseed-e2e:c1 --with-ns network:/run/netns/kubeseed-e2e ' +
        `${BUSYBOX_IMAGE} kubeseed-e2e-c1 /bin/busybox sh -c ` +
        "'echo hello from busybox; /bin/busybox ip -o -4 addr show; /bin/busybox readlink /proc/self/ns/net'",
    );
    t.equal(run.code, 0, 'ctr run exits 0');
    t.match(run.stdout, /^hello from busybox$/m, "the container's output comes back");
    t.match(run.stdout, /\beth0\s+inet 10\.250\.0\.\d+\/24/, 'inside, eth0 holds the address the bridge plugin gave');
    t.match(run.stdout, /\blo\s+inet 127\.0\.0\.1\/8/, 'and lo is up');
    t.match(run.stdout, `net:[${nsInode}]`, 'the container runs in that namespace');
    t.notMatch(run.stdout, hostNs, "not in the node's own");
  } finally {
    session.close();
  }
});

t.test('a minion dropped from the record is forgotten by the others, and dialled again once it is back', async (t) => {
  const s = await state();
  const pid = s.metal?.pid;
  if (!t.ok(pid, 'the metal server (the DNS the nodes ask) runs')) return;
  const inventoryFile = path.join(stateDir, 'inventory.yaml');
  const original = await readFile(inventoryFile, 'utf8');
  const inventory = parseYaml(original) as { machines: { hostname: string }[] };
  const gone = s.nodes.at(-1) as NodeState;
  const others = s.nodes.filter((n) => n !== gone);
  // What an operator does: edit the inventory, HUP the server; the records follow on the next query.
  const publish = async (text: string) => {
    await writeFile(inventoryFile, text);
    process.kill(pid as number, 'SIGHUP');
  };
  /** Polls each node's router until its targets are `want(node)`; bounded by two record TTLs (30 s) plus slack for TCG. */
  const targetsBecome = async (want: (n: NodeState) => string[], what: string) => {
    const started = Date.now();
    for (const node of others) {
      const session = await ssh(node);
      try {
        let got: string[] = [];
        while (Date.now() - started < 150_000) {
          got = (await session.exec('curl -sf 127.0.0.1:6784/status/targets')).stdout.split('\n').filter(Boolean).sort();
          if (JSON.stringify(got) === JSON.stringify([...want(node)].sort())) break;
          await new Promise((r) => setTimeout(r, 2000));
        }
        t.same(got, [...want(node)].sort(), `${node.name}: ${what} (${Math.round((Date.now() - started) / 1000)} s after the record changed)`);
      } finally {
        session.close();
      }
    }
  };
  const dialled = (without: NodeState[]) => (n: NodeState) => s.nodes.filter((o) => o !== n && !without.includes(o)).map((o) => o.address);
  try {
    await publish(stringifyYaml({ ...inventory, machines: inventory.machines.filter((m) => m.hostname !== gone.name) }));
    await targetsBecome(dialled([gone]), `${gone.name} left the record, so the router forgot it`);
  } finally {
    await publish(original);
  }
  await targetsBecome(dialled([]), `${gone.name} is back in the record, so the router dials it again`);
});

t.test('PID 1 stays quiet after ready: no "Reloading." in the five minutes after, on every node', async (t) => {
  const QUIET_S = 300;
  for (const node of (await state()).nodes) {
    const session = await ssh(node);
    try {
      const status = await agentStatus(session);
      // The guest's own clock on both sides: when the units phase ended, and the journal's stamps.
      const readySince = Date.parse(String((status.phases as { name: string; endedAt?: string }[]).find((p) => p.name === 'units')?.endedAt)) / 1000;
      if (!t.ok(Number.isFinite(readySince), `${node.name}: agent status says when it became ready`)) continue;
      const now = Number((await session.exec('date +%s')).stdout.trim());
      // Reconcile passes every minute after ready; the window must have seen several of them.
      if (now - readySince < QUIET_S) await new Promise((r) => setTimeout(r, (QUIET_S - (now - readySince)) * 1000));
      const pid1 = (await session.exec('journalctl _PID=1 -o short-unix --no-pager')).stdout.split('\n');
      const reloads = pid1.filter((l) => /Reloading\.?$/.test(l) && Number(l.split(' ')[0]) > readySince);
      t.same(reloads, [], `${node.name}: no "Reloading." from PID 1 in the ${Math.max(QUIET_S, now - readySince)} s since ready`);
      const agentLog = (await session.exec(`journalctl -u kubeseed-agent -o cat --no-pager --since @${Math.floor(readySince)}`)).stdout;
      t.notMatch(agentLog, /units-reloaded|unit-enabled/, `${node.name}: and the agent neither reloaded nor enabled anything after ready`);
      // The network-config on the kernel command line is applied before networkd first starts, so cloud-init's
      // network stage has nothing to restart (it used to restart both, leaving the node without a resolver).
      const starts = pid1.filter((l) => /Started systemd-(networkd|resolved)\.service/.test(l)).map((l) => /systemd-(\w+)\.service/.exec(l)?.[1]);
      t.same(starts.sort(), ['networkd', 'resolved'], `${node.name}: networkd and resolved each started once this boot`);
    } finally {
      session.close();
    }
  }
});

t.test('minions booted while the master is off wait for it, and finish when it starts', async (t) => {
  t.equal((await cluster('down')).code, 0);
  const up = await cluster('up', '--masters', '1', '--minions', '2', '--defer', 'master-1');
  if (!t.equal(up.code, 0, 'up returns once the minions are waiting')) return;
  let s = await state();
  for (const node of s.nodes.filter((n) => n.role === 'minion')) {
    t.equal(node.state, 'waiting', `${node.name} is waiting`);
    const session = await ssh(node);
    try {
      const status = await agentStatus(session);
      t.equal(status.phase, 'wait-for-masters');
      t.match(status.waitingOn, /masters\.local\.k8s/, `${node.name} says it waits on the masters: ${status.waitingOn}`);
    } finally {
      session.close();
    }
  }
  t.equal(s.nodes.find((n) => n.role === 'master')?.power, 'off');
  const start = await cluster('start', 'master-1');
  t.equal(start.code, 0, 'starting the master lets every node finish');
  s = await state();
  for (const node of s.nodes) {
    t.equal(node.state, 'ready', `${node.name} is ready`);
    t.comment(bootTime(node));
  }
});

t.test('cluster down leaves no process behind', async (t) => {
  const before = await state();
  const pids = [before.metal?.pid, ...before.nodes.map((n) => n.pid)].filter((p): p is number => p !== undefined);
  t.ok(pids.length >= 4, 'the metal server and three VMs were running');
  const down = await cluster('down');
  t.equal(down.code, 0);
  t.match(down.out, /stopped \d+ processes; none left/);
  for (const pid of pids) t.notOk(await isOurs(pid, stateDir), `pid ${pid} is gone`);
  t.same(await processesNaming(stateDir), []);
});
