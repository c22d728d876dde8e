// The master double (test/fixtures/master-double/kube-apiserver) stands in for kube-apiserver in the
// test image: with our secrets it must answer /readyz over TLS that a client trusting only the cluster
// CA accepts for masters.<cluster>.<domain>, refuse to look trusted to anyone else, and tell systemd
// it is ready.
import t from 'tap';
import { spawn, execFile } from 'node:child_process';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { promisify } from 'node:util';

const DOUBLE = 'test/fixtures/master-double/kube-apiserver';

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

function get(port: number, path: string, ca: string | undefined): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, servername: 'masters.demo.k8s', headers: { Host: 'masters.demo.k8s:6443' }, ...(ca && { ca }) },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

t.test('serves /readyz over TLS with the cluster CA and notifies systemd', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'master-double-'));
  await promisify(execFile)('npx', ['tsx', 'scripts/secrets.ts', '--cluster', 'demo', '--out', join(dir, 'pki')]);
  const ca = await readFile(join(dir, 'pki/ca.crt'), 'utf8');
  const notifySocket = join(dir, 'notify');
  // A datagram listener standing in for systemd's notify socket (Node has no AF_UNIX datagrams).
  const listener = spawn('python3', ['-c', 'import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint("bound",flush=True)\nprint(s.recv(100).decode(),flush=True)', notifySocket]);
  let heard = '';
  const notified = new Promise<void>((resolve) =>
    listener.stdout.on('data', (d: Buffer) => {
      heard += d.toString();
      if (heard.includes('READY=1')) resolve();
    }),
  );
  await new Promise<void>((resolve) => listener.stdout.once('data', () => resolve()));
  const port = await freePort();
  const server = spawn(DOUBLE, [
    `--secure-port=${port}`,
    '--bind-address=127.0.0.1',
    '--etcd-servers=https://127.0.0.1:2379',
    `--tls-cert-file=${join(dir, 'pki/apiserver.crt')}`,
    `--tls-private-key-file=${join(dir, 'pki/apiserver.key')}`,
    '--authorization-mode=Node,RBAC',
  ], { env: { ...process.env, NOTIFY_SOCKET: notifySocket }, stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => {
    server.kill();
    listener.kill();
  });
  const ready = await Promise.race([notified.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 20_000))]);
  t.ok(ready, `systemd hears READY=1 within 20 s (heard ${JSON.stringify(heard)})`);
  t.same(await get(port, '/readyz', ca), { status: 200, body: 'ok' });
  t.same(await get(port, '/readyz?verbose', ca), { status: 200, body: 'ok' });
  t.equal((await get(port, '/api/v1/nodes', ca)).status, 404);
  await t.rejects(get(port, '/readyz', undefined), /self-signed|unable to verify|issuer/i, 'a client without our CA does not trust it');
});

t.test('refuses to start without its certificate', async (t) => {
  const r = await promisify(execFile)(DOUBLE, ['--secure-port=1']).then(
    () => ({ code: 0, stderr: '' }),
    (e: { code: number; stderr: string }) => e,
  );
  t.equal(r.code, 1);
  t.match(r.stderr, /--tls-cert-file=FILE is required/);
});

t.test('refuses a flag kube-apiserver does not take, as the real one does', async (t) => {
  const r = await promisify(execFile)(DOUBLE, ['--secure-port=1', '--insecure-port=8080']).then(
    () => ({ code: 0, stderr: '' }),
    (e: { code: number; stderr: string }) => e,
  );
  t.equal(r.code, 1);
  t.match(r.stderr, 'Error: unknown flag: --insecure-port');
});
