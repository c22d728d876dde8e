// End to end through the shipped bundle: `node dist/agent.js run` for a minion, against a real DNS
// server, a real /readyz server, real secrets and real `systemctl --root`; the weaver double serving the
// router's API where a node has it, 127.0.0.1:6784.
import t, { type Test } from 'tap';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { envFileVars } from '../agent/contract/env-file.js';
import { startTestDns } from './helpers/dns.js';
import { MACHINE_ID } from './helpers/overlay.js';
import { startWeaverDouble } from './helpers/weave-double.js';
import { peerNameFor } from '../agent/weave-peer-name.js';
import { makeTestSecrets, nodeRoot } from './helpers/secrets.js';
import { until } from './helpers/until.js';

const REPO = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const RECORD = 'minions.demo.k8s';
const PASSWORD = "weave 'pass' word, long enough";
let bundle = '';

t.before(async () => {
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: REPO, stdio: 'ignore' });
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'overlay-bundle-'));
  bundle = path.join(dir, 'agent.js');
  await fs.copyFile(path.join(REPO, 'dist/agent.js'), bundle);
});
t.teardown(() => fs.rm(path.dirname(bundle), { recursive: true, force: true }));

/** This machine's own address, as the minions record of a real cluster would list it. */
function ownAddress(): string | undefined {
  return Object.values(os.networkInterfaces())
    .flat()
    .find((i) => i && i.family === 'IPv4' && !i.internal)?.address;
}

async function minionRoot(t: Test, apiPort: number) {
  const secrets = await makeTestSecrets('demo');
  t.teardown(() => fs.rm(path.dirname(secrets), { recursive: true, force: true }));
  const root = await nodeRoot('minion', secrets, `CLUSTER_NAME=demo\nAPI_ENDPOINT=http://masters.demo.k8s:${apiPort}\n`);
  t.teardown(() => fs.rm(root, { recursive: true, force: true }));
  // What user-data and systemd leave on a node: the password in its own 0600 file, a machine ID.
  await fs.mkdir(path.join(root, 'etc/kubeseed'), { recursive: true });
  await fs.writeFile(path.join(root, 'etc/kubeseed/weave-password.env'), `WEAVE_PASSWORD="${PASSWORD.replace(/"/g, '\\"')}"\n`, { mode: 0o600 });
  await fs.chmod(path.join(root, 'etc/kubeseed/weave-password.env'), 0o600);
  await fs.writeFile(path.join(root, 'etc/machine-id'), `${MACHINE_ID}\n`);
  await fs.mkdir(path.join(root, 'usr/lib/systemd/system'), { recursive: true });
  await fs.mkdir(path.join(root, 'etc/systemd/system'), { recursive: true });
  await fs.copyFile(path.join(REPO, 'units/weave.service'), path.join(root, 'usr/lib/systemd/system/weave.service'));
  return root;
}

