// The agent's pki phase on temp roots, through the real CLI (`agent run --root R --once`): a master gets
// the cluster PKI (keys 0600), component kubeconfigs and the bootstrap manifests; a minion verifies the
// masters' /readyz over https with our CA, gets its bootstrap kubeconfig and never a CA key. Each bad
// secret is refused, names its file, and leaves /etc/kubernetes unwritten.
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmod, chown, copyFile, mkdir, readFile, readdir, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import { networkInterfaces } from 'node:os';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { InputError } from '../agent/errors.js';
import { createHost } from '../agent/host.js';
import type { PhaseContext } from '../agent/phase.js';
import { KUBELET_CLIENT_CERT, pkiPhase } from '../agent/pki.js';
import { withServer } from '../agent/kubeconfig.js';
import { newKeyPair, signedLeaf } from '../scripts/secrets/openssl.js';
import { loadRole } from '../agent/role-file.js';
import { SECRETS_DIR } from '../agent/secrets-layout.js';
import { parseNameserver } from '../agent/dns.js';
import { attemptOnce } from '../agent/wait-for-masters.js';
import { startTestDns } from './helpers/dns.js';
import { makeTestSecrets, nodeRoot } from './helpers/secrets.js';


function agent(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'agent/main.ts', ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await walk(full)));
    else out.push(full);
  }
  return out;
}

const mode = async (file: string) => (await stat(file)).mode & 0o777;
// Written as JSON (valid YAML for every consumer): JSON.parse proves both.
const kubeconfig = async (file: string) => JSON.parse(await readFile(file, 'utf8'));

const secrets = await makeTestSecrets('demo');
t.teardown(() => rm(path.dirname(secrets), { recursive: true, force: true }));
const token = (await readFile(path.join(secrets, 'bootstrap-token'), 'utf8')).trim();

