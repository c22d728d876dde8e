// cluster-check against real SSH servers on loopback: it reads every node's `agent status --json`,
// says which are not ready, and never talks to a host whose key nobody reported.
import t from 'tap';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { main } from '../scripts/cluster-check.js';
import { checkNodes, reportFromStatus } from '../scripts/check/node-report.js';
import { openSession, parseTargets } from '../scripts/check/ssh-session.js';
import {
  fingerprint,
  hostKeysFromConsole,
  isKnownHostKey,
  knownHostsLines,
  parseKnownHosts,
} from '../scripts/check/known-hosts.js';
import { InputError } from '../agent/errors.js';
import { createHost } from '../agent/host.js';
import { AGENT_STATES, exitCodeFor, initialStatus, writeStatus, type AgentState, type Status } from '../agent/status.js';
import { generateKeyPair, startSshServer, type TestSshServer } from './helpers/ssh-server.js';

const client = generateKeyPair();

// Documents as the agent writes them (its own initialStatus, its own exit code for the state), not shapes of our own.
const BASE = await initialStatus(createHost({ root: await mkdtemp(join(tmpdir(), 'check-doc-')) }), '0.1.0', new Date());

function statusAnswer(state: AgentState, fields: Partial<Status>) {
  const status: Status = { ...BASE, ...fields, state };
  return (command: string) =>
    command === 'agent status --json' ? { code: exitCodeFor(state), stdout: JSON.stringify(status) } : { code: 127, stdout: '' };
}

function knownHostsFor(servers: TestSshServer[]): string {
  return servers
    .map((s) => {
      const [type, blob] = s.hostPublicKey.split(' ');
      return knownHostsLines('127.0.0.1', s.port, [{ type: type as string, blob: blob as string }]);
    })
    .join('');
}

async function files(knownHosts: string) {
  const dir = await mkdtemp(join(tmpdir(), 'cluster-check-'));
  await writeFile(join(dir, 'id'), client.privateKey, { mode: 0o600 });
  await writeFile(join(dir, 'known_hosts'), knownHosts);
  return { key: join(dir, 'id'), knownHosts: join(dir, 'known_hosts') };
}

async function run(argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, (s) => out.push(s), (s) => err.push(s));
  return { code, out: out.join('\n'), err: err.join('\n') };
}

t.test('a ready master and a waiting minion: the table shows both, exit 1', async (t) => {
  const master = await startSshServer(client.publicKey, statusAnswer('ready', { role: 'master', phase: 'units' }));
  const minion = await startSshServer(
    client.publicKey,
    statusAnswer('waiting', { role: 'minion', phase: 'wait-for-masters', waitingOn: 'https://masters.demo.k8s:6443/readyz' }),
  );
  t.teardown(() => Promise.all([master.close(), minion.close()]));
  const f = await files(knownHostsFor([master, minion]));
  const hosts = `127.0.0.1:${master.port},127.0.0.1:${minion.port}`;
  const r = await run(['--hosts', hosts, '--key', f.key, '--known-hosts', f.knownHosts]);
  t.equal(r.code, 1);
  t.match(r.out, new RegExp(`127\\.0\\.0\\.1:${master.port}\\s+ready\\s+master\\s+units`));
  t.match(r.out, new RegExp(`127\\.0\\.0\\.1:${minion.port}\\s+waiting\\s+minion\\s+wait-for-masters\\s+https://masters\\.demo\\.k8s:6443/readyz`));
  t.match(r.out, /1 of 2 nodes ready/);
  t.same(master.commands, ['agent status --json']);
  t.same(minion.commands, ['agent status --json']);
});

t.test('exit 3 without a wait is a node still running its phases', async (t) => {
  const node = await startSshServer(client.publicKey, statusAnswer('running', { role: 'minion', phase: 'units' }));
  t.teardown(() => node.close());
  const f = await files(knownHostsFor([node]));
  const r = await run(['--hosts', `127.0.0.1:${node.port}`, '--key', f.key, '--known-hosts', f.knownHosts]);
  t.equal(r.code, 1);
  t.match(r.out, /running\s+minion\s+units/);
});

t.test('every node ready: exit 0, and --json carries each status document whole', async (t) => {
  const servers = await Promise.all(
    [1, 2, 3].map((i) => startSshServer(client.publicKey, statusAnswer('ready', { role: 'minion', phase: 'units', members: i }))),
  );
  t.teardown(() => Promise.all(servers.map((s) => s.close())));
  const f = await files(knownHostsFor(servers));
  const hosts = servers.map((s) => `127.0.0.1:${s.port}`).join(',');
  const r = await run(['--hosts', hosts, '--key', f.key, '--known-hosts', f.knownHosts, '--json']);
  t.equal(r.code, 0, r.err);
  const reports = JSON.parse(r.out);
  t.same(
    reports.map((x: { state: string; status: { members: number } }) => [x.state, x.status.members]),
    [['ready', 1], ['ready', 2], ['ready', 3]],
  );
});