async function readyzServer(t: Test): Promise<number> {
  const server = http.createServer((req, res) => res.writeHead(req.url === '/readyz' ? 200 : 404).end('ok'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as AddressInfo).port;
}

/** `agent run --once` as a child process (async: the DNS and HTTP servers it talks to live in this process). */
function agentOnce(root: string, nameserver: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [bundle, 'run', '--root', root, '--once', '--nameserver', nameserver], {
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 60_000,
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('close', (status) => resolve({ status, stdout, stderr })));
}

async function envFile(root: string) {
  const text = await fs.readFile(path.join(root, 'run/kubeseed/weave.env'), 'utf8');
  return envFileVars(text, 'weave.env');
}

t.test('agent run --once on a minion: weave.env from the minions record, CNI in place, weave.service enabled; twice changes nothing', async (t) => {
  const self = ownAddress();
  if (!self) throw new Error('this test needs a non-loopback IPv4 address on this machine');
  const api = await readyzServer(t);
  const dns = await startTestDns('demo.k8s', { 'masters.demo.k8s': ['127.0.0.1', self], [RECORD]: ['10.1.0.3', self, '10.1.0.2'] });
  t.teardown(() => dns.close());
  const root = await minionRoot(t, api);

  const first = await agentOnce(root, dns.nameserver);
  t.equal(first.status, 0, first.stdout + first.stderr);
  t.same(await envFile(root), { WEAVE_NAME: peerNameFor(MACHINE_ID), IPALLOC_RANGE: '10.32.0.0/12', IPALLOC_INIT: 'observer', PEERS: '10.1.0.2 10.1.0.3' });
  t.equal((await fs.stat(path.join(root, 'run/kubeseed/weave.env'))).mode & 0o777, 0o600);
  for (const dir of ['opt/cni/bin', 'etc/cni/net.d']) t.equal((await fs.stat(path.join(root, dir))).mode & 0o7777, 0o755, dir);
  t.match(JSON.parse(await fs.readFile(path.join(root, 'etc/cni/net.d/10-weave.conflist'), 'utf8')), { plugins: [{ type: 'weave-net' }] });
  t.equal(spawnSync('systemctl', [`--root=${root}`, 'is-enabled', 'weave.service'], { encoding: 'utf8' }).stdout.trim(), 'enabled');
  t.notMatch(first.stdout, /pass' word/, 'the password is not logged');

  const status = JSON.parse(await fs.readFile(path.join(root, 'run/kubeseed/status.json'), 'utf8'));
  t.match(status, { state: 'ready', peers: ['10.1.0.2', '10.1.0.3'], overlay: { records: ['masters.demo.k8s', RECORD], self: [self], ipallocInit: 'observer', encrypted: true } });
  t.same(
    status.phases.map((p: { name: string }) => p.name),
    ['pki', 'resolver', 'wait-for-masters', 'cni', 'weave', 'units'],
  );
  t.notMatch(JSON.stringify(status), /pass' word/, 'the password is not in the status');

  const files = ['run/kubeseed/weave.env', 'var/lib/kubeseed/weave.json', 'etc/cni/net.d/10-weave.conflist'];
  const before = await Promise.all(files.map((f) => fs.stat(path.join(root, f))));
  const second = await agentOnce(root, dns.nameserver);
  t.equal(second.status, 0, second.stdout + second.stderr);
  const after = await Promise.all(files.map((f) => fs.stat(path.join(root, f))));
  t.same(
    after.map((s) => [s.mtimeMs, s.mode]),
    before.map((s) => [s.mtimeMs, s.mode]),
    'second run: no overlay or CNI file touched',
  );
  t.notMatch(second.stdout, /cni-changed|weave-env-written/);
});

t.test('agent run (reconcile loop): a minion leaving and one joining reach the router as /connect (replace) and /forget', async (t) => {
  const self = ownAddress();
  if (!self) throw new Error('this test needs a non-loopback IPv4 address on this machine');
  const api = await readyzServer(t);
  const dns = await startTestDns('demo.k8s', { 'masters.demo.k8s': ['127.0.0.1', self], [RECORD]: [self, '10.1.0.2', '10.1.0.3'] }, 1);
  t.teardown(() => dns.close());
  const root = await minionRoot(t, api);
  // weave.service's router, as the agent finds it on a node (a busy port fails here, naming it).
  const router = await startWeaverDouble(t, (address) => [`--name=${peerNameFor(MACHINE_ID)}`, `--http-addr=${address}`, self, '10.1.0.2', '10.1.0.3'], {}, '127.0.0.1:6784');

  const child = spawn(process.execPath, [bundle, 'run', '--root', root, '--nameserver', dns.nameserver], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  child.stdout.on('data', (d) => (stdout += d));
  const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  t.teardown(() => child.kill());

  await until('a "ready role=minion" log line', () => /^ready role=minion/m.test(stdout));
  dns.records.set(RECORD, [self, '10.1.0.3', '10.1.0.4']);
  await until('a "weave-peers-changed" log line', () => /^weave-peers-changed/m.test(stdout));
  child.kill('SIGTERM');
  t.equal(await exited, 0, stdout);

  t.same(await router.targets(), ['10.1.0.3', '10.1.0.4'], 'the router dials the new set');
  t.match(await router.log(), /connect peers=\['10\.1\.0\.3', '10\.1\.0\.4'\] replace=True[\s\S]*forget peers=\['10\.1\.0\.2'\]/);
  t.match(await envFile(root), { IPALLOC_INIT: 'observer', PEERS: '10.1.0.3 10.1.0.4' });
  const status = JSON.parse(await fs.readFile(path.join(root, 'run/kubeseed/status.json'), 'utf8'));
  t.match(status, { peers: ['10.1.0.3', '10.1.0.4'], overlay: { ipallocInit: 'observer', lastChange: { added: ['10.1.0.4'], removed: ['10.1.0.2'] } } });
});

