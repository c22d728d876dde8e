// Crash safety of the shipped bundle: `node dist/agent.js run --root R --once` is SIGKILLed right after each
// of its side effects in turn (test/fixtures/crash-double.cjs counts them; see crashPoints for the one
// sampling: temp-file creations, one per directory), for a master and a minion, against
// a real DNS server, a real /readyz server and real `systemctl --root`. After every crash the root holds no
// torn file (each generated file is absent or whole; status.json parses), and one more run without the
// double leaves the root byte-identical (content and modes) to an uninterrupted run's.
import type { Test } from 'tap';
import { execFile } from 'node:child_process';
import { X509Certificate, createHash, createPrivateKey } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import type { Role } from '../../agent/dns-names.js';
import { APISERVER_MEMBER_CERT, ETCD_MEMBER_CERT } from '../../agent/etcd-files.js';
import { startTestDns } from './dns.js';
import { prepareBundle, REPO, startAgent, type AgentResult } from './bundle.js';
import { makeTestSecrets, nodeRoot } from './secrets.js';

const CRASH_DOUBLE = path.join(REPO, 'test/fixtures/crash-double.cjs');
const STATUS = 'run/kubeseed/status.json';
/** Agents run side by side while the matrix is walked (each on its own root). */
const PARALLEL = 3;

/** This machine's own address: each node waits until its role's record lists it. */
export const SELF = Object.values(os.networkInterfaces())
  .flat()
  .find((i) => i && i.family === 'IPv4' && !i.internal)?.address;

/**
 * The cluster's records with this machine in both (a master and a minion are both on the overlay): the API
 * answers on 127.0.0.1, SELF makes the master's own record list it.
 */
export const CLUSTER_RECORDS = { 'masters.demo.k8s': ['127.0.0.1', ...(SELF ? [SELF] : [])], 'minions.demo.k8s': ['10.9.0.7', ...(SELF ? [SELF] : [])] };

/** `run --root R --once`, optionally through the crash double. */
function agentRun(bundle: string, root: string, nameserver: string, crash?: { at: number; log?: string }): Promise<AgentResult> {
  const env = crash
    ? { NODE_OPTIONS: `--require=${CRASH_DOUBLE}`, CRASH_DOUBLE_AT: String(crash.at), ...(crash.log ? { CRASH_DOUBLE_LOG: crash.log } : {}) }
    : {};
  return startAgent(bundle, ['run', '--root', root, '--once', '--nameserver', nameserver], env).done;
}

const ISO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

/** The agent's JSON documents minus what legitimately differs between runs: times, and how much this run changed. */
function comparable(text: string): string {
  const strip = (v: unknown): unknown => {
    if (typeof v === 'string') return ISO_TIME.test(v) ? '<time>' : v;
    if (Array.isArray(v)) return v.map(strip);
    if (v && typeof v === 'object')
      return Object.fromEntries(Object.entries(v).filter(([k]) => k !== 'changed').map(([k, x]) => [k, strip(x)]));
    return v;
  };
  return JSON.stringify(strip(JSON.parse(text)), null, 1);
}

const isAgentJson = (rel: string) => /^(run|var\/lib)\/kubeseed\/[^/]+\.json$/.test(rel);

/**
 * Certificates a master issues itself (agent/etcd.ts): a fresh key and serial each time, so two runs never
 * agree byte for byte. What must agree is what they are: the certificate by its issuer, subject and names;
 * the key by being the one of the certificate next to it.
 */
const ISSUED_ON_NODE = new Map<string, { crt: string; key: boolean }>(
  [ETCD_MEMBER_CERT, APISERVER_MEMBER_CERT].flatMap(({ crt, key }) => [
    [crt.slice(1), { crt: crt.slice(1), key: false }],
    [key.slice(1), { crt: crt.slice(1), key: true }],
  ]),
);

async function issuedIdentity(root: string, rel: string, text: string): Promise<string> {
  const which = ISSUED_ON_NODE.get(rel)!;
  try {
    const cert = new X509Certificate(which.key ? await fs.readFile(path.join(root, which.crt)) : text);
    if (!which.key) return `certificate issuer=${cert.issuer} subject=${cert.subject} names=${cert.subjectAltName}`;
    return cert.checkPrivateKey(createPrivateKey(text)) ? `the key of ${which.crt}` : `a key that is not ${which.crt}'s`;
  } catch (err) {
    return `unreadable: ${(err as Error).message}`;
  }
}