t.test('an unknown host key is refused before any command runs', async (t) => {
  const honest = await startSshServer(client.publicKey, statusAnswer('ready', { role: 'master', phase: 'units' }));
  const impostor = await startSshServer(client.publicKey, statusAnswer('ready', { role: 'master', phase: 'units' }));
  t.teardown(() => Promise.all([honest.close(), impostor.close()]));
  // known_hosts holds the honest server's key under the impostor's address: what a swapped machine looks like.
  const [type, blob] = honest.hostPublicKey.split(' ');
  const f = await files(knownHostsLines('127.0.0.1', impostor.port, [{ type: type as string, blob: blob as string }]));
  const r = await run(['--hosts', `127.0.0.1:${impostor.port}`, '--key', f.key, '--known-hosts', f.knownHosts]);
  t.equal(r.code, 1);
  const impostorPrint = fingerprint(impostor.hostPublicKey.split(' ')[1] as string);
  t.match(r.out, `host key ${impostorPrint} is not in known_hosts, refusing to connect`);
  t.same(impostor.commands, [], 'the impostor never got a command');
});

t.test('a key known for another port of the same address is not trusted', async (t) => {
  const server = await startSshServer(client.publicKey, statusAnswer('ready', { role: 'master', phase: 'units' }));
  t.teardown(() => server.close());
  const [type, blob] = server.hostPublicKey.split(' ');
  const knownHosts = parseKnownHosts(knownHostsLines('127.0.0.1', server.port + 1, [{ type: type as string, blob: blob as string }]));
  await t.rejects(
    openSession({ host: '127.0.0.1', port: server.port }, { username: 'root', privateKey: client.privateKey, knownHosts }),
    /refusing to connect/,
  );
  t.same(server.commands, []);
});

t.test('readFile: a file\'s text over one SFTP channel kept for the session, undefined for a missing file, no exec', async (t) => {
  const text = `${JSON.stringify({ ...BASE, state: 'waiting' })}\n`;
  const server = await startSshServer(client.publicKey, () => ({ code: 127, stdout: '' }), {
    files: (path) => (path === '/run/kubeseed/status.json' ? text : undefined),
  });
  t.teardown(() => server.close());
  const [type, blob] = server.hostPublicKey.split(' ');
  const knownHosts = parseKnownHosts(knownHostsLines('127.0.0.1', server.port, [{ type: type as string, blob: blob as string }]));
  const session = await openSession({ host: '127.0.0.1', port: server.port }, { username: 'root', privateKey: client.privateKey, knownHosts });
  t.teardown(() => session.close());
  t.equal(await session.readFile('/run/kubeseed/status.json'), text, 'the whole file, as text');
  t.equal(await session.readFile('/run/kubeseed/nothing.json'), undefined, 'no such file: undefined, not an error');
  t.equal(await session.readFile('/run/kubeseed/status.json'), text, 'read again');
  t.same(server.reads, ['/run/kubeseed/status.json', '/run/kubeseed/nothing.json', '/run/kubeseed/status.json']);
  t.equal(server.sftpSessions, 1, 'one SFTP channel for every read of the session');
  t.same(server.commands, [], 'no command ran (no shell forked on the node)');
});

t.test('readFile: an SFTP channel that dies mid-read fails the read at once, and the next read opens another', async (t) => {
  let opens = 0;
  const server = await startSshServer(client.publicKey, () => ({ code: 127, stdout: '' }), {
    files: () => {
      opens += 1;
      if (opens === 1) throw new Error('sftp-server killed');
      return 'ok';
    },
  });
  t.teardown(() => server.close());
  const [type, blob] = server.hostPublicKey.split(' ');
  const knownHosts = parseKnownHosts(knownHostsLines('127.0.0.1', server.port, [{ type: type as string, blob: blob as string }]));
  const session = await openSession({ host: '127.0.0.1', port: server.port }, { username: 'root', privateKey: client.privateKey, knownHosts, timeoutMs: 5000 });
  t.teardown(() => session.close());
  // Not waiting out the timeout: ssh2 answers the failed fstat with a stat on the dead channel, which nobody answers.
  await t.rejects(session.readFile('/f'), /^\/f: the SFTP channel closed$/, 'the read in flight fails at once (not a missing file, not a timeout)');
  t.equal(await session.readFile('/f'), 'ok');
  t.equal(server.sftpSessions, 2, 'a second channel, on the same connection');
});

