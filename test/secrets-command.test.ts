// `npm run secrets` as an operator runs it: what it makes (checked with openssl itself), the modes, a
// re-run that keeps everything, a partial re-issue under the same CA, and each bad input refused with a
// message that names it, leaving DIR as it was.
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFile, readdir, rm, stat, unlink, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { parse, stringify } from 'yaml';
import { SECRET_FILES } from '../agent/secrets-layout.js';
import { tempDir } from './helpers/secrets.js';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: { ...process.env, NO_COLOR: '1' } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

const secrets = (...args: string[]) => run(process.execPath, ['--import', 'tsx', 'scripts/secrets.ts', ...args]);
const openssl = (...args: string[]) => run('openssl', args);

async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of await readdir(dir)) {
    const s = await stat(path.join(dir, name));
    out[name] = `${(s.mode & 0o777).toString(8)} ${await readFile(path.join(dir, name), 'utf8')}`;
  }
  return out;
}

async function fresh(t: Test, ...extra: string[]): Promise<string> {
  const parent = await tempDir('secrets-cmd');
  t.teardown(() => rm(parent, { recursive: true, force: true }));
  const dir = path.join(parent, 'demo');
  const result = await secrets('--cluster', 'demo', '--out', dir, ...extra);
  t.equal(result.code, 0, `secrets exits 0 (${result.stderr.trim()})`);
  return dir;
}

t.test('makes every secret, keys 0600, DIR 0700; openssl verifies the serving cert and its SANs', async (t) => {
  const dir = await fresh(t);
  t.equal((await stat(dir)).mode & 0o777, 0o700);
  for (const { name, private: secret } of SECRET_FILES) {
    t.equal((await stat(path.join(dir, name))).mode & 0o777, secret ? 0o600 : 0o644, `${name} mode`);
  }
  const verified = await openssl('verify', '-CAfile', path.join(dir, 'ca.crt'), path.join(dir, 'apiserver.crt'));
  t.equal(verified.code, 0);
  t.match(verified.stdout, /apiserver\.crt: OK/);
  const sans = await openssl('x509', '-noout', '-ext', 'subjectAltName', '-in', path.join(dir, 'apiserver.crt'));
  for (const san of [
    'DNS:masters.demo.k8s',
    'DNS:kubernetes',
    'DNS:kubernetes.default',
    'DNS:kubernetes.default.svc',
    'DNS:kubernetes.default.svc.cluster.local',
    'IP Address:10.96.0.1',
    'IP Address:127.0.0.1',
  ]) {
    t.ok(sans.stdout.split(/,|\n/).map((s) => s.trim()).includes(san), `SAN ${san}`);
  }
  // Each certificate chains to the CA the components trust for it.
  for (const [leaf, ca] of [
    ['etcd-server', 'etcd-ca'],
    ['apiserver-etcd-client', 'etcd-ca'],
    ['front-proxy-client', 'front-proxy-ca'],
    ['kube-proxy', 'ca'],
    ['controller-manager', 'ca'],
  ]) {
    const r = await openssl('verify', '-CAfile', path.join(dir, `${ca}.crt`), path.join(dir, `${leaf}.crt`));
    t.equal(r.code, 0, `${leaf}.crt verifies against ${ca}.crt`);
  }
  const wrongCa = await openssl('verify', '-CAfile', path.join(dir, 'etcd-ca.crt'), path.join(dir, 'apiserver.crt'));
  t.not(wrongCa.code, 0, 'the etcd CA does not vouch for the API server');
});

t.test('a node whose clock is 4 minutes behind accepts every certificate (notBefore is backdated)', async (t) => {
  const dir = await fresh(t);
  const behind = String(Math.floor((Date.now() - 4 * 60_000) / 1000));
  for (const [leaf, ca] of [['apiserver', 'ca'], ['etcd-server', 'etcd-ca'], ['front-proxy-client', 'front-proxy-ca'], ['ca', 'ca']]) {
    const verified = await openssl('verify', '-attime', behind, '-CAfile', path.join(dir, `${ca}.crt`), path.join(dir, `${leaf}.crt`));
    t.equal(verified.code, 0, `${leaf}.crt verifies at a clock 4 min behind: ${verified.stderr.trim()}`);
  }
});

t.test('admin kubeconfig: masters name, our CA, a system:masters client certificate', async (t) => {
  const dir = await fresh(t);
  const kc = JSON.parse(await readFile(path.join(dir, 'admin.kubeconfig'), 'utf8'));
  t.equal(kc.clusters[0].cluster.server, 'https://masters.demo.k8s:6443');
  const ca = Buffer.from(kc.clusters[0].cluster['certificate-authority-data'], 'base64').toString();
  t.equal(ca, await readFile(path.join(dir, 'ca.crt'), 'utf8'));
  const cert = new X509Certificate(Buffer.from(kc.users[0].user['client-certificate-data'], 'base64'));
  t.match(cert.subject, /O=system:masters/);
  t.ok(cert.verify(new X509Certificate(ca).publicKey), 'signed by the cluster CA');
});