/** Every path: kind, mode, link target or content (times normalised in the agent's own JSON). */
export async function snapshot(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (rel: string) => {
    for (const name of (await fs.readdir(path.join(root, rel))).sort()) {
      const sub = path.posix.join(rel, name);
      const st = await fs.lstat(path.join(root, sub));
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isSymbolicLink()) out.set(sub, `link -> ${await fs.readlink(path.join(root, sub))}`);
      else if (st.isDirectory()) {
        out.set(sub, `dir ${mode}`);
        await walk(sub);
      } else {
        const text = await fs.readFile(path.join(root, sub), 'utf8');
        const content = ISSUED_ON_NODE.has(sub) ? await issuedIdentity(root, sub, text) : text;
        out.set(sub, `${mode} ${isAgentJson(sub) ? comparable(text) : createHash('sha256').update(content).digest('hex')}`);
      }
    }
  };
  await walk('');
  return out;
}

export function differences(got: Map<string, string>, want: Map<string, string>): string[] {
  const diffs: string[] = [];
  for (const [k, v] of want) if (got.get(k) !== v) diffs.push(got.has(k) ? `${k} differs` : `${k} missing`);
  for (const k of got.keys()) if (!want.has(k)) diffs.push(`${k} extra`);
  return diffs;
}

/**
 * What a crash may leave that is not torn: for each regular file, either nothing, the final content, or
 * (status and weave state) a whole JSON document. Temp files and the dead agent's lock are allowed: the
 * next run removes them, which the byte-identical check after it proves.
 */
async function tornFiles(root: string, final: Map<string, string>): Promise<string[]> {
  const torn: string[] = [];
  for (const [rel, entry] of await snapshot(root).catch(() => new Map<string, string>())) {
    if (entry.startsWith('dir') || entry.startsWith('link') || /\.kubeseed-\d+\.tmp$/.test(rel) || rel === 'run/kubeseed/agent.lock') continue;
    if (isAgentJson(rel)) continue; // comparable() parsed it: a torn document would have thrown
    const want = final.get(rel);
    if (want !== undefined && want.split(' ')[1] !== entry.split(' ')[1]) torn.push(rel);
  }
  return torn;
}

const copyTree = (from: string, to: string) => promisify(execFile)('cp', ['-a', from, to]);

/**
 * A node root as user-data and systemd leave it (role file, the role's secrets, Weave's password file, a
 * machine ID) with the image's real units.
 */
export async function template(t: Test, role: Role, apiPort: number, weavePassword = 'crash test password'): Promise<string> {
  const secrets = await makeTestSecrets('demo');
  t.teardown(() => fs.rm(path.dirname(secrets), { recursive: true, force: true }));
  const roleFile = role === 'minion' ? `CLUSTER_NAME=demo\nAPI_ENDPOINT=http://masters.demo.k8s:${apiPort}\n` : 'CLUSTER_NAME=demo\n';
  const root = await nodeRoot(role, secrets, roleFile);
  t.teardown(() => fs.rm(root, { recursive: true, force: true }));
  await fs.mkdir(path.join(root, 'etc/kubeseed'), { recursive: true });
  await fs.writeFile(path.join(root, 'etc/kubeseed/weave-password.env'), `WEAVE_PASSWORD='${weavePassword}'\n`, { mode: 0o600 });
  await fs.chmod(path.join(root, 'etc/kubeseed/weave-password.env'), 0o600);
  await fs.writeFile(path.join(root, 'etc/machine-id'), '0123456789abcdef0123456789abcdef\n');
  // The image's real unit set: the units phase enables the role's share with systemctl --root.
  await fs.mkdir(path.join(root, 'usr/lib/systemd/system'), { recursive: true });
  await fs.mkdir(path.join(root, 'etc/systemd/system'), { recursive: true });
  for (const unit of await fs.readdir(path.join(REPO, 'units')))
    await fs.copyFile(path.join(REPO, 'units', unit), path.join(root, 'usr/lib/systemd/system', unit));
  return root;
}