t.test('a client key the node does not accept: unreachable, with the reason', async (t) => {
  const server = await startSshServer(generateKeyPair().publicKey, statusAnswer('ready', { role: 'master' }));
  t.teardown(() => server.close());
  const [type, blob] = server.hostPublicKey.split(' ');
  const knownHosts = parseKnownHosts(knownHostsLines('127.0.0.1', server.port, [{ type: type as string, blob: blob as string }]));
  const [report] = await checkNodes([{ host: '127.0.0.1', port: server.port }], {
    username: 'root',
    privateKey: client.privateKey,
    knownHosts,
  });
  t.equal(report?.state, 'unreachable');
  t.match(report?.detail, /authentication/i);
  t.same(server.commands, []);
});

t.test('a node without the agent, or with garbage output, is unreachable, not ready', async (t) => {
  const noAgent = await startSshServer(client.publicKey, () => ({ code: 127, stdout: '' }));
  const garbage = await startSshServer(client.publicKey, () => ({ code: 0, stdout: 'hello' }));
  t.teardown(() => Promise.all([noAgent.close(), garbage.close()]));
  const f = await files(knownHostsFor([noAgent, garbage]));
  const r = await run(['--hosts', `127.0.0.1:${noAgent.port},127.0.0.1:${garbage.port}`, '--key', f.key, '--known-hosts', f.knownHosts, '--json']);
  t.equal(r.code, 1);
  t.same(JSON.parse(r.out).map((x: { state: string }) => x.state), ['unreachable', 'unreachable']);
});

t.test('a port that accepts and hangs up (QEMU forwarding to a guest without sshd yet) is unreachable, not a crash', async (t) => {
  const { createServer } = await import('node:net');
  const server = createServer((socket) => socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  const reports = await checkNodes([{ host: '127.0.0.1', port }, { host: '127.0.0.1', port }], { username: 'root', privateKey: client.privateKey, knownHosts: [] });
  t.same(reports.map((r) => r.state), ['unreachable', 'unreachable']);
  t.match(reports[0]?.detail, /before handshake|ECONNRESET|closed/i);
});

t.test('a node that does not answer in time reads "timeout", a refused connection "unreachable"', async (t) => {
  const { createServer } = await import('node:net');
  // Accepts and stays silent: a guest whose sshd is too slow to send its banner within the timeout.
  const sockets = new Set<import('node:net').Socket>();
  const silent = createServer((socket) => sockets.add(socket));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    silent.close();
  });
  // A port nobody listens on: bound then closed, so the kernel refuses it.
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const closedPort = (closed.address() as { port: number }).port;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  const reports = await checkNodes(
    [{ host: '127.0.0.1', port: (silent.address() as { port: number }).port }, { host: '127.0.0.1', port: closedPort }],
    { username: 'root', privateKey: client.privateKey, knownHosts: [], timeoutMs: 1000 },
  );
  t.same(reports.map((r) => r.state), ['timeout', 'unreachable']);
  t.match(reports[0]?.detail, /no SSH handshake within 1 s/);
  t.match(reports[1]?.detail, /connection refused/);
});

t.test('bad usage and bad input exit 2 with a message naming the problem', async (t) => {
  t.match(await run(['--hosts', 'a']), { code: 2, err: /^cluster-check: --key is required\nusage: npm run cluster-check/ });
  t.match(await run(['--bogus']), { code: 2 });
  const f = await files('not a known_hosts line\n');
  t.match(await run(['--hosts', 'a', '--key', f.key, '--known-hosts', f.knownHosts]), {
    code: 2,
    err: new RegExp(`${f.knownHosts}:1: expected "HOSTS KEYTYPE BASE64-KEY`),
  });
  t.match(await run(['--hosts', 'a', '--key', '/nonexistent/id', '--known-hosts', f.knownHosts]), { code: 2 });
  t.throws(() => parseTargets('host;rm -rf /'), InputError);
  t.throws(() => parseTargets('a:70000'), InputError);
  t.throws(() => parseTargets(' , '), InputError);
  t.same(parseTargets('10.0.0.1,node-2.example:2222,[::1]:22'), [
    { host: '10.0.0.1', port: 22 },
    { host: 'node-2.example', port: 2222 },
    { host: '::1', port: 22 },
  ]);
});

