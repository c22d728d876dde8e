import t, { type Test } from 'tap';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { Interrupted } from '../agent/abort.js';
import { parseNameserver, type Nameserver } from '../agent/dns.js';
import { createHost } from '../agent/host.js';
import type { PhaseContext, RoleConfig } from '../agent/phase.js';
import { runAgent } from '../agent/run.js';
import { backoffDelay, CA_FILE, waitForMasters, waitForMastersPhase, type WaitTiming } from '../agent/wait-for-masters.js';
import { startTestDns } from './helpers/dns.js';
import { until } from './helpers/until.js';

const FAST: WaitTiming = { baseMs: 10, capMs: 50, dnsTimeoutMs: 200, httpTimeoutMs: 300, random: Math.random };

interface Harness {
  ctx: PhaseContext;
  reports: (string | null | undefined)[];
  facts: Record<string, unknown>;
  abort: AbortController;
  root: string;
}

async function harness(t: Test, apiEndpoint: string, nameserver: Nameserver): Promise<Harness> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'agent-wait-'));
  t.teardown(() => fs.rm(root, { recursive: true, force: true }));
  const abort = new AbortController();
  const reports: (string | null | undefined)[] = [];
  const facts: Record<string, unknown> = {};
  const config: RoleConfig = {
    role: 'minion',
    file: '/etc/sysconfig/kubernetes-minions',
    cluster: 'demo',
    domain: 'k8s',
    apiEndpoint,
    vars: {},
  };
  const ctx: PhaseContext = {
    host: createHost({ root, write: () => undefined }),
    config,
    nameserver,
    signal: abort.signal,
    async report(u) {
      reports.push(u.waitingOn);
      Object.assign(facts, u.facts ?? {});
    },
  };
  return { ctx, reports, facts, abort, root };
}

