// The local cluster's life: prepare the image and secrets, start the metal server, power VMs on and follow
// them (up), read them again (status), start or stop nodes, and take everything down. scripts/cluster.ts is
// only the command line over these.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { InputError } from '../../agent/errors.js';
import { DEFAULT_DNS_DOMAIN } from '../../agent/dns-names.js';
import { ETCD_DISK_LABEL } from '../../agent/etcd-files.js';
import { renderTable } from '../check/node-report.js';
import { parsableKeyPair } from '../check/ssh-session.js';
import { readPidFile } from '../daemon/pid-file.js';
import { baseUrlOf, parseServingLine } from '../metal/server.js';
import { inventoryYaml, planNodes, clusterKernelArgs, GUEST_KERNEL_ARGS, tftpBootScript } from './plan.js';
import { ensurePackages, IMAGE_PACKAGES, VM_PACKAGES } from './packages.js';
import { composeComponents } from './components.js';
import { TEST_IMAGE_DEBIAN_COMPONENTS } from '../../image/debian-components.js';
import { kvmWorks, qemuArgs, QEMU, type Accel } from './qemu.js';
import { isOurs, keepPrevious, processesNaming, readState, startDetached, stopProcess, writeState, type ClusterState, type NodeState } from './state.js';
import { timingRows } from './timing.js';
import { watchNodes } from './watch.js';
import { openClusterPage } from '../web/cluster-page.js';
import type { LiveOptions } from '../web/live-server.js';


const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const DEFAULT_COMPONENTS = path.join(REPO, 'test/fixtures/components-double');
export const DEFAULT_MANIFEST = path.join(DEFAULT_COMPONENTS, 'manifest.json');
/** With the doubles, the master must answer /readyz over TLS: the generic double only echoes its arguments. */
export const DEFAULT_SWAPS = [
  `kube-apiserver=${path.join(REPO, 'test/fixtures/master-double/kube-apiserver')}`,
  // The other Kubernetes binaries refuse any flag their real binary does not accept.
  ...['kubelet', 'kube-proxy', 'kube-scheduler', 'kube-controller-manager'].map((name) => `${name}=${path.join(REPO, 'test/fixtures/kube-double/kube-double')}`),
  // Weave's router: the real flags, the control API on 127.0.0.1:6784 and the `weave` bridge.
  `weave=${path.join(REPO, 'test/fixtures/weave-double/weaver')}`,
];
/** Our own image directory: its components differ from `npm run image`'s default, so the two caches never evict each other. */
export const IMAGE_DIR = path.join(REPO, 'out/cluster-image');
export const COMPONENTS_DIR = path.join(REPO, 'out/cluster-components');
/** How the guests reach the host's loopback under QEMU user networking. */
const HOST_FROM_GUEST = '10.0.2.2';
const MCAST_GROUP = '230.0.0.1';
const KEY_FILE = 'id_ed25519';
const METAL_JS = path.join(REPO, 'dist/metal.js');

export type Log = (line: string) => void;

interface Paths {
  dir: string;
  inventory: string;
  secrets: string;
  key: string;
  metalLog: string;
  metalPid: string;
  node(name: string): { dir: string; tftp: string; consoleLog: string; reportLog: string; pidFile: string; qemuLog: string; etcdDisk: string };
}

function paths(stateDir: string): Paths {
  const dir = path.resolve(stateDir);
  return {
    dir,
    inventory: path.join(dir, 'inventory.yaml'),
    secrets: path.join(dir, 'secrets'),
    key: path.join(dir, KEY_FILE),
    metalLog: path.join(dir, 'metal.log'),
    metalPid: path.join(dir, 'metal.pid'),
    node: (name) => {
      const nodeDir = path.join(dir, 'nodes', name);
      return {
        dir: nodeDir,
        tftp: path.join(nodeDir, 'tftp'),
        consoleLog: path.join(nodeDir, 'console.log'),
        reportLog: path.join(nodeDir, 'report.log'),
        pidFile: path.join(nodeDir, 'qemu.pid'),
        qemuLog: path.join(nodeDir, 'qemu.log'),
        etcdDisk: path.join(nodeDir, 'etcd.img'),
      };
    },
  };
}

