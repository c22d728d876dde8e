// Weave's router without Docker or the weave script: the agent's HTTP client against the weaver double on
// loopback (the real routes and forms), the double's command line as the real router parses it,
// weave.service's line as the double accepts it, the peer name, and the password file's checks.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile, chmod, chown } from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { createHost } from '../agent/host.js';
import { parseUnitFile, listValues } from '../agent/unit-file.js';
import { unitRoles } from '../agent/unit-match.js';
import { validateRole, ROLE_FILES } from '../agent/contract/role-file.js';
import { connectPeers, forgetPeers, routerStatus, WeaveRouterError, type WeaveRouterOptions } from '../agent/weave-router.js';
import { checkPasswordFile, renderPasswordFile, WEAVE_PASSWORD_FILE, MIN_PASSWORD_BYTES } from '../agent/weave-password.js';
import { peerNameFor, readPeerName, MACHINE_ID } from '../agent/weave-peer-name.js';
import { UNITS_DIR } from '../scripts/unit-binaries.js';
import { startWeaverDouble, WEAVER_DOUBLE } from './helpers/weave-double.js';
import { tempRoot } from './helpers/overlay.js';

const run = promisify(execFile);
const PASSWORD = 'correct horse battery staple';

/** Exit code and stderr of one run of the double (it exits at once on these command lines). */
async function weaver(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(WEAVER_DOUBLE, args, { env: { PATH: process.env.PATH, ...env } }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
  );
}

async function weaveUnit() {
  const file = path.join(UNITS_DIR, 'weave.service');
  const { unit, problems } = parseUnitFile(await readFile(file, 'utf8'), file);
  if (problems.length) throw problems[0];
  return unit;
}