/** A ready API server with our serving certificate on loopback, and DNS that names it and this node (the overlay wants it among the minions). */
async function readyMasters(t: Test): Promise<{ endpoint: string; dns: Awaited<ReturnType<typeof startTestDns>> }> {
  const read = (name: string) => readFile(path.join(secrets, name), 'utf8');
  const server: Server = createServer({ cert: await read('apiserver.crt'), key: await read('apiserver.key') }, (req, res) => {
    res.writeHead(req.url === '/readyz' ? 200 : 404).end('ok');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const self = Object.values(networkInterfaces())
    .flat()
    .find((i) => i?.family === 'IPv4' && !i.internal)?.address;
  if (!self) throw new Error('this test needs a non-loopback IPv4 address on this machine');
  const dns = await startTestDns('demo.k8s', { 'masters.demo.k8s': ['127.0.0.1'], 'minions.demo.k8s': [self] });
  t.teardown(async () => {
    server.close();
    await dns.close();
  });
  return { endpoint: `https://masters.demo.k8s:${(server.address() as { port: number }).port}`, dns };
}

t.test('master: pki with 0600 keys, component kubeconfigs, bootstrap manifests; a re-run changes nothing', async (t) => {
  const root = await nodeRoot('master', secrets, 'CLUSTER_NAME=demo\n');
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const first = await agent('run', '--root', root, '--once');
  t.equal(first.code, 0, first.stderr);
  const pki = path.join(root, 'etc/kubernetes/pki');
  for (const name of await readdir(pki)) {
    t.equal(await mode(path.join(pki, name)), name.endsWith('.key') ? 0o600 : 0o644, `pki/${name} mode`);
  }
  for (const name of ['ca.key', 'apiserver.key', 'sa.key', 'etcd-server.key', 'apiserver-etcd-client.key']) {
    t.ok((await readdir(pki)).includes(name), `pki/${name} installed`);
  }
  t.notOk((await readdir(pki)).some((n) => n === 'etcd-ca.key' || n === 'front-proxy-ca.key'), 'CA keys no master component uses stay away');

  const k8s = path.join(root, 'etc/kubernetes');
  for (const [name, user] of [['controller-manager', 'system:kube-controller-manager'], ['scheduler', 'system:kube-scheduler']]) {
    const file = path.join(k8s, `${name}.kubeconfig`);
    t.equal(await mode(file), 0o600);
    const kc = await kubeconfig(file);
    t.equal(kc.clusters[0].cluster.server, 'https://masters.demo.k8s:6443', `${name} reaches the API through the masters' name, not only its own API server`);
    t.equal(Buffer.from(kc.clusters[0].cluster['certificate-authority-data'], 'base64').toString(), await readFile(path.join(secrets, 'ca.crt'), 'utf8'));
    t.equal(kc.users[0].user['client-certificate'], `/etc/kubernetes/pki/${name}.crt`);
    const cert = new X509Certificate(await readFile(path.join(pki, `${name}.crt`)));
    t.match(cert.subject, `CN=${user}`);
  }
  const scheduler = JSON.parse(await readFile(path.join(k8s, 'kube-scheduler.yaml'), 'utf8'));
  t.match(scheduler, { apiVersion: 'kubescheduler.config.k8s.io/v1', kind: 'KubeSchedulerConfiguration', enableProfiling: false }, 'the scheduler runs from its configuration file');
  t.equal(scheduler.clientConnection.kubeconfig, '/etc/kubernetes/scheduler.kubeconfig', 'which names its kubeconfig (not the deprecated flag)');
  t.equal(scheduler.leaderElection.leaderElect, true);
  const admin = await kubeconfig(path.join(k8s, 'admin.kubeconfig'));
  t.equal(admin.clusters[0].cluster.server, 'https://127.0.0.1:6443');
  t.equal(await mode(path.join(k8s, 'admin.kubeconfig')), 0o600);

  const [id, secret] = token.split('.');
  const tokenFile = path.join(k8s, 'bootstrap/bootstrap-token.yaml');
  t.equal(await mode(tokenFile), 0o600, 'the token manifest is private');
  const tokenSecret = JSON.parse(await readFile(tokenFile, 'utf8'));
  t.equal(tokenSecret.metadata.name, `bootstrap-token-${id}`);
  t.equal(tokenSecret.metadata.namespace, 'kube-system');
  t.equal(tokenSecret.type, 'bootstrap.kubernetes.io/token');
  t.equal(tokenSecret.stringData['token-secret'], secret);
  t.equal(tokenSecret.stringData.expiration, (await readFile(path.join(secrets, 'bootstrap-token.expires'), 'utf8')).trim());
  const rbac = JSON.parse(await readFile(path.join(k8s, 'bootstrap/node-bootstrap-rbac.yaml'), 'utf8'));
  t.equal(rbac.kind, 'List', 'one document: kubectl reads a file starting with { as a JSON stream');
  t.same(
    rbac.items.map((b: { roleRef: { name: string }; subjects: { name: string }[] }) => [b.roleRef.name, b.subjects[0]!.name]),
    [
      ['system:node-bootstrapper', 'system:bootstrappers'],
      ['system:certificates.k8s.io:certificatesigningrequests:nodeclient', 'system:bootstrappers'],
      ['system:certificates.k8s.io:certificatesigningrequests:selfnodeclient', 'system:nodes'],
    ],
  );
  t.match(await readFile(path.join(k8s, 'cluster.env'), 'utf8'), /^SERVICE_CIDR="10\.96\.0\.0\/12"$/m);

  const status = await readFile(path.join(root, 'run/kubeseed/status.json'), 'utf8');
  t.notMatch(status, secret!, 'status.json holds no token');
  t.notMatch(first.stdout, secret!, 'logs hold no token');

  const second = await agent('run', '--root', root, '--once');
  t.equal(second.code, 0);
  t.notMatch(second.stdout, /pki-changed/, 'idempotent: nothing rewritten');
});

t.test('an admin.kubeconfig in YAML (from an older npm run secrets) is refused, naming the file and the fix', async (t) => {
  const yaml = 'apiVersion: v1\nkind: Config\nclusters:\n  - name: demo\n    cluster:\n      server: https://masters.demo.k8s:6443\n';
  t.throws(() => withServer(yaml, 'https://127.0.0.1:6443', '/etc/kubeseed/secrets/admin.kubeconfig'), {
    file: '/etc/kubeseed/secrets/admin.kubeconfig',
    message: /^not a kubeconfig in JSON .*run it again to convert it/,
  });
  const json = withServer(JSON.stringify({ clusters: [{ cluster: { server: 'https://masters.demo.k8s:6443' } }] }), 'https://127.0.0.1:6443', 'x');
  t.same(JSON.parse(json).clusters[0].cluster.server, 'https://127.0.0.1:6443');
});

t.test('minion: waits on /readyz over https with our CA, writes the bootstrap kubeconfig, no CA key', async (t) => {
  const read = (name: string) => readFile(path.join(secrets, name), 'utf8');
  const { endpoint, dns } = await readyMasters(t);
  const root = await nodeRoot('minion', secrets, `CLUSTER_NAME=demo\nAPI_ENDPOINT=${endpoint}\nKUBELET_HOSTNAME=node-1\n`);
  t.teardown(() => rm(root, { recursive: true, force: true }));

  const run = await agent('run', '--root', root, '--once', '--nameserver', dns.nameserver);
  t.equal(run.code, 0, run.stderr);
  t.match(run.stdout, /masters-ready .*via=127\.0\.0\.1/, 'the serving certificate verified against our CA');

  const files = (await walk(root)).map((f) => `/${path.relative(root, f)}`);
  t.notOk(files.some((f) => /ca\.key$/.test(f)), `no CA key anywhere on the minion (${files.filter((f) => f.endsWith('.key')).join(' ')})`);
  const k8s = path.join(root, 'etc/kubernetes');
  const boot = path.join(k8s, 'bootstrap-kubelet.kubeconfig');
  t.equal(await mode(boot), 0o600);
  const kc = await kubeconfig(boot);
  t.equal(kc.clusters[0].cluster.server, endpoint);
  t.equal(Buffer.from(kc.clusters[0].cluster['certificate-authority-data'], 'base64').toString(), await read('ca.crt'));
  t.equal(kc.users[0].user.token, token);
  t.equal(await mode(path.join(k8s, 'pki/kube-proxy.key')), 0o600);
  t.equal((await kubeconfig(path.join(k8s, 'kube-proxy.kubeconfig'))).users[0].user['client-key'], '/etc/kubernetes/pki/kube-proxy.key');
  const kubelet = JSON.parse(await readFile(path.join(k8s, 'kubelet-config.yaml'), 'utf8'));
  t.equal(kubelet.rotateCertificates, true);
  t.equal(kubelet.authentication.anonymous.enabled, false);
  t.equal(kubelet.authorization.mode, 'Webhook');
  t.same(kubelet.clusterDNS, ['10.96.0.10']);
  t.equal(kubelet.cgroupDriver, 'systemd');
  const containerd = await readFile(path.join(root, 'etc/containerd/config.toml'), 'utf8');
  t.match(containerd, /SystemdCgroup = true/);
  t.match(containerd, /^ {2}sandbox_image = "registry\.k8s\.io\/pause:[\d.]+@sha256:[0-9a-f]{64}"$/m, 'the sandbox image is pinned by digest');
  t.match(containerd, /bin_dir = "\/opt\/cni\/bin"[\s\S]*conf_dir = "\/etc\/cni\/net\.d"/);
  const proxy = JSON.parse(await readFile(path.join(k8s, 'kube-proxy.yaml'), 'utf8'));
  t.match(proxy, { apiVersion: 'kubeproxy.config.k8s.io/v1alpha1', kind: 'KubeProxyConfiguration', mode: 'iptables' }, 'kube-proxy runs from its configuration file');
  t.equal(proxy.clientConnection.kubeconfig, '/etc/kubernetes/kube-proxy.kubeconfig');
  t.equal(proxy.hostnameOverride, 'node-1', "the role file's KUBELET_HOSTNAME is its node name");
  t.equal(proxy.metricsBindAddress, '127.0.0.1:10249');
});

t.test('a minion rebooted after its bootstrap token expired becomes ready again (its kubelet holds a client certificate)', async (t) => {
  const read = (name: string) => readFile(path.join(secrets, name), 'utf8');
  const { endpoint, dns } = await readyMasters(t);
  const root = await nodeRoot('minion', secrets, `CLUSTER_NAME=demo\nAPI_ENDPOINT=${endpoint}\nKUBELET_HOSTNAME=node-1\n`);
  t.teardown(() => rm(root, { recursive: true, force: true }));
  await writeFile(path.join(root, SECRETS_DIR, 'bootstrap-token.expires'), '2021-06-01T00:00:00Z\n');

  const first = await agent('run', '--root', root, '--once', '--nameserver', dns.nameserver);
  t.equal(first.code, 1, 'first boot: no kubelet certificate yet, so the expired token is fatal');
  t.match(first.stdout, /phase-failed phase=pki .*bootstrap token expired/);

  // What the kubelet leaves after its TLS bootstrap: the CA-signed pair in its --cert-dir.
  const { keyPem } = newKeyPair();
  const leaf = { name: 'kubelet-client', issuer: 'ca', subject: { cn: 'system:node:node-1', o: 'system:nodes' }, usage: ['clientAuth'] } as const;
  const cert = await signedLeaf(leaf, keyPem, await read('ca.crt'), path.join(secrets, 'ca.key'), 365);
  await mkdir(path.join(root, 'var/lib/kubelet/pki'), { recursive: true });
  await writeFile(path.join(root, KUBELET_CLIENT_CERT), `${cert}${keyPem}`, { mode: 0o600 });

  const reboot = await agent('run', '--root', root, '--once', '--nameserver', dns.nameserver);
  t.equal(reboot.code, 0, `the reboot gets to ready: ${reboot.stdout.split('\n').filter((l) => /failed/.test(l)).join(' ')}`);
  t.match(reboot.stdout, /bootstrap-token-expired /, 'the expiry is logged');
  const status = await agent('status', '--root', root);
  t.equal(status.code, 0, 'agent status says ready');
  t.match(status.stdout, /warnings:\n.*bootstrap token expired at 2021-06-01T00:00:00\.000Z; the kubelet keeps using its client certificate/);
  t.match(status.stdout, /pki +done[^]*units +done/, 'the phases after pki (the overlay, the units) ran');
});

t.test('a minion does not take a server with a certificate from another CA for its masters', async (t) => {
  const other = await makeTestSecrets('demo');
  t.teardown(() => rm(path.dirname(other), { recursive: true, force: true }));
  const impostor: Server = createServer(
    { cert: await readFile(path.join(other, 'apiserver.crt'), 'utf8'), key: await readFile(path.join(other, 'apiserver.key'), 'utf8') },
    (_req, res) => res.writeHead(200).end('ok'),
  );
  await new Promise<void>((r) => impostor.listen(0, '127.0.0.1', r));
  t.teardown(() => impostor.close());
  const port = (impostor.address() as { port: number }).port;
  const dns = await startTestDns('demo.k8s', { 'masters.demo.k8s': ['127.0.0.1'] });
  t.teardown(() => dns.close());
  const ca = await readFile(path.join(secrets, 'ca.crt'), 'utf8');
  const attempt = await attemptOnce(`https://masters.demo.k8s:${port}`, parseNameserver(dns.nameserver, 'test'), ca, new AbortController().signal);
  t.equal(attempt.ready, false, 'not ready: the impostor answered 200 but is not signed by our CA');
  t.match(attempt.ready ? '' : attempt.waitingOn, /readyz \(.*(certificate|SIGNATURE)/i);
});

/** Runs only the pki phase; returns the InputError it threw (or undefined) and whether it wrote anything. */
async function pkiOn(root: string): Promise<{ error?: InputError; wrote: boolean }> {
  const host = createHost({ root, write: () => {} });
  const role = await loadRole(host);
  if (role.state !== 'configured') throw new Error(`role file ${role.state}`);
  const ctx: PhaseContext = {
    host,
    config: role.config,
    nameserver: { host: '127.0.0.1', port: 53 },
    signal: new AbortController().signal,
    report: async () => {},
  };
  try {
    await pkiPhase.run(ctx);
    return { wrote: true };
  } catch (err) {
    if (!(err instanceof InputError)) throw err;
    const wrote = (await host.stat('/etc/kubernetes')) !== undefined || (await host.stat('/etc/containerd')) !== undefined;
    return { error: err, wrote };
  }
}

const at = (name: string) => `${SECRETS_DIR}/${name}`;

const badCases: {
  what: string;
  role: 'master' | 'minion';
  roleFile?: string;
  spoil: (dir: string) => Promise<void>;
  file: string;
  message: RegExp;
}[] = [
  { what: 'a key with a loose mode', role: 'master', spoil: (d) => chmod(path.join(d, 'sa.key'), 0o644), file: at('sa.key'), message: /mode 0644 is too open/ },
  { what: 'a certificate readable by the group', role: 'minion', spoil: (d) => chmod(path.join(d, 'ca.crt'), 0o640), file: at('ca.crt'), message: /mode 0640 is too open/ },
  { what: 'a secret not owned by root', role: 'minion', spoil: (d) => chown(path.join(d, 'bootstrap-token'), 65534, 65534), file: at('bootstrap-token'), message: /owned by uid 65534, not root/ },
  { what: 'a CA without its key on a master', role: 'master', spoil: (d) => unlink(path.join(d, 'ca.key')), file: at('ca.key'), message: /needs the CA key/ },
  {
    what: 'a serving certificate that does not cover the masters name',
    role: 'master',
    roleFile: 'CLUSTER_NAME=demo\nDNS_DOMAIN=corp.example\n',
    spoil: async () => {},
    file: at('apiserver.crt'),
    message: /does not cover masters\.demo\.corp\.example/,
  },
  {
    what: 'a serving certificate without the first service IP',
    role: 'master',
    roleFile: 'CLUSTER_NAME=demo\nSERVICE_CIDR=10.100.0.0/16\n',
    spoil: async () => {},
    file: at('apiserver.crt'),
    message: /does not cover IP 10\.100\.0\.1/,
  },
  {
    what: 'an API_ENDPOINT the serving certificate does not name',
    role: 'minion',
    roleFile: 'CLUSTER_NAME=demo\nAPI_ENDPOINT=https://10.0.0.5:6443\n',
    spoil: async () => {},
    file: '/etc/sysconfig/kubernetes-minions',
    message: /API_ENDPOINT https:\/\/10\.0\.0\.5:6443 names 10\.0\.0\.5, which the API server's certificate does not carry \(it names masters\.demo\.k8s, kubernetes, .*, 10\.96\.0\.1, 127\.0\.0\.1\)/,
  },
  {
    what: "an API_ENDPOINT the master's own certificate does not name",
    role: 'master',
    roleFile: 'CLUSTER_NAME=demo\nAPI_ENDPOINT=https://lb.example.com:6443\n',
    spoil: async () => {},
    file: '/etc/sysconfig/kubernetes-masters',
    message: /names lb\.example\.com, which \/etc\/kubeseed\/secrets\/apiserver\.crt does not carry \(it names masters\.demo\.k8s/,
  },
  { what: 'a malformed token', role: 'minion', spoil: (d) => writeFile(path.join(d, 'bootstrap-token'), 'abcdef.short\n'), file: at('bootstrap-token'), message: /malformed bootstrap token/ },
  { what: 'an expired token', role: 'master', spoil: (d) => writeFile(path.join(d, 'bootstrap-token.expires'), '2021-06-01T00:00:00Z\n'), file: at('bootstrap-token.expires'), message: /bootstrap token expired at 2021-06-01/ },
  { what: 'a CA key on a minion', role: 'minion', spoil: (d) => copyFile(path.join(secrets, 'ca.key'), path.join(d, 'ca.key')).then(() => chmod(path.join(d, 'ca.key'), 0o600)), file: at('ca.key'), message: /must not be on a minion/ },
  { what: 'a missing secret', role: 'minion', spoil: (d) => unlink(path.join(d, 'kube-proxy.key')), file: at('kube-proxy.key'), message: /missing secret kube-proxy\.key/ },
  { what: 'a key that belongs to another certificate', role: 'master', spoil: (d) => copyFile(path.join(secrets, 'scheduler.key'), path.join(d, 'apiserver.key')), file: at('apiserver.key'), message: /does not belong to its certificate/ },
  {
    what: 'a certificate from another CA',
    role: 'master',
    spoil: async (d) => {
      for (const ext of ['crt', 'key']) {
        await copyFile(path.join(secrets, `etcd-server.${ext}`), path.join(d, `apiserver.${ext}`));
        await chmod(path.join(d, `apiserver.${ext}`), 0o600);
      }
    },
    file: at('apiserver.crt'),
    message: /certificate is not signed by ca\.crt/,
  },
];

for (const c of badCases) {
  t.test(`refuses ${c.what} (${c.role}), names the file, writes nothing`, async (t) => {
    const root = await nodeRoot(c.role, secrets, c.roleFile ?? 'CLUSTER_NAME=demo\n');
    t.teardown(() => rm(root, { recursive: true, force: true }));
    await c.spoil(path.join(root, SECRETS_DIR));
    const { error, wrote } = await pkiOn(root);
    t.ok(error, 'an InputError');
    t.equal(error?.file, c.file);
    t.match(error?.describe(), c.message);
    t.notOk(wrote, 'nothing under /etc/kubernetes or /etc/containerd');
  });
}
