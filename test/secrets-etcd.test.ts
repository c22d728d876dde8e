// Debian's real etcd, started with the flags of units/etcd.service (paths and ports moved into a temp
// dir) and certificates from our secrets command: a client that trusts our etcd CA and presents the API
// server's etcd client certificate reads and writes; a client that trusts another CA refuses the server;
// the server refuses clients without a certificate, or with one from the cluster CA (a kubelet's, say).
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import * as https from 'node:https';
import { createServer } from 'node:net';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { parseUnitFile, listValues } from '../agent/unit-file.js';
import { UNITS_DIR } from '../scripts/unit-binaries.js';
import { makeTestSecrets, tempDir } from './helpers/secrets.js';

const ETCD = '/usr/bin/etcd';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

/** The unit's ExecStart, word-split as systemd does for our (unquoted) flags, moved into `dir`. */
async function etcdArgs(t: Test, secrets: string, dataDir: string, ports: { client: number; peer: number; metrics: number }): Promise<string[]> {
  const file = path.join(UNITS_DIR, 'etcd.service');
  const { unit } = parseUnitFile(await readFile(file, 'utf8'), file);
  const [program, ...args] = listValues(unit, 'Service', 'ExecStart')[0]!.value.split(/\s+/);
  t.equal(program, '/usr/local/bin/etcd', 'the unit runs etcd from /usr/local/bin (here: Debian\'s /usr/bin/etcd)');
  return args.map((a) =>
    a
      .replaceAll('${CLUSTER_NAME}', 'demo')
      .replaceAll('/etc/kubernetes/pki/', `${secrets}/`)
      .replaceAll('/var/lib/etcd', dataDir)
      .replaceAll(':2379', `:${ports.client}`)
      .replaceAll(':2380', `:${ports.peer}`)
      .replaceAll(':2381', `:${ports.metrics}`),
  );
}

interface Answer {
  status?: number;
  body?: string;
  error?: string;
}

function request(port: number, urlPath: string, tls: https.RequestOptions, body?: unknown): Promise<Answer> {
  return new Promise((resolve) => {
    const req = https.request(
      { host: '127.0.0.1', port, path: urlPath, method: body ? 'POST' : 'GET', servername: 'localhost', agent: false, timeout: 5000, ...tls },
      (res) => {
        let data = '';
        res.on('data', (c: Buffer) => (data += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, body: data }));
      },
    );
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

t.test('real etcd with our certificates: trusted client served, others refused', async (t) => {
  const secrets = await makeTestSecrets('demo');
  const other = await makeTestSecrets('demo');
  const dataDir = await tempDir('etcd-data');
  const ports = { client: await freePort(), peer: await freePort(), metrics: await freePort() };
  const args = await etcdArgs(t, secrets, dataDir, ports);
  let log = '';
  const etcd: ChildProcess = spawn(ETCD, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  etcd.stdout!.on('data', (c: Buffer) => (log += c.toString()));
  etcd.stderr!.on('data', (c: Buffer) => (log += c.toString()));
  t.teardown(async () => {
    etcd.kill('SIGTERM');
    await new Promise((r) => (etcd.exitCode !== null ? r(null) : etcd.once('exit', r)));
    await rm(dataDir, { recursive: true, force: true });
    await rm(path.dirname(secrets), { recursive: true, force: true });
    await rm(path.dirname(other), { recursive: true, force: true });
  });

  const read = (dir: string, name: string) => readFile(path.join(dir, name), 'utf8');
  const trusted: https.RequestOptions = {
    ca: await read(secrets, 'etcd-ca.crt'),
    cert: await read(secrets, 'apiserver-etcd-client.crt'),
    key: await read(secrets, 'apiserver-etcd-client.key'),
  };

  let health: Answer = {};
  for (let i = 0; i < 100 && etcd.exitCode === null; i++) {
    health = await request(ports.client, '/health', trusted);
    if (health.status === 200) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  if (health.status !== 200) t.comment(log.slice(-2000));
  t.equal(health.status, 200, "etcd serves /health to the API server's client certificate");
  t.match(health.body, /"health":"true"/);

  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const put = await request(ports.client, '/v3/kv/put', trusted, { key: b64('/registry/kubeseed'), value: b64('seeded') });
  t.equal(put.status, 200, 'writes');
  const range = await request(ports.client, '/v3/kv/range', trusted, { key: b64('/registry/kubeseed') });
  t.equal(range.status, 200, 'reads');
  t.equal(Buffer.from(JSON.parse(range.body!).kvs[0].value, 'base64').toString(), 'seeded');

  const distrusting = await request(ports.client, '/health', { ...trusted, ca: await read(other, 'etcd-ca.crt') });
  t.equal(distrusting.status, undefined, 'a client trusting another CA gets no answer');
  t.match(distrusting.error, /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|unable to verify/i, 'it refuses the server certificate');

  const anonymous = await request(ports.client, '/health', { ca: trusted.ca });
  t.equal(anonymous.status, undefined, 'no client certificate: no answer');
  t.ok(anonymous.error, `refused (${anonymous.error})`);

  const clusterCaClient = await request(ports.client, '/health', {
    ca: trusted.ca,
    cert: await read(secrets, 'kube-proxy.crt'),
    key: await read(secrets, 'kube-proxy.key'),
  });
  t.equal(clusterCaClient.status, undefined, 'a certificate from the cluster CA does not open etcd');
  t.ok(clusterCaClient.error, `refused (${clusterCaClient.error})`);
});