t.test('connect with replace, forget, status: the router takes exactly what the client sends', async (t) => {
  const router = await startWeaverDouble(t);
  const opts: WeaveRouterOptions = { address: router.address, timeoutMs: 5_000 };
  await connectPeers(['10.0.0.6', '10.0.0.7'], true, opts);
  t.same(await router.targets(), ['10.0.0.6', '10.0.0.7']);
  await connectPeers(['10.0.0.7', '10.0.0.8'], true, opts);
  t.same(await router.targets(), ['10.0.0.7', '10.0.0.8'], 'replace=true swaps the whole set');
  await connectPeers(['10.0.0.9'], false, opts);
  t.same(await router.targets(), ['10.0.0.7', '10.0.0.8', '10.0.0.9'], 'without replace, peers are added');
  await forgetPeers(['10.0.0.7', '10.0.0.9'], opts);
  t.same(await router.targets(), ['10.0.0.8']);
  const status = await routerStatus(opts);
  t.equal(status.ready, true);
  t.match(status.text, /Targets: 1\n/);
  t.match(status.text, /Name: 02:00:00:00:0a:05\(/);
});

t.test('a peer the router refuses is an error naming it; the router stopped is an error saying so', async (t) => {
  const router = await startWeaverDouble(t);
  const opts: WeaveRouterOptions = { address: router.address, timeoutMs: 5_000 };
  const bad = await connectPeers(['10.0.0.6', ':6783'], true, opts).catch((e: unknown) => e);
  t.type(bad, WeaveRouterError);
  t.match((bad as Error).message, /^weave router connect: HTTP 400: invalid peer name ":6783", should be host\[:port\]$/);
  t.same(await router.targets(), ['10.0.0.6'], 'as in the real router, the good peers are still taken');

  await router.stop();
  const down = await forgetPeers(['10.0.0.6'], opts).catch((e: unknown) => e);
  t.type(down, WeaveRouterError);
  t.match((down as Error).message, `weave router forget: nothing listens on ${router.address} (is weave.service running?)`);
  await t.rejects(routerStatus(opts), { name: 'WeaveRouterError', route: 'status' });
});

t.test('the double parses as weaver does: unknown or single-dash flags refused with mflag’s message, exit 125', async (t) => {
  const unknown = await weaver(['--name=02:00:00:00:00:01', '--ipalloc-init-mode=observer']);
  t.equal(unknown.code, 125);
  t.match(unknown.stderr, /^flag provided but not defined: --ipalloc-init-mode\nSee '.*weaver --help'\.\n$/);
  const singleDash = await weaver(['-name', '02:00:00:00:00:01']);
  t.equal(singleDash.code, 125);
  t.match(singleDash.stderr, /^flag provided but not defined: -name\n/);
  const noValue = await weaver(['--http-addr']);
  t.match(noValue, { code: 125, stderr: /^flag needs an argument: --http-addr\n/ });
  const badInt = await weaver(['--port=abc']);
  t.match(badInt, { code: 125, stderr: /^invalid value "abc" for flag --port: / });
  t.match(await weaver(['--version']), { code: 0, stdout: /^weave 2\.9\.0-double\n$/ });
  t.match(await weaver(['--name=02:00:00:00:00:01', '--print-peer-name']), { code: 0, stdout: '02:00:00:00:00:01\n' });
});

t.test('the double refuses what weaver’s start-up refuses: bad --ipalloc-init, init without range, bad name', async (t) => {
  const bridge = ['--weave-bridge=kswbad0', '--name=02:00:00:00:00:01'];
  t.teardown(() => run('ip', ['link', 'del', 'kswbad0']).catch(() => undefined));
  t.match(await weaver([...bridge, '--ipalloc-init=consensus=3']), { code: 1, stderr: /--ipalloc-init specified without --ipalloc-range\./ });
  t.match(await weaver([...bridge, '--ipalloc-range=10.32.0.0/12', '--ipalloc-init=quorum=3']), { code: 1, stderr: /Unable to parse --ipalloc-init: unknown mode: quorum/ });
  t.match(await weaver([...bridge, '--ipalloc-range=10.32.0.0/12', '--ipalloc-init=observer=2']), { code: 1, stderr: /observer mode takes no parameter/ });
  t.match(await weaver(['--name=node-1']), { code: 1, stderr: /invalid peer name format: 'node-1'/ });
});

t.test('weave.service: both roles; its command line is one the router takes; the password only from a 0600 file', async (t) => {
  const unit = await weaveUnit();
  t.same(unitRoles(unit), ['master', 'minion']);
  const exec = listValues(unit, 'Service', 'ExecStart').map((e) => e.value).join(' ');
  t.notMatch(exec, /password|docker |\bweave launch\b/, 'no password flag, no Docker, no weave script');
  t.match(exec, /--http-addr=127\.0\.0\.1:6784/, 'the control API on loopback only');
  t.same(listValues(unit, 'Service', 'EnvironmentFile').map((e) => e.value), ['/run/kubeseed/weave.env', `-${WEAVE_PASSWORD_FILE}`]);
  for (const name of ['kubelet.service', 'kube-proxy.service', 'containerd.service']) {
    t.notMatch(await readFile(path.join(UNITS_DIR, name), 'utf8'), /weave-password/, `${name} never loads the password`);
  }

  // Run the unit's line as systemd would, with a weave.env the agent writes: the router starts, makes its
  // bridge with the peer name as MAC, and serves its API; the password reaches it, never its argv or log.
  const env: Record<string, string> = { WEAVE_NAME: '02:4b:53:00:00:05', IPALLOC_RANGE: '10.32.0.0/12', IPALLOC_INIT: 'consensus=3', PEERS: '10.0.0.6 10.0.0.7' };
  const [program, ...rest] = exec
    .replace('$PEERS', env.PEERS!)
    .replace(/\$\{(\w+)\}/g, (_, k: string) => env[k]!)
    .replace('%H', 'node-5')
    .split(/\s+/);
  t.equal(program, '/usr/local/bin/weaver');
  let args: string[] = [];
  const router = await startWeaverDouble(t, (address) => (args = rest.map((a) => a.replace('127.0.0.1:6784', address))), { WEAVE_PASSWORD: PASSWORD });
  const status = await routerStatus({ address: router.address, timeoutMs: 2_000 });
  t.match(status.text, /Encryption: enabled/);
  t.match(status.text, /Name: 02:4b:53:00:00:05\(node-5\)/);
  t.same(await router.targets(), ['10.0.0.6', '10.0.0.7'], 'every argument after the flags is a peer');
  const link = await run('ip', ['-o', 'link', 'show', router.bridge]);
  t.match(link.stdout, /link\/ether 02:4b:53:00:00:05/, 'the bridge exists, with the peer name as its MAC');
  t.notOk(args.some((a) => a.includes(PASSWORD)), 'not in argv');
  t.notOk((await router.log()).includes(PASSWORD), 'not in its log');
});

t.test('the peer name: a MAC from /etc/machine-id, stable, different per machine, locally administered', async (t) => {
  const a = peerNameFor('0123456789abcdef0123456789abcdef');
  t.match(a, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
  t.equal(peerNameFor('0123456789abcdef0123456789abcdef'), a, 'the same machine gets the same name');
  t.not(peerNameFor('fedcba9876543210fedcba9876543210'), a);
  t.equal(Number.parseInt(a.slice(0, 2), 16) & 0x03, 0x02, 'locally administered, unicast');
  t.notOk(a.replace(/:/g, '').includes('0123456789ab'), 'the machine ID itself is not exposed');
  t.match(await weaver([`--name=${a}`, '--print-peer-name']), { code: 0, stdout: `${a}\n` }, 'the router takes it');

  const root = await tempRoot(t);
  const host = createHost({ root, write: () => {} });
  await t.rejects(readPeerName(host), { name: 'InputError', file: path.join(root, MACHINE_ID), message: /no machine ID/ });
  await mkdir(path.join(root, 'etc'), { recursive: true });
  await writeFile(path.join(root, MACHINE_ID), '0123456789abcdef0123456789abcdef\n');
  t.equal(await readPeerName(host), a);
});

t.test('the password file: absent means unencrypted; loose, foreign, short or mixed files are refused by name', async (t) => {
  const root = await tempRoot(t);
  const host = createHost({ root, write: () => {} });
  const file = path.join(root, WEAVE_PASSWORD_FILE);
  t.same(await checkPasswordFile(host), { encrypted: false });
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, renderPasswordFile(PASSWORD), { mode: 0o600 });
  await chmod(file, 0o600);
  t.same(await checkPasswordFile(host), { encrypted: true });

  await chmod(file, 0o644);
  await t.rejects(checkPasswordFile(host), { file, message: /mode 0644 lets others read the Weave password/ });
  await chmod(file, 0o600);
  await chown(file, 1000, 0);
  await t.rejects(checkPasswordFile(host), { file, message: /owned by uid 1000, not root/ });
  await chown(file, 0, 0);
  await writeFile(file, 'WEAVE_PASSWORD=short\n');
  const short = await checkPasswordFile(host).catch((e: Error) => e);
  t.match(short, { file, line: 1, message: `WEAVE_PASSWORD is 5 bytes long; at least ${MIN_PASSWORD_BYTES} are required` });
  t.notMatch((short as Error).message, /short\b(?! one)/, 'the message never quotes the password');
  await writeFile(file, `WEAVE_PASSWORD="${PASSWORD}"\nCLUSTER_NAME=demo\n`);
  await t.rejects(checkPasswordFile(host), { file, line: 2, message: /CLUSTER_NAME: this file holds WEAVE_PASSWORD only/ });
  t.throws(() => renderPasswordFile('tiny'), { name: 'InputError', message: /4 bytes long/ });
});

t.test('a role file with WEAVE_PASSWORD is refused, naming the line and where the password belongs', async (t) => {
  const { problems } = validateRole('minion', ROLE_FILES.minion, `CLUSTER_NAME=demo\nWEAVE_PASSWORD="${PASSWORD}"\n`);
  t.equal(problems.length, 1);
  t.match(problems[0], { file: ROLE_FILES.minion, line: 2, message: /WEAVE_PASSWORD does not belong in the role file .*\/etc\/kubeseed\/weave-password\.env, mode 0600/ });
  t.notOk(problems[0]!.message.includes(PASSWORD));
});