/** Every process we start names the state directory on its command line: how we recognise our PIDs. */
const marker = (p: Paths) => p.dir;


async function freeTcpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = createSocket('udp4');
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      const { port } = socket.address();
      socket.close(() => resolve(port));
    });
  });
}

/** Runs a step of ours; its output is shown when `show` says so, else only its last lines when it fails. */
function runStep(command: string, args: string[], log: Log, show: (line: string) => boolean = () => true): Promise<void> {
  return new Promise((resolve, reject) => {
    log(`$ ${command} ${args.join(' ')}`);
    const child = spawn(command, args, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    const take = (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n').filter(Boolean)) {
        lines.push(line);
        if (show(line)) log(`  ${line}`);
      }
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`${command} ${args.slice(0, 2).join(' ')} exited ${code}:\n${lines.slice(-15).join('\n')}`)),
    );
  });
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}

// ---------- up ----------

export interface UpOptions {
  stateDir: string;
  masters: number;
  minions: number;
  memoryMb: number;
  cluster: string;
  image?: string;
  componentsDir: string;
  manifest: string;
  swaps: [string, string][];
  accel: 'auto' | Accel;
  timeoutMs: number;
  defer: string[];
  web?: LiveOptions;
}

async function prepareImage(opts: UpOptions, log: Log): Promise<string> {
  if (opts.image) {
    for (const f of ['vmlinuz', 'initrd']) {
      if (!(await exists(path.join(opts.image, f)))) throw new InputError(`--image: no ${f} in ${opts.image}`, { file: opts.image });
    }
    return path.resolve(opts.image);
  }
  await ensurePackages(IMAGE_PACKAGES, log);
  let { componentsDir, manifest } = opts;
  if (opts.swaps.length) {
    manifest = await composeComponents(componentsDir, manifest, opts.swaps, COMPONENTS_DIR);
    componentsDir = COMPONENTS_DIR;
  }
  // The image build keeps its own cache: with unchanged inputs this returns in seconds.
  // The doubles leave out what Debian ships for real: the image takes those from Debian's packages.
  const fromDebian = opts.componentsDir === DEFAULT_COMPONENTS ? ['--debian-components', TEST_IMAGE_DEBIAN_COMPONENTS.join(',')] : [];
  await runStep('npm', ['run', '--silent', 'image', '--', '--components-dir', componentsDir, '--manifest', manifest, ...fromDebian, '--out', IMAGE_DIR], log, (l) =>
    l.startsWith('image:'),
  );
  return IMAGE_DIR;
}

async function prepareSecrets(p: Paths, cluster: string, log: Log): Promise<void> {
  // `npm run secrets` keeps what is already there: re-running `up` reuses the cluster's CA.
  await runStep('npx', ['tsx', 'scripts/secrets.ts', '--cluster', cluster, '--out', p.secrets], log, (l) => l.startsWith('secrets in'));
  if (!(await exists(p.key))) {
    const pair = parsableKeyPair(`kubeseed-cluster@${cluster}`);
    await writeFile(p.key, pair.private, { mode: 0o600 });
    await writeFile(`${p.key}.pub`, `${pair.public}\n`);
  }
}

/**
 * The metal server as a user runs it: one `node dist/metal.js serve` process (built JavaScript, no tsx), whose
 * PID file in the state directory is how `down` stops it; its ports are read from its "metal serving" line.
 */
