// The shipped bundle, run as a child process the way a node runs it: real DNS server, real HTTP server,
// real `systemctl --root`, an offline root in a temp dir.
import t, { type Test } from 'tap';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { secretsForRole, SECRETS_DIR } from '../agent/secrets-layout.js';
import { startTestDns } from './helpers/dns.js';
import { until } from './helpers/until.js';

const REPO = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const MINION = '/etc/sysconfig/kubernetes-minions';
const MASTER = '/etc/sysconfig/kubernetes-masters';
/** The node that runs the bundle; point it at Debian's Node 18 to check the image's runtime. */
const NODE = process.env.KUBESEED_AGENT_NODE ?? process.execPath;
let bundle = '';
let secrets = '';

t.before(async () => {
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: REPO, stdio: 'ignore' });
  // Every phase of the real boot flow runs, so nodes get what user-data gives them: the role's secrets.
  secrets = await fs.mkdtemp(path.join(os.tmpdir(), 'agent-secrets-'));
  execFileSync('npx', ['tsx', 'scripts/secrets.ts', '--cluster', 'demo', '--out', secrets], { cwd: REPO, stdio: 'ignore' });
  // Run a copy from a directory with no package.json and no node_modules, as the image does.
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'agent-bundle-'));
  bundle = path.join(dir, 'agent.js');
  await fs.copyFile(path.join(REPO, 'dist/agent.js'), bundle);
});
t.teardown(async () => {
  await fs.rm(path.dirname(bundle), { recursive: true, force: true });
  await fs.rm(secrets, { recursive: true, force: true });
});

/** This machine's first non-loopback IPv4: the overlay phase waits until minions.<cluster> lists the node. */
const SELF = Object.values(os.networkInterfaces())
  .flat()
  .find((i) => i && (i.family === 'IPv4' || (i.family as unknown) === 4) && !i.address.startsWith('127.'))?.address;

/** The cluster's zone as the acceptance describes it, plus this node among the minions. */
function demoZone(masters: string[] | null = ['127.0.0.1']) {
  return startTestDns('demo.k8s', { ...(masters ? { 'masters.demo.k8s': masters } : {}), 'minions.demo.k8s': SELF ? [SELF] : [] });
}

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Asynchronous on purpose: the DNS and HTTP servers the agent talks to live in this test's event loop. */
function agent(...args: string[]): Promise<Result> {
  return agentAsync(...args).done;
}

/** The agent running in the background, for the tests that watch it wait. */
function agentAsync(...args: string[]) {
  // Plain node, as on a node: `env -u` drops the NODE_OPTIONS loader tap adds to every child (Node 18 cannot load it).
  const child = spawn('env', ['-u', 'NODE_OPTIONS', NODE, bundle, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const done = new Promise<Result>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  return { child, done, output: () => stdout };
}

const service = (conds: string[]) =>
  `[Unit]\n${conds.map((c) => `ConditionPathExists=${c}\n`).join('')}[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n`;

async function put(root: string, file: string, text: string) {
  await fs.mkdir(path.dirname(path.join(root, file)), { recursive: true });
  await fs.writeFile(path.join(root, file), text);
}

/** The acceptance root: kubelet for minions, kube-apiserver for masters, and the given role files. */
async function nodeRoot(t: Test, roleFiles: Record<string, string>): Promise<string> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'agent-cli-'));
  t.teardown(() => fs.rm(root, { recursive: true, force: true }));
  await put(root, '/usr/lib/systemd/system/kubelet.service', service([MINION, `!${MASTER}`]));
  await put(root, '/usr/lib/systemd/system/kube-apiserver.service', service([MASTER]));
  await fs.mkdir(path.join(root, 'etc/systemd/system'), { recursive: true });
  for (const [file, text] of Object.entries(roleFiles)) {
    await put(root, file, text);
    const role = file === MASTER ? 'master' : 'minion';
    for (const { name } of secretsForRole(role)) {
      await put(root, `${SECRETS_DIR}/${name}`, await fs.readFile(path.join(secrets, name), 'utf8'));
      await fs.chmod(path.join(root, SECRETS_DIR, name), 0o600);
    }
  }
  return root;
}