export async function readyzServer(t: Test): Promise<number> {
  const server = http.createServer((req, res) => res.writeHead(req.url === '/readyz' ? 200 : 404).end('ok'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as AddressInfo).port;
}

/**
 * Which side effects to crash after (1-based): every one a reader of the node's paths can see (renames,
 * directories, modes, unlinks, the lock, programs run). Creating a temp file changes nothing a reader sees
 * but leaves litter; those points differ only in which file, so the first temp in each directory stands for
 * the rest (two agent runs per point is what the matrix costs).
 */
function crashPoints(effects: readonly string[]): number[] {
  const dirs = new Set<string>();
  return effects.flatMap((e, i) => {
    const temp = /^open-create (.*)\/[^/]+\.kubeseed-\d+\.tmp$/.exec(e);
    if (!temp) return [i + 1];
    if (dirs.has(temp[1]!)) return [];
    dirs.add(temp[1]!);
    return [i + 1];
  });
}

async function pool<T>(items: T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(Array.from({ length: width }, async () => {
    for (let item = queue.shift(); item !== undefined; item = queue.shift()) await fn(item);
  }));
}

/** The whole matrix for one role: one uninterrupted run, then one crash and one re-run per side effect. */
export async function crashMatrix(t: Test, role: Role): Promise<void> {
  const { bundle, work } = await prepareBundle(t, 'run-crash');
  if (!SELF) throw new Error('this test needs a non-loopback IPv4 address on this machine');
  const api = await readyzServer(t);
  const dns = await startTestDns('demo.k8s', CLUSTER_RECORDS);
  t.teardown(() => dns.close());
  const base = await template(t, role, api);

  // The uninterrupted run, through the double with no kill: it lists the side effects to crash after.
  const reference = path.join(work, `${role}-reference`);
  await copyTree(base, reference);
  const effectsLog = path.join(work, `${role}-effects`);
  const clean = await agentRun(bundle, reference, dns.nameserver, { at: 0, log: effectsLog });
  t.equal(clean.code, 0, 'the uninterrupted run exits 0', { output: clean.stdout + clean.stderr });
  const effects = (await fs.readFile(effectsLog, 'utf8')).split('\n').filter(Boolean);
  const want = await snapshot(reference);
  t.match(want.get(STATUS), /"state": "ready"/, 'the reference run got to ready');
  t.ok(effects.some((e) => e.startsWith('exec systemctl')), 'the matrix includes systemctl runs');
  t.ok(effects.some((e) => e.startsWith('open-create')), 'and file writes');

  const points = crashPoints(effects);
  const failures: string[] = [];
  await pool(
    points,
    PARALLEL,
    async (n) => {
      const root = path.join(work, `${role}-crash-${n}`);
      await copyTree(base, root);
      try {
        const crashed = await agentRun(bundle, root, dns.nameserver, { at: n });
        if (crashed.signal !== 'SIGKILL') {
          failures.push(`#${n} (${effects[n - 1]}): expected a SIGKILL, got exit ${crashed.code} ${crashed.stderr}`);
          return;
        }
        const torn = await tornFiles(root, want).catch((err: Error) => [`unreadable: ${err.message}`]);
        if (torn.length) failures.push(`#${n} (${effects[n - 1]}): torn after the crash: ${torn.join(', ')}`);
        const again = await agentRun(bundle, root, dns.nameserver);
        if (again.code !== 0) {
          failures.push(`#${n} (${effects[n - 1]}): re-run exited ${again.code}: ${again.stdout}${again.stderr}`);
          return;
        }
        const diffs = differences(await snapshot(root), want);
        if (diffs.length) failures.push(`#${n} (${effects[n - 1]}): after the re-run: ${diffs.join(', ')}`);
      } finally {
        await fs.rm(root, { recursive: true, force: true });
      }
    },
  );
  t.same(failures, [], `every crash point recovers to the uninterrupted root`);
  t.comment(
    `${role}: ${points.length} crash points of ${effects.length} side effects (${effects.filter((e) => e.startsWith('exec')).length} program runs), each followed by a clean re-run`,
  );
}