export async function startMetal(stateDir: string, imageDir: string, log: Log): Promise<NonNullable<ClusterState['metal']>> {
  const p = paths(stateDir);
  await runStep('npm', ['run', '--silent', 'build'], log, () => false);
  const publicKey = await readFile(`${p.key}.pub`, 'utf8');
  // eth0 is the user-networking NIC, eth1 the LAN one the inventory's MAC and address belong to.
  const kernelArgs = [...GUEST_KERNEL_ARGS, ...clusterKernelArgs(publicKey)].flatMap((arg) => ['--kernel-arg', arg]);
  const args = [
    METAL_JS, 'serve', '--inventory', p.inventory, '--image', imageDir, '--listen', '127.0.0.1', '--advertise', HOST_FROM_GUEST,
    '--dns-port', '0', '--http-port', '0', '--dns-workers', '0', '--secrets', p.secrets,
    // Every node's user-data carries the same overlay password (written 0600 on the node, weave.service only).
    '--weave-password-file', await clusterWeavePassword(p.dir), '--pid-file', p.metalPid, ...kernelArgs,
  ];
  // Only this start's lines count: the log is appended to across runs.
  const from = (await stat(p.metalLog).catch(() => undefined))?.size ?? 0;
  const pid = startDetached(process.execPath, args, p.metalLog);
  const deadline = Date.now() + 60_000;
  let lines: string[] = [];
  while (Date.now() < deadline) {
    lines = (await readFile(p.metalLog).catch(() => Buffer.alloc(0))).subarray(from).toString().split('\n');
    const serving = lines.map(parseServingLine).find((at) => at !== undefined);
    if (serving && (await readPidFile(p.metalPid)) === pid) {
      log(`metal server pid ${pid} (${p.metalPid}): ${baseUrlOf(serving.advertise, serving.httpPort)} (http 127.0.0.1:${serving.httpPort}, dns 127.0.0.1:${serving.dnsPort})`);
      return { pid, httpPort: serving.httpPort, dnsPort: serving.dnsPort, baseUrl: baseUrlOf(serving.advertise, serving.httpPort) };
    }
    if (!(await isOurs(pid, marker(p)))) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  await stopProcess(pid, marker(p));
  const why = Date.now() >= deadline ? 'did not say "metal serving" within 60 s' : 'exited';
  throw new Error(`the metal server (pid ${pid}) ${why}; ${p.metalLog} ends with:\n${lines.filter(Boolean).slice(-5).join('\n')}`);
}

async function decideAccel(want: UpOptions['accel'], imageDir: string, log: Log): Promise<Accel> {
  if (want !== 'auto') return want;
  const ok = await kvmWorks(path.join(imageDir, 'vmlinuz'));
  log(ok ? 'KVM works here: using -accel kvm' : 'KVM is missing or hangs here: using -accel tcg');
  return ok ? 'kvm' : 'tcg';
}

/** Sparse: the host stores only what etcd writes. Room for two of etcd's 64 MB WAL segments, snapshots and the store. */
const ETCD_DISK_SIZE = '512M';

/**
 * A master's etcd data disk, made on the host without root (mkfs.ext4 formats a plain file). Made once and kept
 * across `stop` and `start`, as a machine's disk outlives its power-offs; `up` starts from fresh ones, `down` removes them.
 */
async function ensureEtcdDisk(node: NodeState, file: string, log: Log): Promise<void> {
  if (await exists(file)) return;
  await runStep('mkfs.ext4', ['-q', '-F', '-L', ETCD_DISK_LABEL, file, ETCD_DISK_SIZE], log);
  log(`${node.name}: etcd data disk ${file} (${ETCD_DISK_SIZE}, ext4 labelled ${ETCD_DISK_LABEL})`);
}

function controls(state: ClusterState, p: Paths, log: Log) {
  const powerOn = async (node: NodeState) => {
    const f = p.node(node.name);
    await mkdir(f.tftp, { recursive: true });
    if (node.role === 'master') await ensureEtcdDisk(node, f.etcdDisk, log);
    await writeFile(path.join(f.tftp, 'boot.ipxe'), tftpBootScript(state.metal?.baseUrl ?? '', node));
    await keepPrevious(f.consoleLog);
    await rm(f.reportLog, { force: true });
    const args = qemuArgs({
      name: `kubeseed-${state.cluster}-${node.name}`,
      accel: state.accel,
      memoryMb: state.memoryMb,
      bootMac: node.bootMac,
      lanMac: node.lanMac,
      tftpDir: f.tftp,
      sshPort: node.sshPort,
      mcast: state.mcast,
      consoleLog: f.consoleLog,
      reportLog: f.reportLog,
      pidFile: f.pidFile,
      ...(node.role === 'master' && { etcdDisk: f.etcdDisk }),
    });
    node.pid = startDetached(QEMU, args, f.qemuLog);
    Object.assign(node, { power: 'on', poweredOnAt: Date.now(), boots: node.boots + 1, state: 'booting' });
    delete node.readyAt;
    delete node.timing;
    delete node.phase;
    delete node.detail;
    log(`${node.name}: powered on (QEMU pid ${node.pid}, ssh 127.0.0.1:${node.sshPort}, ${node.address})`);
    await writeState(p.dir, state);
  };
  const powerOff = async (node: NodeState) => {
    await stopProcess(node.pid, marker(p));
    Object.assign(node, { power: 'off', state: 'off' });
    delete node.pid;
    await writeState(p.dir, state);
  };
  return { powerOn, powerOff };
}

/**
 * The process following the nodes (`up`, `start`) leaves its PID here: it power-cycles nodes whose QEMU
 * exits, so `down` and `stop` must end it first or it would boot what they just stopped.
 */
const watcherFile = (p: Paths) => path.join(p.dir, 'watch.pid');
// The watcher is the scripts/cluster.ts process itself (up, start): its command line names that file.
const WATCHER_MARKER = 'cluster.ts';

async function stopWatcher(p: Paths): Promise<void> {
  const pid = Number(await readFile(watcherFile(p), 'utf8').catch(() => ''));
  if (pid && pid !== process.pid) await stopProcess(pid, WATCHER_MARKER);
  await rm(watcherFile(p), { force: true });
}

async function follow(state: ClusterState, p: Paths, opts: { timeoutMs: number; allowWaiting: boolean; retryHung?: boolean; web?: LiveOptions }, log: Log): Promise<boolean> {
  const page = await openClusterPage(state, p.dir, opts.web, log);
  const { powerOn, powerOff } = controls(state, p, log);
  // `status` only looks: it never power-cycles a node, so it is no watcher `down` has to stop.
  const owner = opts.retryHung !== false;
  const watchOptions = {
    stateDir: p.dir,
    privateKey: await readFile(p.key, 'utf8'),
    timeoutMs: opts.timeoutMs,
    allowWaiting: opts.allowWaiting,
    // Generous: on a loaded 2-core machine a TCG boot can take minutes with long quiet stretches.
    hangMs: owner ? 240_000 : Infinity,
    bootDeadlineMs: owner ? 900_000 : Infinity,
    files: (node: NodeState) => ({ consoleLog: p.node(node.name).consoleLog, reportLog: p.node(node.name).reportLog }),
    powerOn,
    powerOff,
    isRunning: (node: NodeState) => isOurs(node.pid, marker(p)),
    save: () => writeState(p.dir, state),
    log,
    onReport: page.report,
  };
  if (owner) await writeFile(watcherFile(p), String(process.pid));
  try {
    return await watchNodes(state, watchOptions);
  } finally {
    await page.finish();
    const current = Number(await readFile(watcherFile(p), 'utf8').catch(() => ''));
    if (owner && current === process.pid) await rm(watcherFile(p), { force: true });
  }
}

export async function up(opts: UpOptions, log: Log): Promise<number> {
  const p = paths(opts.stateDir);
  // QEMU reads commas in option values as separators: a state dir with one would split -pidfile and tftp=.
  if (p.dir.includes(',')) throw new InputError(`--state-dir must not contain a comma: ${p.dir}`);
  const previous = await readState(p.dir);
  if (previous && (await livePids(previous, p)).length) {
    throw new InputError(`a cluster is already running from ${p.dir}: run \`npm run cluster -- down --state-dir ${opts.stateDir}\` first`);
  }
  const nodes = planNodes(opts.masters, opts.minions);
  for (const name of opts.defer) {
    if (!nodes.some((n) => n.name === name)) throw new InputError(`--defer: no node named ${name} (nodes: ${nodes.map((n) => n.name).join(', ')})`);
  }
  await ensurePackages(VM_PACKAGES, log);
  await mkdir(p.dir, { recursive: true });
  const imageDir = await prepareImage(opts, log);
  await prepareSecrets(p, opts.cluster, log);
  await writeFile(p.inventory, inventoryYaml(opts.cluster, DEFAULT_DNS_DOMAIN, nodes));

  const state: ClusterState = {
    cluster: opts.cluster,
    domain: DEFAULT_DNS_DOMAIN,
    accel: await decideAccel(opts.accel, imageDir, log),
    memoryMb: opts.memoryMb,
    mcast: { group: MCAST_GROUP, port: await freeUdpPort() },
    nodes: [],
  };
  for (const n of nodes) state.nodes.push({ ...n, sshPort: await freeTcpPort(), power: 'off', boots: 0 });
  // A new cluster: a disk left by an earlier one (a run that never got to `down`) would restart its old members.
  for (const n of state.nodes) await rm(p.node(n.name).etcdDisk, { force: true });
  state.metal = await startMetal(p.dir, imageDir, log);
  await writeState(p.dir, state);

  const { powerOn } = controls(state, p, log);
  for (const node of state.nodes) if (!opts.defer.includes(node.name)) await powerOn(node);
  const ok = await follow(state, p, { timeoutMs: opts.timeoutMs, allowWaiting: opts.defer.length > 0, ...(opts.web && { web: opts.web }) }, log);
  log(renderNodes(state));
  return ok ? 0 : 1;
}

// ---------- status, start, stop, down ----------

async function loadState(stateDir: string): Promise<{ state: ClusterState; p: Paths }> {
  const p = paths(stateDir);
  const state = await readState(p.dir);
  if (!state) throw new InputError(`no cluster here: ${p.dir} has no cluster.json (run \`npm run cluster -- up\`)`, { file: p.dir });
  return { state, p };
}

async function livePids(state: ClusterState, p: Paths): Promise<number[]> {
  const pids = [state.metal?.pid, ...state.nodes.map((n) => n.pid)].filter((x): x is number => x !== undefined);
  const live: number[] = [];
  for (const pid of pids) if (await isOurs(pid, marker(p))) live.push(pid);
  return live;
}

export async function status(stateDir: string, log: Log): Promise<number> {
  const { state, p } = await loadState(stateDir);
  for (const node of state.nodes) {
    if (node.power === 'on' && !(await isOurs(node.pid, marker(p)))) Object.assign(node, { power: 'off', state: 'off' });
  }
  const ok = await follow(state, p, { timeoutMs: 0, allowWaiting: false, retryHung: false }, () => undefined);
  log(renderNodes(state));
  return ok ? 0 : 1;
}

export async function startNodes(stateDir: string, names: string[], timeoutMs: number, log: Log): Promise<number> {
  const { state, p } = await loadState(stateDir);
  const chosen = pick(state, names);
  if (!(await isOurs(state.metal?.pid, marker(p)))) throw new InputError('the metal server is not running: run `cluster down` and `cluster up` again');
  const { powerOn } = controls(state, p, log);
  for (const node of chosen) if (node.power !== 'on' || !(await isOurs(node.pid, marker(p)))) await powerOn(node);
  const ok = await follow(state, p, { timeoutMs, allowWaiting: false }, log);
  log(renderNodes(state));
  return ok ? 0 : 1;
}

export async function stopNodes(stateDir: string, names: string[], log: Log): Promise<number> {
  const { p } = await loadState(stateDir);
  await stopWatcher(p);
  const { state } = await loadState(stateDir);
  const { powerOff } = controls(state, p, log);
  for (const node of pick(state, names)) {
    await powerOff(node);
    log(`${node.name}: powered off`);
  }
  return 0;
}

function pick(state: ClusterState, names: string[]): NodeState[] {
  if (names.length === 0) throw new InputError('name the nodes, e.g. master-1');
  return names.map(
    (name) => state.nodes.find((n) => n.name === name) ?? fail(`no node named ${name} (nodes: ${state.nodes.map((n) => n.name).join(', ')})`),
  );
}

function fail(message: string): never {
  throw new InputError(message);
}

export async function down(stateDir: string, log: Log): Promise<number> {
  const p = paths(stateDir);
  await stopWatcher(p);
  const state = await readState(p.dir);
  if (!state) {
    log(`nothing to stop: ${p.dir} holds no cluster`);
    return 0;
  }
  let stopped = 0;
  for (const node of state.nodes) {
    if (await isOurs(node.pid, marker(p))) stopped += 1;
    await stopProcess(node.pid, marker(p));
    Object.assign(node, { power: 'off', state: 'off' });
    delete node.pid;
  }
  // By the PID the server wrote itself, checked to still name the state directory.
  const metalPid = await readPidFile(p.metalPid);
  if (await isOurs(metalPid, marker(p))) stopped += 1;
  await stopProcess(metalPid, marker(p));
  delete state.metal;
  await writeState(p.dir, state);
  // The cluster is gone, and with it what its masters' etcd members held.
  for (const node of state.nodes) await rm(p.node(node.name).etcdDisk, { force: true });
  const left = await processesNaming(marker(p));
  if (left.length) {
    log(`stopped ${stopped} processes, but these still name ${p.dir}: ${left.join(' ')}`);
    return 1;
  }
  log(`stopped ${stopped} processes; none left`);
  return 0;
}

export function renderNodes(state: ClusterState): string {
  const rows = [['NODE', 'ROLE', 'ADDRESS', 'SSH', 'STATE', 'PHASE', 'UNITS', 'POWER-ON TO READY']];
  for (const n of state.nodes) {
    const readyIn = n.readyAt && n.poweredOnAt ? `${Math.round((n.readyAt - n.poweredOnAt) / 1000)} s` : '-';
    rows.push([n.name, n.role, n.address, `127.0.0.1:${n.sshPort}`, n.power === 'off' ? 'off' : (n.state ?? '-'), n.phase ?? '-', n.units?.length ? n.units.map((u) => u.replace(/\.service$/, '')).join(',') : '-', readyIn]);
  }
  const ready = state.nodes.filter((n) => n.state === 'ready').length;
  const waiting = state.nodes.filter((n) => n.state === 'waiting').map((n) => `${n.name}: ${n.detail ?? ''}`);
  const timings = timingRows(state.nodes);
  const where = timings.length > 1 ? ['', 'where the time went (the floor: power-on to the agent starting):', renderTable(timings)] : [];
  return [renderTable(rows), `${ready} of ${state.nodes.length} nodes ready`, ...waiting.map((w) => `waiting: ${w}`), ...where].join('\n');
}

// ---------- the metal server's inputs ----------

/** The local cluster's Weave password file: made once in its state directory (0600), the same for every node. */
export async function clusterWeavePassword(dir: string): Promise<string> {
  const file = path.join(dir, 'weave-password');
  if (!(await exists(file))) await writeFile(file, `${randomBytes(24).toString('base64url')}\n`, { mode: 0o600 });
  return file;
}