/** An HTTP server whose /readyz answers whatever `answer.status` says (or hangs when it is 0). */
async function startApi(t: Test, answer: { status: number }, server: http.Server = http.createServer()) {
  const seen: { host?: string; url?: string }[] = [];
  server.on('request', (req, res) => {
    seen.push({ host: req.headers.host, url: req.url });
    if (answer.status === 0) return; // hang
    res.writeHead(req.url === '/readyz' ? answer.status : 404).end('ok');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections?.();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { port: (server.address() as AddressInfo).port, seen };
}

t.test('backoff doubles, is capped at about a second and is jittered', async (t) => {
  const timing = { baseMs: 100, capMs: 1000 };
  t.equal(backoffDelay(0, { ...timing, random: () => 0 }), 50);
  t.equal(backoffDelay(0, { ...timing, random: () => 0.999 }), 100);
  t.equal(backoffDelay(3, { ...timing, random: () => 0 }), 400);
  t.equal(backoffDelay(50, { ...timing, random: () => 0.999 }), 1000, 'never more than the cap');
  t.equal(backoffDelay(50, { ...timing, random: () => 0 }), 500, 'never less than half the cap: no busy loop');
});

t.test('NXDOMAIN: waits, says so, and goes on when the masters record appears', async (t) => {
  const dns = await startTestDns('demo.k8s', {});
  t.teardown(() => dns.close());
  const api = await startApi(t, { status: 200 });
  const h = await harness(t, `http://masters.demo.k8s:${api.port}`, parseNameserver(dns.nameserver));
  const done = waitForMasters(h.ctx, FAST);
  await until('the first wait report', () => h.reports.length > 0);
  t.match(h.reports[0], /^DNS masters\.demo\.k8s \(NXDOMAIN from 127\.0\.0\.1:\d+\)$/);
  dns.records.set('masters.demo.k8s', ['127.0.0.1']);
  t.same(await done, ['127.0.0.1']);
  t.equal(h.reports.at(-1), null, 'stops waiting');
  t.same(h.facts.masters, ['127.0.0.1']);
  t.same(api.seen.at(-1), { host: `masters.demo.k8s:${api.port}`, url: '/readyz' }, 'asks the resolved address with the name as Host');
  t.equal(h.reports.filter((r) => r).length, 1, 'the same reason is reported once, not at every attempt');
});

t.test('SERVFAIL and a silent nameserver are reported as such', async (t) => {
  const sock = dgram.createSocket('udp4');
  let mode: 'servfail' | 'silent' = 'servfail';
  sock.on('message', (msg, rinfo) => {
    if (mode === 'silent') return;
    const reply = Buffer.from(msg);
    reply[2] = (reply[2]! | 0x80) & 0xff; // QR
    reply[3] = ((reply[3]! & 0xf0) | 2) & 0xff; // RCODE=SERVFAIL
    sock.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  t.teardown(() => sock.close());
  const port = (sock.address() as AddressInfo).port;
  const h = await harness(t, 'http://masters.demo.k8s:1', { host: '127.0.0.1', port });
  const done = waitForMasters(h.ctx, FAST).catch((e) => e);
  await until('the first wait report', () => h.reports.length > 0);
  t.equal(h.reports[0], `DNS masters.demo.k8s (SERVFAIL from 127.0.0.1:${port})`);
  mode = 'silent';
  await until('a second wait report', () => h.reports.length > 1);
  t.equal(h.reports[1], `DNS masters.demo.k8s (timeout: 127.0.0.1:${port})`);
  h.abort.abort();
  t.type(await done, Interrupted, 'an abort ends the wait with Interrupted');
});

t.test('API answering 500, then hanging, then 200', async (t) => {
  const dns = await startTestDns('demo.k8s', { 'masters.demo.k8s': ['127.0.0.1'] });
  t.teardown(() => dns.close());
  const answer = { status: 500 };
  const api = await startApi(t, answer);
  const h = await harness(t, `http://masters.demo.k8s:${api.port}/`, parseNameserver(dns.nameserver));
  const done = waitForMasters(h.ctx, FAST);
  await until('the first wait report', () => h.reports.length > 0);
  t.equal(h.reports[0], `http://masters.demo.k8s:${api.port}/readyz (HTTP 500 from 127.0.0.1)`);
  answer.status = 0;
  await until('a second wait report', () => h.reports.length > 1);
  t.equal(h.reports[1], `http://masters.demo.k8s:${api.port}/readyz (no answer in 300 ms from 127.0.0.1)`);
  answer.status = 200;
  t.same(await done, ['127.0.0.1']);
});

t.test('API refusing connections on one master is skipped for a ready one', async (t) => {
  // 127.0.0.2 has nothing listening on the port (Linux routes all of 127/8 to lo).
  const api = await startApi(t, { status: 200 }, http.createServer());
  const dns = await startTestDns('demo.k8s', { 'masters.demo.k8s': ['127.0.0.2'] });
  t.teardown(() => dns.close());
  const h = await harness(t, `http://masters.demo.k8s:${api.port}`, parseNameserver(dns.nameserver));
  const done = waitForMasters(h.ctx, FAST);
  await until('the first wait report', () => h.reports.length > 0);
  t.equal(h.reports[0], `http://masters.demo.k8s:${api.port}/readyz (connection refused from 127.0.0.2)`);
  dns.records.set('masters.demo.k8s', ['127.0.0.2', '127.0.0.1']);
  t.same(await done, ['127.0.0.2', '127.0.0.1'], 'every master is published, the ready one answered');
});

/** A CA and a serving certificate from it naming `san` (e.g. `DNS:masters.demo.k8s`), made by openssl. */
async function servingPair(t: Test, san: string): Promise<{ ca: string; key: string; cert: string }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'agent-tls-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=demo-ca', '-keyout', 'ca.key', '-out', 'ca.crt');
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=kube-apiserver', '-keyout', 'api.key', '-out', 'api.csr');
  await fs.writeFile(path.join(dir, 'ext'), `subjectAltName=${san}\n`);
  openssl('x509', '-req', '-in', 'api.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-extfile', 'ext', '-out', 'api.crt');
  const read = (f: string) => fs.readFile(path.join(dir, f), 'utf8');
  return { ca: await read('ca.crt'), key: await read('api.key'), cert: await read('api.crt') };
}

async function installCa(root: string, pem: string): Promise<void> {
  await fs.mkdir(path.dirname(path.join(root, CA_FILE)), { recursive: true });
  await fs.writeFile(path.join(root, CA_FILE), pem);
}

t.test('https: verified with the CA under the root, by the name, not the address', async (t) => {
  const pair = await servingPair(t, 'DNS:masters.demo.k8s');
  const api = await startApi(t, { status: 200 }, https.createServer({ key: pair.key, cert: pair.cert }));
  const dns = await startTestDns('demo.k8s', { 'masters.demo.k8s': ['127.0.0.1'] });
  t.teardown(() => dns.close());
  const h = await harness(t, `https://masters.demo.k8s:${api.port}`, parseNameserver(dns.nameserver));
  const done = waitForMasters(h.ctx, FAST);
  await until('the first wait report', () => h.reports.length > 0);
  t.match(h.reports[0], /\((UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT)[^)]* from 127\.0\.0\.1\)$/, 'no CA yet: the certificate is not trusted');
  await installCa(h.root, pair.ca);
  t.same(await done, ['127.0.0.1'], 'trusted once the CA is installed');
  t.equal(api.seen.at(-1)?.host, `masters.demo.k8s:${api.port}`);
});

t.test('an API_ENDPOINT the certificate does not name ends the wait, and agent status says why', async (t) => {
  const pair = await servingPair(t, 'DNS:masters.demo.k8s, IP:10.96.0.1');
  const api = await startApi(t, { status: 200 }, https.createServer({ key: pair.key, cert: pair.cert }));
  const dns = await startTestDns('demo.k8s', { 'lb.demo.k8s': ['127.0.0.1'] });
  t.teardown(() => dns.close());
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'agent-wait-'));
  t.teardown(() => fs.rm(root, { recursive: true, force: true }));
  await fs.mkdir(path.join(root, 'etc/sysconfig'), { recursive: true });
  await fs.writeFile(path.join(root, 'etc/sysconfig/kubernetes-minions'), `CLUSTER_NAME=demo\nAPI_ENDPOINT=https://lb.demo.k8s:${api.port}\n`);
  await installCa(root, pair.ca);
  const code = await runAgent({
    host: createHost({ root, write: () => undefined }),
    once: true,
    nameserver: parseNameserver(dns.nameserver),
    signal: new AbortController().signal,
    agentVersion: 'test',
    phases: [waitForMastersPhase],
  });
  t.equal(code, 1, 'the wait ended as a failure instead of going on');
  const status = JSON.parse(await fs.readFile(path.join(root, 'run/kubeseed/status.json'), 'utf8'));
  t.equal(status.state, 'failed');
  t.match(status.errors[0], `wait-for-masters: https://lb.demo.k8s:${api.port}: the certificate at 127.0.0.1 does not name`);
  t.match(status.errors[0], /lb\.demo\.k8s.*it names DNS:masters\.demo\.k8s, IP Address:10\.96\.0\.1/, 'names both the endpoint host and what the certificate carries');
  t.equal(api.seen.length, 0, 'no request was sent to a server that could not prove it is a master');
});