t.test('the CLI process exits 1 when a node is not ready', async (t) => {
  const server = await startSshServer(client.publicKey, statusAnswer('running', { role: 'minion', phase: 'wait-for-masters' }));
  t.teardown(() => server.close());
  const f = await files(knownHostsFor([server]));
  const child = await promisify(execFile)('npx', ['tsx', 'scripts/cluster-check.ts', '--hosts', `127.0.0.1:${server.port}`, '--key', f.key, '--known-hosts', f.knownHosts]).then(
    () => ({ code: 0, stdout: '' }),
    (e: { code: number; stdout: string }) => e,
  );
  t.equal(child.code, 1);
  t.match(child.stdout, /0 of 1 nodes ready/);
});

t.test('known_hosts: plain, bracketed and hashed names; markers refused', async (t) => {
  const { publicKey } = generateKeyPair();
  const [type, blob] = publicKey.split(' ') as [string, string];
  const key = Buffer.from(blob, 'base64');
  const salt = Buffer.from('0123456789abcdefghij');
  const { createHmac } = await import('node:crypto');
  const hashed = `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update('[10.0.0.9]:2222').digest('base64')}`;
  const entries = parseKnownHosts(`# comment\n10.0.0.1,node1 ${type} ${blob}\n[10.0.0.2]:2200 ${type} ${blob} c\n${hashed} ${type} ${blob}\n`);
  t.ok(isKnownHostKey(entries, '10.0.0.1', 22, key));
  t.ok(isKnownHostKey(entries, 'NODE1', 22, key));
  t.ok(isKnownHostKey(entries, '10.0.0.2', 2200, key));
  t.notOk(isKnownHostKey(entries, '10.0.0.2', 22, key));
  t.ok(isKnownHostKey(entries, '10.0.0.9', 2222, key));
  t.notOk(isKnownHostKey(entries, '10.0.0.9', 22, key));
  t.notOk(isKnownHostKey(entries, '10.0.0.1', 22, Buffer.from(generateKeyPair().publicKey.split(' ')[1] as string, 'base64')));
  t.throws(() => parseKnownHosts(`\n@revoked * ${type} ${blob}\n`, 'kh'), { message: /markers like @revoked/, line: 2, file: 'kh' });
});

t.test('host keys from a console log: the last keys_to_console block', async (t) => {
  const a = generateKeyPair().publicKey.split(' ');
  const b = generateKeyPair().publicKey.split(' ');
  const block = (k: string[]) =>
    `-----BEGIN SSH HOST KEY KEYS-----\r\n${k[0]} ${k[1]} root@node\r\n-----END SSH HOST KEY KEYS-----\r\n`;
  const log = `[  1.0] booting\r\n${block(a)}[ 40.1] reboot\r\n${block(b)}login:`;
  t.same(hostKeysFromConsole(log), [{ type: b[0], blob: b[1] }]);
  t.same(hostKeysFromConsole('no keys here'), []);
  t.equal(knownHostsLines('127.0.0.1', 22, hostKeysFromConsole(log)), `127.0.0.1 ${b[0]} ${b[1]}\n`);
});

t.test('cluster-check and agent status agree on every state and exit code: the agent’s own documents, read by both', async (t) => {
  const agentStatus = (root: string) =>
    promisify(execFile)(process.execPath, ['dist/agent.js', 'status', '--json', '--root', root]).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
    );
  for (const [state, { exit, node }] of Object.entries(AGENT_STATES) as [AgentState, (typeof AGENT_STATES)[AgentState]][]) {
    const root = await mkdtemp(join(tmpdir(), 'check-agree-'));
    t.teardown(() => rm(root, { recursive: true, force: true }));
    await writeStatus(createHost({ root }), { ...BASE, state, role: 'minion', phase: 'units' });
    const answer = await agentStatus(root);
    t.equal(answer.code, exit, `${state}: agent status exits ${exit}`);
    t.equal(reportFromStatus('node', answer).state, node, `${state}: cluster-check calls the node ${node}`);
  }
  // Before the agent writes anything: no role file is "unconfigured", a role file is "starting".
  const empty = await mkdtemp(join(tmpdir(), 'check-agree-'));
  t.teardown(() => rm(empty, { recursive: true, force: true }));
  t.equal(reportFromStatus('node', await agentStatus(empty)).state, 'unconfigured', 'no role file: unconfigured');
  await mkdir(join(empty, 'etc/sysconfig'), { recursive: true });
  await writeFile(join(empty, 'etc/sysconfig/kubernetes-minions'), 'CLUSTER_NAME=demo\n');
  t.equal(reportFromStatus('node', await agentStatus(empty)).state, 'running', 'a role file and no document yet: running');
  // An answer the agent never gives is not read as a state.
  t.equal(reportFromStatus('node', { code: 0, stdout: JSON.stringify({ ...BASE, state: 'waiting' }), stderr: '' }).state, 'unreachable', 'exit 0 with a waiting document');
});