/** Every path with its kind, link target or content hash: two equal snapshots mean nothing changed. */
async function snapshot(root: string, skip: string[] = []): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (dir: string) => {
    for (const name of (await fs.readdir(path.join(root, dir))).sort()) {
      const rel = path.join(dir, name);
      if (skip.includes(rel)) continue;
      const st = await fs.lstat(path.join(root, rel));
      if (st.isSymbolicLink()) out[rel] = `-> ${await fs.readlink(path.join(root, rel))}`;
      else if (st.isDirectory()) {
        out[rel] = `dir ${(st.mode & 0o7777).toString(8)}`;
        await walk(rel);
      } else out[rel] = `${(st.mode & 0o7777).toString(8)} ${createHash('sha256').update(await fs.readFile(path.join(root, rel))).digest('hex')}`;
    }
  };
  await walk('');
  return out;
}

const STATUS = '/run/kubeseed/status.json';
const isEnabled = (root: string, unit: string) =>
  spawnSync('systemctl', [`--root=${root}`, 'is-enabled', unit], { encoding: 'utf8' }).stdout.trim();

async function startApi(t: Test, port = 0) {
  const hosts: string[] = [];
  const server = http.createServer((req, res) => {
    hosts.push(req.headers.host ?? '');
    res.writeHead(req.url === '/readyz' ? 200 : 404).end('ok');
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return { port: (server.address() as AddressInfo).port, hosts };
}

async function freePort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function readStatusFile(root: string) {
  return JSON.parse(await fs.readFile(path.join(root, STATUS), 'utf8'));
}

t.test('the bundle runs with plain node and uses no API newer than Node 18', async (t) => {
  t.match(await agent('--version'), { code: 0, stdout: /^kubeseed-agent \d+\.\d+\.\d+\n$/ });
  t.comment(`agent runtime: ${execFileSync(NODE, ['--version'], { encoding: 'utf8' }).trim()}`);
  const text = await fs.readFile(bundle, 'utf8');
  const newer = [
    'AbortSignal.any',
    'import.meta.dirname',
    'import.meta.filename',
    '.toSorted(',
    '.toReversed(',
    '.toSpliced(',
    'Object.groupBy',
    'Map.groupBy',
    'Promise.withResolvers',
    'Array.fromAsync',
    'isWellFormed',
    'toWellFormed',
    'globSync',
    'loadEnvFile',
    'styleText',
    'getCallSites',
    'node:sqlite',
  ].filter((api) => text.includes(api));
  t.same(newer, [], 'no Node 20+ API in dist/agent.js');
  t.notMatch(text, /^import |\bawait import\(|import\.meta/m, 'CommonJS all through');
});

t.test('acceptance as the issue states it: role file, two units, masters record, /readyz; no secrets, no minions record', async (t) => {
  const api = await startApi(t);
  const dns = await startTestDns('demo.k8s', { 'masters.demo.k8s': ['127.0.0.1'] });
  t.teardown(() => dns.close());
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'agent-literal-'));
  t.teardown(() => fs.rm(root, { recursive: true, force: true }));
  await put(root, '/usr/lib/systemd/system/kubelet.service', service([MINION, `!${MASTER}`]));
  await put(root, '/usr/lib/systemd/system/kube-apiserver.service', service([MASTER]));
  await put(root, MINION, `CLUSTER_NAME=demo\nAPI_ENDPOINT=http://masters.demo.k8s:${api.port}\n`);

  const run = await agent('run', '--root', root, '--once', '--nameserver', dns.nameserver);
  t.equal(run.code, 0, run.stdout + run.stderr);
  t.equal(isEnabled(root, 'kubelet.service'), 'enabled');
  t.equal(isEnabled(root, 'kube-apiserver.service'), 'disabled');
  const status = await agent('status', '--root', root, '--json');
  t.equal(status.code, 0);
  const doc = JSON.parse(status.stdout);
  t.match(doc, { state: 'ready', role: 'minion' });
  // Nothing to do is said, not hidden: each skipped phase names what the node lacks.
  t.match(doc.phases.find((p: { name: string }) => p.name === 'pki'), { state: 'skipped', reason: /no cluster secrets in \/etc\/kubeseed\/secrets/ });
  t.match(doc.phases.find((p: { name: string }) => p.name === 'weave'), { state: 'skipped', reason: /no weave\.service/ });
  t.match(doc.warnings, [/^pki skipped: /, /^weave skipped: /]);
  t.match(run.stdout, /^phase-skipped phase=pki reason=/m);
  const human = await agent('status', '--root', root);
  t.match(human.stdout, /^  pki +skipped .*\(no cluster secrets/m);
});

t.test('acceptance: a minion waits for its master, enables kubelet only, and a second run changes nothing', async (t) => {
  const api = await startApi(t);
  const dns = await demoZone();
  t.teardown(() => dns.close());
  const root = await nodeRoot(t, { [MINION]: `CLUSTER_NAME=demo\nAPI_ENDPOINT=http://masters.demo.k8s:${api.port}\n` });

  const first = await agent('run', '--root', root, '--once', '--nameserver', dns.nameserver);
  t.equal(first.code, 0, first.stdout + first.stderr);
  t.match(first.stdout, /^masters-ready endpoint=http:\/\/masters\.demo\.k8s:\d+ via=127\.0\.0\.1/m);
  t.match(first.stdout, /^units-planned units=kubelet\.service\nunit-enabled unit=kubelet\.service$/m, "the role's units, named once, then enabled");
  t.match(first.stdout, /^ready role=minion cluster=demo$/m);
  t.equal(isEnabled(root, 'kubelet.service'), 'enabled');
  t.equal(isEnabled(root, 'kube-apiserver.service'), 'disabled');
  t.equal(api.hosts[0], `masters.demo.k8s:${api.port}`, 'the API saw its name, not the address');

  const status = await agent('status', '--root', root, '--json');
  t.equal(status.code, 0);
  const doc = JSON.parse(status.stdout);
  t.match(doc, { state: 'ready', role: 'minion', cluster: 'demo', masters: ['127.0.0.1'], units: [{ name: 'kubelet.service', state: 'enabled' }] });
  const phases: { name: string; state: string }[] = doc.phases;
  t.same(phases.filter((p) => p.state !== 'done' && p.name !== 'weave'), [], 'every phase of the boot flow is done');
  t.match(phases.find((p) => p.name === 'weave'), { state: 'skipped', reason: /no weave\.service/ }, 'a root without the overlay unit skips weave, saying why');
  t.ok(phases.findIndex((p) => p.name === 'wait-for-masters') < phases.findIndex((p) => p.name === 'units'), 'units after the wait');
  t.notOk(doc.waitingOn, 'no longer waiting');
  const human = await agent('status', '--root', root);
  t.equal(human.code, 0);
  t.match(human.stdout, /^state: +ready$/m);
  t.match(human.stdout, /^role: +minion \(\/etc\/sysconfig\/kubernetes-minions\)$/m);
  t.match(human.stdout, /^ {2}kubelet\.service +enabled$/m);

  const before = await snapshot(root, ['run/kubeseed/status.json']);
  const second = await agent('run', '--root', root, '--once', '--nameserver', dns.nameserver);
  t.equal(second.code, 0);
  t.notMatch(second.stdout, /unit-enabled/, 'nothing left to enable');
  t.same(await snapshot(root, ['run/kubeseed/status.json']), before, 'the tree is byte for byte the same (status.json aside: it records times)');
});

t.test('acceptance: the API server starts 3 s late; the agent says it waits, then finishes', async (t) => {
  const port = await freePort();
  const dns = await demoZone();
  t.teardown(() => dns.close());
  const root = await nodeRoot(t, { [MINION]: `CLUSTER_NAME=demo\nAPI_ENDPOINT=http://masters.demo.k8s:${port}\n` });
  const started = Date.now();
  const run = agentAsync('run', '--root', root, '--once', '--nameserver', dns.nameserver);
  t.teardown(() => run.child.kill());

  await until('the status document to say waiting', async () => (await readStatusFile(root).catch(() => ({}))).state === 'waiting');
  const waiting = await agent('status', '--root', root);
  t.equal(waiting.code, 3, 'status: in progress');
  t.match(waiting.stdout, new RegExp(`^waiting: +http://masters\\.demo\\.k8s:${port}/readyz \\(connection refused from 127\\.0\\.0\\.1\\) for \\d+s$`, 'm'));
  t.match(waiting.stdout, /^ {2}wait-for-masters +running/m);
  const waitingDoc = await readStatusFile(root);
  t.match(waitingDoc, { state: 'waiting', phase: 'wait-for-masters', waitingSince: String });

  await new Promise((r) => setTimeout(r, Math.max(0, 3000 - (Date.now() - started))));
  const apiUp = Date.now();
  await startApi(t, port);
  const result = await run.done;
  t.equal(result.code, 0, result.stdout + result.stderr);
  t.match(result.stdout, /^waiting on="http:\/\/masters\.demo\.k8s:\d+\/readyz \(connection refused from 127\.0\.0\.1\)"$/m);
  t.equal(isEnabled(root, 'kubelet.service'), 'enabled');
  t.equal((await agent('status', '--root', root)).code, 0);
  const phases: { name: string; waitedMs?: number }[] = (await readStatusFile(root)).phases;
  // At least from when the agent began waiting to when the API server came up (how long the agent took to
  // start is not part of the wait, so a fixed figure would depend on the machine's load).
  const waitedAtLeast = apiUp - Date.parse(waitingDoc.waitingSince) - 20;
  t.ok((phases.find((p) => p.name === 'wait-for-masters')?.waitedMs ?? 0) >= waitedAtLeast, 'the wait for the late API server is recorded in its phase', { waitedAtLeast, phases });
});

t.test('both role files: exit non-zero naming both, nothing enabled', async (t) => {
  const root = await nodeRoot(t, { [MINION]: 'CLUSTER_NAME=demo\n', [MASTER]: 'CLUSTER_NAME=demo\n' });
  const before = await snapshot(root);
  const r = await agent('run', '--root', root, '--once');
  t.equal(r.code, 1);
  t.match(r.stdout, `both role files exist (${MASTER} and ${MINION})`);
  t.same(await snapshot(root, ['run', 'run/kubeseed', 'run/kubeseed/status.json']), before, 'only status.json was written');
  const status = await agent('status', '--root', root);
  t.equal(status.code, 1);
  t.match(status.stdout, /^state: +invalid$/m);
  t.match(status.stdout, `both role files exist (${MASTER} and ${MINION})`);
  t.equal((await agent('check', '--root', root)).code, 1);
});

t.test('no role file: unconfigured, exit 4 everywhere', async (t) => {
  const root = await nodeRoot(t, {});
  t.match(await agent('status', '--root', root), { code: 4, stdout: /unconfigured \(no role file/ });
  t.same(JSON.parse((await agent('status', '--root', root, '--json')).stdout), { state: 'unconfigured' });
  t.match(await agent('check', '--root', root), { code: 4, stdout: /no role file/ });
  t.match(await agent('run', '--root', root, '--once'), { code: 4, stdout: /^unconfigured reason="no role file"$/m });
  t.match(await readStatusFile(root), { state: 'unconfigured' });
  t.equal((await agent('status', '--root', root)).code, 4);
});

t.test('a role file with shell in CLUSTER_NAME: refused with file:line, nothing runs, nothing changes', async (t) => {
  const marker = path.join(os.tmpdir(), `kubeseed-pwned-${process.pid}`);
  const root = await nodeRoot(t, { [MINION]: `# minion\nCLUSTER_NAME=$(touch ${marker})\n` });
  const before = await snapshot(root);
  const r = await agent('run', '--root', root, '--once');
  t.equal(r.code, 1);
  t.match(r.stdout, `${MINION}:2: CLUSTER_NAME`);
  await t.rejects(fs.stat(marker), 'nothing was executed');
  t.same(await snapshot(root, ['run', 'run/kubeseed', 'run/kubeseed/status.json']), before);
  const status = await agent('status', '--root', root);
  t.equal(status.code, 1);
  t.match(status.stdout, `${MINION}:2: CLUSTER_NAME "$(touch ${marker})" is not a DNS label`);
});

t.test('SIGTERM during the wait: exits promptly and cleanly, status says interrupted', async (t) => {
  const dns = await demoZone(null);
  t.teardown(() => dns.close());
  const root = await nodeRoot(t, { [MINION]: 'CLUSTER_NAME=demo\n' });
  const run = agentAsync('run', '--root', root, '--nameserver', dns.nameserver);
  await until('a "waiting on=" log line', () => run.output().includes('waiting on='));
  run.child.kill('SIGTERM');
  const result = await run.done;
  t.equal(result.code, 143, 'exit 128+SIGTERM, which the unit counts as success');
  t.equal(result.stderr, '', 'no stack trace');
  t.match(result.stdout, /^interrupted phase=wait-for-masters$/m);
  const doc = await readStatusFile(root);
  t.equal(doc.state, 'interrupted');
  t.match(doc.phases.find((p: { name: string }) => p.name === 'wait-for-masters'), { state: 'interrupted', endedAt: String });
  const status = await agent('status', '--root', root);
  t.equal(status.code, 3);
  t.match(status.stdout, /^waited: +DNS masters\.demo\.k8s \(NXDOMAIN from 127\.0\.0\.1:\d+\) for \d+s \(then interrupted\)$/m);
  t.equal(isEnabled(root, 'kubelet.service'), 'disabled', 'units untouched');
});

t.test('a master needs no wait; the reconcile loop keeps running until SIGTERM', async (t) => {
  const root = await nodeRoot(t, { [MASTER]: 'CLUSTER_NAME=demo\n' });
  const run = agentAsync('run', '--root', root);
  await until('a "ready role=master" log line', () => run.output().includes('ready role=master'));
  t.equal(isEnabled(root, 'kube-apiserver.service'), 'enabled');
  t.equal(isEnabled(root, 'kubelet.service'), 'disabled');
  t.equal(run.child.exitCode, null, 'still running after ready');
  run.child.kill('SIGTERM');
  const result = await run.done;
  t.equal(result.code, 0);
  t.match(result.stdout, /^agent-stop reason=signal$/m);
  t.match(await readStatusFile(root), { state: 'ready', role: 'master' });
});

t.test('enabling one unit fails: status names it, none of the set is enabled, a re-run finishes', async (t) => {
  const root = await nodeRoot(t, { [MASTER]: 'CLUSTER_NAME=demo\n' });
  await put(root, '/usr/lib/systemd/system/etcd.service', service([MASTER]).replace('multi-user.target', 'cluster.target'));
  // A file where the link's directory cluster.target.wants/ must go: enabling etcd fails, so the set is not enabled.
  await put(root, '/etc/systemd/system/cluster.target.wants', 'in the way\n');
  const first = await agent('run', '--root', root, '--once');
  t.equal(first.code, 1);
  t.match(first.stdout, /^units-enable-failed units=etcd\.service,kube-apiserver\.service /m);
  t.equal(isEnabled(root, 'kube-apiserver.service'), 'disabled', 'no half-enabled set');
  const status = await agent('status', '--root', root);
  t.equal(status.code, 1);
  t.match(status.stdout, /^state: +failed \(phase units\)$/m);
  t.match(status.stdout, /^ {2}etcd\.service +failed +enabling etcd\.service kube-apiserver\.service: cannot link \/etc\/systemd\/system\/cluster\.target\.wants\/etcd\.service .*none of them enabled$/m);

  await fs.rm(path.join(root, '/etc/systemd/system/cluster.target.wants'));
  const again = await agent('run', '--root', root, '--once');
  t.equal(again.code, 0);
  t.match(again.stdout, /^unit-enabled unit=etcd\.service$/m);
  t.match(again.stdout, /^unit-enabled unit=kube-apiserver\.service$/m);
  t.equal(isEnabled(root, 'etcd.service'), 'enabled');
  t.equal((await agent('status', '--root', root)).code, 0);
  const third = await agent('run', '--root', root, '--once');
  t.notMatch(third.stdout, /unit-enabled/, 'what is right is left alone');
});

t.test('check lists every problem and changes nothing', async (t) => {
  const root = await nodeRoot(t, { [MINION]: 'CLUSTER_NAME=a.b\nDNS_DOMAIN=x_y\nEXTRA=1\n' });
  await put(root, '/etc/systemd/system/broken.service', '[Unit\nDescription=x\n');
  const before = await snapshot(root);
  const r = await agent('check', '--root', root);
  t.equal(r.code, 1);
  t.same(r.stderr.trim().split('\n'), [
    `${MINION}:1: CLUSTER_NAME "a.b" is not a DNS label (letters, digits and inner '-' only)`,
    `${MINION}:2: DNS_DOMAIN "x_y" is not a DNS name`,
    '/etc/systemd/system/broken.service:1: invalid section header "[Unit"',
    '/etc/systemd/system/broken.service:2: assignment Description= outside of any section',
  ]);
  t.match(r.stdout, `warning: ${MINION}:3: unknown key EXTRA`);
  t.match(r.stdout, /3 unit files checked, 4 problems/);
  t.same(await snapshot(root), before);

  const good = await nodeRoot(t, { [MINION]: 'CLUSTER_NAME=demo\n' });
  const ok = await agent('check', '--root', good);
  t.equal(ok.code, 0);
  t.match(ok.stdout, 'units of the role: kubelet.service');
});

t.test('usage errors exit 2; --help tells the commands', async (t) => {
  t.match(await agent(), { code: 2, stderr: /no command given/ });
  t.match(await agent('frobnicate'), { code: 2, stderr: /unknown command "frobnicate"/ });
  t.match(await agent('status', '--once'), { code: 2, stderr: /--once/ });
  t.match(await agent('run', '--nameserver', 'not-an-ip'), { code: 2, stderr: /--nameserver: expected an IP address/ });
  t.match(await agent('status', '--root'), { code: 2, stderr: /^agent: --root needs a value\nusage: agent/ });
  t.match(await agent('check', '--bogus'), { code: 2, stderr: /^agent: unknown flag --bogus\nusage: agent/ });
  const missing = await agent('status', '--root', '/nonexistent/kubeseed-root');
  t.match(missing, { code: 2, stderr: /^agent: --root "\/nonexistent\/kubeseed-root" is not an existing directory\n/ }, 'a mistyped --root is refused, not read as unconfigured');
  t.match(await agent('run', '--help'), { code: 0, stdout: /^usage: agent/, stderr: '' });
  const help = await agent('--help');
  t.equal(help.code, 0);
  for (const c of ['run [--root DIR] [--once] [--nameserver HOST[:PORT]]', 'status [--root DIR] [--json]', 'check [--root DIR]']) t.match(help.stdout, c);
});

t.test('a damaged status.json is reported, exit 1', async (t) => {
  const root = await nodeRoot(t, { [MINION]: 'CLUSTER_NAME=demo\n' });
  t.match(await agent('status', '--root', root), { code: 3, stdout: /starting/ }, 'role file but no status yet: starting');
  await put(root, STATUS, '{"half": ');
  t.match(await agent('status', '--root', root), { code: 1, stderr: /status\.json: not a kubeseed status document/ });
});