t.test('a master whose certificate is not from the cluster CA ends the wait once the CA is installed', async (t) => {
  const ours = await servingPair(t, 'DNS:masters.demo.k8s');
  const theirs = await servingPair(t, 'DNS:masters.demo.k8s');
  const api = await startApi(t, { status: 200 }, https.createServer({ key: theirs.key, cert: theirs.cert }));
  const dns = await startTestDns('demo.k8s', { 'masters.demo.k8s': ['127.0.0.1'] });
  t.teardown(() => dns.close());
  const h = await harness(t, `https://masters.demo.k8s:${api.port}`, parseNameserver(dns.nameserver));
  await installCa(h.root, ours.ca);
  const err = await waitForMasters(h.ctx, FAST).catch((e: Error) => e);
  t.match(err, { message: /the certificate at 127\.0\.0\.1 is not signed by the cluster's CA \(\/etc\/kubernetes\/pki\/ca\.crt\): (UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN)/ });
});

t.test('one master with a foreign certificate and one refusing connections: still waiting, not ended', async (t) => {
  const ours = await servingPair(t, 'DNS:masters.demo.k8s');
  const theirs = await servingPair(t, 'DNS:masters.demo.k8s');
  const api = await startApi(t, { status: 200 }, https.createServer({ key: theirs.key, cert: theirs.cert }));
  // 127.0.0.2 listens on nothing at that port: refused, which a starting master cures.
  const dns = await startTestDns('demo.k8s', { 'masters.demo.k8s': ['127.0.0.1', '127.0.0.2'] });
  t.teardown(() => dns.close());
  const h = await harness(t, `https://masters.demo.k8s:${api.port}`, parseNameserver(dns.nameserver));
  await installCa(h.root, ours.ca);
  const done = waitForMasters(h.ctx, FAST).catch((e: Error) => e);
  await until('a wait naming the refused 127.0.0.2', () => h.reports.some((r) => /connection refused from 127\.0\.0\.2/.test(r ?? '')));
  h.abort.abort();
  t.type(await done, Interrupted, 'still waiting until told to stop');
});

t.test('abort during a hanging request ends the wait promptly', async (t) => {
  const dns = await startTestDns('demo.k8s', { 'masters.demo.k8s': ['127.0.0.1'] });
  t.teardown(() => dns.close());
  const api = await startApi(t, { status: 0 });
  const h = await harness(t, `http://masters.demo.k8s:${api.port}`, parseNameserver(dns.nameserver));
  const done = waitForMasters(h.ctx, { ...FAST, httpTimeoutMs: 60_000 }).catch((e) => e);
  await until('a request to the API', () => api.seen.length > 0);
  h.abort.abort();
  t.type(await done, Interrupted);
});