t.test('bootstrap token is <6>.<16> with an RFC 3339 expiry; output names files, never secrets', async (t) => {
  const parent = await tempDir('secrets-cmd');
  t.teardown(() => rm(parent, { recursive: true, force: true }));
  const dir = path.join(parent, 'x');
  const result = await secrets('--cluster', 'demo', '--out', dir, '--token-days', '2');
  const token = await readFile(path.join(dir, 'bootstrap-token'), 'utf8');
  t.match(token, /^[a-z0-9]{6}\.[a-z0-9]{16}\n$/);
  const expires = new Date((await readFile(path.join(dir, 'bootstrap-token.expires'), 'utf8')).trim());
  const days = (expires.getTime() - Date.now()) / 86_400_000;
  t.ok(days > 1.9 && days <= 2, `expires in ${days.toFixed(2)} days`);
  t.match(result.stdout, /created bootstrap-token\n/);
  t.notMatch(result.stdout + result.stderr, token.trim().split('.')[1]!);
  t.notMatch(result.stdout + result.stderr, /PRIVATE KEY/);
});

t.test('--domain and --service-cidr shape the serving certificate', async (t) => {
  const dir = await fresh(t, '--domain', 'corp.example', '--service-cidr', '10.100.0.0/16');
  const sans = await openssl('x509', '-noout', '-ext', 'subjectAltName', '-in', path.join(dir, 'apiserver.crt'));
  t.match(sans.stdout, /DNS:masters\.demo\.corp\.example/);
  t.match(sans.stdout, /IP Address:10\.100\.0\.1\b/);
});

t.test('a re-run keeps everything; a deleted pair is re-issued under the same CA', async (t) => {
  const dir = await fresh(t);
  const before = await snapshot(dir);
  const again = await secrets('--cluster', 'demo', '--out', dir);
  t.equal(again.code, 0);
  t.match(again.stdout, /0 created, 27 kept/);
  t.same(await snapshot(dir), before, 'every file byte-identical, same modes');

  await unlink(path.join(dir, 'apiserver.crt'));
  await unlink(path.join(dir, 'apiserver.key'));
  const reissue = await secrets('--cluster', 'demo', '--out', dir);
  t.equal(reissue.code, 0);
  t.match(reissue.stdout, /created apiserver\.key\ncreated apiserver\.crt\n/);
  t.match(reissue.stdout, /2 created, 25 kept/);
  const after = await snapshot(dir);
  t.equal(after['ca.crt'], before['ca.crt'], 'the CA is kept');
  t.not(after['apiserver.crt'], before['apiserver.crt']);
  t.equal((await openssl('verify', '-CAfile', path.join(dir, 'ca.crt'), path.join(dir, 'apiserver.crt'))).code, 0);
});

t.test('an admin.kubeconfig written as YAML (before kubeseed wrote JSON) is kept, rewritten as the same JSON document', async (t) => {
  const dir = await fresh(t);
  const file = path.join(dir, 'admin.kubeconfig');
  const json = await readFile(file, 'utf8');
  await writeFile(file, stringify(JSON.parse(json)), { mode: 0o600 });
  const again = await secrets('--cluster', 'demo', '--out', dir);
  t.equal(again.code, 0, again.stderr);
  t.match(again.stdout, /0 created, 27 kept/);
  t.equal(await readFile(file, 'utf8'), json, 'the same document, as JSON');
  t.equal((await stat(file)).mode & 0o777, 0o600);
});

t.test('bad input: refused, named, DIR unchanged', async (t) => {
  const dir = await fresh(t);
  const before = await snapshot(dir);
  const refuse = async (what: string, args: string[], message: RegExp, code = 1) => {
    const r = await secrets(...args);
    t.equal(r.code, code, `${what}: exit ${code}`);
    t.match(r.stderr, message, what);
  };
  await refuse('bad cluster name', ['--cluster', 'a.b', '--out', dir], /^secrets: --cluster must be an RFC 1123 label \(letters, digits, -\), got "a\.b"\nusage: /, 2);
  await refuse('bad --days', ['--cluster', 'demo', '--out', dir, '--days', '1.5'], /^secrets: --days must be a whole number of days from 1 to 999999, got "1\.5"\n/, 2);
  await refuse('missing --cluster', ['--out', dir], /^secrets: --cluster is required\n/, 2);
  await refuse('--out is a file', ['--cluster', 'demo', '--out', path.join(dir, 'ca.crt')], /ca\.crt: not a directory/);
  await refuse('unknown flag', ['--cluster', 'demo', '--out', dir, '--nope'], /^secrets: unknown flag --nope\nusage: /, 2);
  await refuse('host bits in the service CIDR', ['--cluster', 'demo', '--out', dir, '--service-cidr', '10.96.0.1/12'], /--service-cidr: bad service CIDR \(host bits set\)/);
  await refuse('another cluster name for the same DIR', ['--cluster', 'other', '--out', dir], /apiserver\.crt: serving certificate does not cover masters\.other\.k8s/);
  t.same(await snapshot(dir), before);

  await unlink(path.join(dir, 'scheduler.key'));
  await refuse('half a pair', ['--cluster', 'demo', '--out', dir], /scheduler\.crt: scheduler\.crt is there but scheduler\.key is not/);
  t.notOk((await readdir(dir)).includes('scheduler.key'), 'nothing re-made');

  const broken = await fresh(t);
  await writeFile(path.join(broken, 'bootstrap-token.expires'), '2020-01-01T00:00:00Z\n');
  await refuse('expired token', ['--cluster', 'demo', '--out', broken], /bootstrap-token\.expires: bootstrap token expired at 2020-01-01T00:00:00\.000Z/);
  await writeFile(path.join(broken, 'bootstrap-token'), 'not-a-token\n');
  await refuse('malformed token', ['--cluster', 'demo', '--out', broken], /bootstrap-token: malformed bootstrap token/);
});
