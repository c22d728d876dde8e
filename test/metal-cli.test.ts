// `npm run metal -- ...` as a user runs it: the built dist/metal.js (copied where no node_modules is) in a
// real child process, real signals, real dnsmasq.
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import { copyFile, mkdtemp, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { queryA } from '../agent/dns.js';
import { until } from './helpers/until.js';
import { askUdp, frame, parseResponse, rawQuery, tcpClient } from './helpers/dns-raw.js';

const run = promisify(execFile);
// `npm test` builds dist/ first, as it does for the agent bundle.
const bundleDir = await mkdtemp(path.join(tmpdir(), 'metal-bundle-'));
t.teardown(() => rm(bundleDir, { recursive: true, force: true }));
await copyFile(path.resolve('dist/metal.js'), path.join(bundleDir, 'metal.js'));
const METAL = [path.join(bundleDir, 'metal.js')];

const machine = (n: number, role = 'minion') => `  - {mac: "52:54:00:00:00:${n.toString(16).padStart(2, '0')}", hostname: h${n}, address: 10.1.0.${n}, role: ${role}}`;
const inventory = (...lines: string[]) => ['cluster: cli', 'machines:', machine(1, 'master'), ...lines, ''].join('\n');

async function metal(args: string[]) {
  return run(process.execPath, [...METAL, ...args]).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
  );
}

async function tempDir(t: { teardown(fn: () => unknown): void }) {
  const dir = await mkdtemp(path.join(tmpdir(), 'metal-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

t.test('check: ok with a summary, or file:line: message and exit 1', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'inv.yaml');
  await writeFile(file, inventory(machine(2), machine(3)));
  const ok = await metal(['check', '--inventory', file]);
  t.equal(ok.code, 0);
  t.equal(ok.stdout, `${file}: ok: cluster cli.k8s, 1 master(s), 2 minion(s)\n`);
  await writeFile(file, inventory(machine(2), machine(2)));
  const bad = await metal(['check', '--inventory', file]);
  t.equal(bad.code, 1);
  t.equal(bad.stderr, `metal: ${file}:5: duplicate MAC 52:54:00:00:00:02 (first used on line 4)\n`);
  const usage = await metal(['check']);
  t.equal(usage.code, 2);
  t.match(usage.stderr, /--inventory is required\nusage:/);
  for (const [flag, value] of [
    ['--rate-limit', 'many'],
    ['--max-tcp', '1e3'],
    ['--tcp-idle', '0'],
  ]) {
    const bad = await metal(['serve', '--inventory', file, '--image', path.dirname(file), flag!, value!]);
    t.equal(bad.code, 2, `${flag} ${value}`);
    t.match(bad.stderr, new RegExp(`^metal: ${flag} (must be a number|needs a value).*\\nusage:`), `${flag} ${value}: named, with the usage`);
  }
  // A folder or file named on the command line that is not there: refused before anything starts, naming it.
  const pidFile = path.join(dir, 'metal.pid');
  const noImage = await metal(['serve', '--inventory', file, '--image', path.join(dir, 'no-image'), '--pid-file', pidFile]);
  t.equal(noImage.code, 2, 'a missing --image folder is a usage error');
  t.equal(noImage.stderr.split('\n')[0], `metal: --image ${JSON.stringify(path.join(dir, 'no-image'))} is not an existing directory`);
  const noPassword = await metal(['serve', '--inventory', file, '--image', dir, '--weave-password-file', path.join(dir, 'nope'), '--pid-file', pidFile]);
  t.equal(noPassword.code, 2);
  t.equal(noPassword.stderr.split('\n')[0], `metal: --weave-password-file ${JSON.stringify(path.join(dir, 'nope'))}: cannot read: ENOENT`);
  await t.rejects(readFile(pidFile), { code: 'ENOENT' }, 'no PID file left behind');
  const none = await metal([]);
  t.equal(none.stderr.split('\n')[0], 'metal: a command is required (serve, dnsmasq-conf or check)', 'no command: says so, not "--inventory is required"');
});

t.test('dnsmasq-conf: a config the real dnsmasq accepts, for the inventory machines only', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'inv.yaml');
  await writeFile(file, inventory(machine(2)));
  const out = await metal(['dnsmasq-conf', '--inventory', file, '--interface', 'enp1s0', '--server-address', '192.168.100.1', '--http-port', '8081']);
  t.equal(out.code, 0, out.stderr);
  const conf = out.stdout;
  t.match(conf, /^port=0$/m, 'no DNS from dnsmasq');
  t.match(conf, /^dhcp-range=192\.168\.100\.1,proxy$/m, 'proxy-DHCP');
  t.match(conf, /^interface=enp1s0$/m);
  t.match(conf, /^dhcp-host=52:54:00:00:00:01,set:kubeseed$/m);
  t.match(conf, /^dhcp-host=52:54:00:00:00:02,set:kubeseed$/m);
  t.match(conf, /^tftp-root=\/usr\/lib\/ipxe$/m);
  t.match(conf, /^pxe-service=tag:kubeseed,tag:!ipxe,x86PC,.*,undionly\.kpxe$/m);
  t.match(conf, /^pxe-service=tag:kubeseed,tag:!ipxe,X86-64_EFI,.*,ipxe\.efi$/m);
  t.match(conf, /^pxe-service=tag:kubeseed,tag:ipxe,x86PC,.*,http:\/\/192\.168\.100\.1:8081\/boot\.ipxe$/m);
  const confFile = path.join(dir, 'dnsmasq.conf');
  await writeFile(confFile, conf);
  const check = await run('dnsmasq', ['--test', `--conf-file=${confFile}`]);
  t.match(check.stderr, /syntax check OK/);
  const bad = await metal(['dnsmasq-conf', '--inventory', file, '--server-address', 'my-server']);
  t.equal(bad.code, 1);
  t.match(bad.stderr, /--server-address must be this server's IPv4 address/);
});

t.test('serve: answers, reloads on SIGHUP without dropping requests, keeps the old inventory when the new one is bad', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'inv.yaml');
  await writeFile(file, inventory(machine(2)));
  const pidFile = path.join(dir, 'metal.pid');
  const child = spawn(process.execPath, [...METAL, 'serve', '--inventory', file, '--image', dir, '--dns-port', '0', '--http-port', '0', '--pid-file', pidFile, '--log-queries'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const lines: string[] = [];
  const waiters: { match: RegExp; resolve: (line: string) => void }[] = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push(line);
    for (const w of waiters.filter((w) => w.match.test(line))) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(line);
    }
  });
  // Bounded: a server that never says it would otherwise hang the file until tap's own timeout.
  const nextLine = (match: RegExp) =>
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`metal serve logged no line matching ${match} within 30 s; last lines: ${lines.slice(-3).join(' / ')}`)), 30_000);
      waiters.push({ match, resolve: (line) => (clearTimeout(timer), resolve(line)) });
    });

  const started = await nextLine(/^metal serving /);
  const httpPort = Number(/http=127\.0\.0\.1:(\d+)/.exec(started)?.[1]);
  const ns = { host: '127.0.0.1', port: Number(/dns=127\.0\.0\.1:(\d+)/.exec(started)?.[1]) };
  t.equal(await readFile(pidFile, 'utf8'), `${child.pid}\n`, 'the PID file names the server process itself');
  t.same((await queryA('minions.cli.k8s', ns)).addresses, ['10.1.0.2']);
  const second = await metal(['serve', '--inventory', file, '--image', dir, '--dns-port', '0', '--http-port', '0', '--pid-file', pidFile]);
  t.equal(second.code, 1);
  t.equal(second.stderr, `metal: ${pidFile}: a metal server is already running as pid ${child.pid}\n`);

  // Requests keep flowing while the inventory is swapped under them.
  let stop = false;
  const failures: string[] = [];
  let served = 0;
  const load = (async () => {
    while (!stop) {
      const [dns, http] = await Promise.all([
        queryA('masters.cli.k8s', ns).catch((e: Error) => e),
        fetch(`http://127.0.0.1:${httpPort}/ipxe?mac=52:54:00:00:00:01`).then((r) => r.status, (e: Error) => e),
      ]);
      if (dns instanceof Error || dns.rcode !== 'NOERROR' || dns.addresses[0] !== '10.1.0.1') failures.push(`dns: ${JSON.stringify(dns)}`);
      if (http !== 200) failures.push(`http: ${String(http)}`);
      served++;
    }
  })();
  const moreRounds = async (n: number) => {
    const target = served + n;
    await until(`${n} more rounds of DNS and HTTP requests to the metal server`, () => served >= target || failures.length > 0);
  };

  await moreRounds(3);
  await writeFile(file, inventory(machine(2), machine(3)));
  let reloaded = nextLine(/^metal reload/);
  child.kill('SIGHUP');
  t.match(await reloaded, /^metal reloaded cluster=cli domain=k8s machines=3$/);
  t.same((await queryA('minions.cli.k8s', ns)).addresses, ['10.1.0.2', '10.1.0.3'], 'the new inventory is served');

  await writeFile(file, inventory(machine(2), machine(3), '  - {mac: "52:54:00:00:00:04", hostname: h4, address: 10.1.0.4, role: chief}'));
  await moreRounds(3);
  reloaded = nextLine(/^metal reload/);
  child.kill('SIGHUP');
  t.equal(await reloaded, `metal reload failed, still serving the previous inventory: ${file}:6: unknown role "chief" (expected master or minion)`);
  t.same((await queryA('minions.cli.k8s', ns)).addresses, ['10.1.0.2', '10.1.0.3'], 'the previous inventory is still served');

  await moreRounds(3);
  stop = true;
  await load;
  t.ok(served > 0, `requests were served during the reloads (${served} rounds)`);
  t.same(failures, [], 'no request failed or saw a half-loaded inventory');
  t.ok(lines.some((l) => l === 'dns udp masters.cli.k8s A NOERROR answers=1'), 'DNS requests are logged');

  const counters = nextLine(/^dns counters /);
  child.kill('SIGUSR1');
  t.match(await counters, /^dns counters queries=\d+ answers=NOERROR:\d+ dropped=response:0,malformed:0,rate-limited:0,bad-source:0,send-failed:0 tcp=open:0,accepted:\d+,refused:0,idle-closed:0$/);

  // An idle TCP client does not hold the stop up (RFC 7766 lets the server close it).
  const idle = net.connect(ns.port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => idle.once('connect', resolve).once('error', reject));
  idle.on('error', () => {});
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const stopping = Date.now();
  child.kill('SIGTERM');
  const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running after 1 s'), 1000))]);
  t.equal(code, 0, 'SIGTERM stops it cleanly within a second with a TCP client connected');
  t.comment(`stopped in ${Date.now() - stopping} ms`);
  idle.destroy();
  t.equal(lines.at(-1), 'metal stopped');
  t.match(lines.at(-2), /^dns counters queries=/, 'the counters once more at stop');
  await t.rejects(readFile(pidFile), { code: 'ENOENT' }, 'the PID file is removed');
});

t.test('serve with a DNS worker: the caps hold for the server as a whole, the counters add up, SIGTERM stops both', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'inv.yaml');
  await writeFile(file, inventory(machine(2)));
  const child = spawn(process.execPath, [...METAL, 'serve', '--inventory', file, '--image', dir, '--dns-port', '0', '--http-port', '0', '--pid-file', path.join(dir, 'metal.pid'), '--dns-workers', '1', '--max-tcp', '2'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const lines = createInterface({ input: child.stdout });
  const nextLine = (match: RegExp, what: string) =>
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no line ${what} within 30 s`)), 30_000);
      const onLine = (line: string) => {
        if (!match.test(line)) return;
        clearTimeout(timer);
        lines.off('line', onLine);
        resolve(line);
      };
      lines.on('line', onLine);
    });
  const started = await nextLine(/^metal serving /, 'metal serving');
  const ns = { host: '127.0.0.1', port: Number(/dns=127\.0\.0\.1:(\d+)/.exec(started)?.[1]) };

  for (let i = 0; i < 10; i++) t.equal((await queryA(i % 2 ? 'masters.cli.k8s' : 'nobody.cli.k8s', ns)).rcode, i % 2 ? 'NOERROR' : 'NXDOMAIN');
  // --max-tcp 2 over the server and its worker: one each, handed out in turn, so the third connection is closed at once.
  const sockets = Array.from({ length: 3 }, () => net.connect(ns.port, '127.0.0.1').on('error', () => {}));
  t.teardown(() => sockets.forEach((s) => s.destroy()));
  await Promise.all(sockets.map((s) => new Promise((resolve) => s.once('connect', resolve))));
  const closed = await Promise.race([
    Promise.any(sockets.map((s, i) => new Promise<number>((resolve) => s.once('close', () => resolve(i))))),
    new Promise<string>((resolve) => setTimeout(() => resolve('none closed within 5 s'), 5000)),
  ]);
  t.equal(typeof closed, 'number', 'one of three connections is closed at the cap');

  const counters = nextLine(/^dns counters /, 'dns counters');
  child.kill('SIGUSR1');
  // Each process lists the rcodes in the order it first answered them: either order is the same sum.
  t.match(
    await counters,
    /^dns counters queries=10 answers=(NXDOMAIN:5,NOERROR:5|NOERROR:5,NXDOMAIN:5) dropped=response:0,malformed:0,rate-limited:0,bad-source:0,send-failed:0 tcp=open:2,accepted:2,refused:1,idle-closed:0$/,
    'both processes counted, each once',
  );

  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running after 1 s'), 1000))]);
  t.equal(code, 0, 'SIGTERM stops the server and its worker within a second with two TCP clients connected');
  const allClosed = Promise.all(sockets.map((s) => (s.closed ? Promise.resolve() : new Promise((resolve) => s.once('close', resolve)))));
  t.equal(await Promise.race([allClosed.then(() => 'closed'), new Promise((r) => setTimeout(() => r('a client still connected after 1 s'), 1000))]), 'closed', 'the server closed the idle connections');
});

t.test('a DNS worker that dies is replaced: logged with its PID; its successor serves the UDP socket and the TCP connections handed to it', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'inv.yaml');
  await writeFile(file, inventory(machine(2)));
  const child = spawn(process.execPath, [...METAL, 'serve', '--inventory', file, '--image', dir, '--dns-port', '0', '--http-port', '0', '--pid-file', path.join(dir, 'metal.pid'), '--dns-workers', '1'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const seen: string[] = [];
  createInterface({ input: child.stdout }).on('line', (line) => seen.push(line));
  const logged = (match: RegExp, what: string) => until(what, () => seen.some((l) => match.test(l)));
  await logged(/^metal serving /, 'metal serving');
  const port = Number(/dns=127\.0\.0\.1:(\d+)/.exec(seen.find((l) => l.startsWith('metal serving '))!)?.[1]);
  const worker = async () => Number((await readFile(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8')).trim().split(/\s+/)[0] || 0);
  // What a process holds on the DNS port, from its descriptors' socket inodes in /proc/net: whether it has the
  // shared UDP socket, and the client ports of the TCP connections it answers.
  const holds = async (pid: number) => {
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    const links = await Promise.all(fds.map((fd) => readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')));
    const inodes = new Set(links.map((l) => /^socket:\[(\d+)\]$/.exec(l)?.[1]));
    const rows = async (proto: string) =>
      (await readFile(`/proc/net/${proto}`, 'utf8')).split('\n').slice(1).map((l) => l.trim().split(/\s+/)).filter((f) => f.length > 9 && inodes.has(f[9]!) && parseInt(f[1]!.split(':')[1]!, 16) === port);
    return { udp: (await rows('udp')).length > 0, tcp: new Set((await rows('tcp')).map((f) => parseInt(f[2]!.split(':')[1]!, 16))) };
  };
  type Client = Awaited<ReturnType<typeof tcpClient>>;
  const clients: Client[] = [];
  t.teardown(() => clients.forEach((c) => c.socket.destroy()));
  /** Opens connections (handed out in turn) until `pid` answers one and the server another; says which is which. */
  const spread = async (pid: number) => {
    let split: { inWorker: Client; inServer: Client } | undefined;
    await until(`a connection in worker ${pid} and one in the server`, async () => {
      clients.push(await tcpClient(port));
      await new Promise((r) => setTimeout(r, 100));
      const [w, s] = [(await holds(pid)).tcp, (await holds(child.pid!)).tcp];
      // Held by one process only: a connection being handed over is briefly in both.
      const inWorker = clients.find((c) => !c.socket.destroyed && w.has(c.socket.localPort!) && !s.has(c.socket.localPort!));
      const inServer = clients.find((c) => !c.socket.destroyed && s.has(c.socket.localPort!) && !w.has(c.socket.localPort!));
      split = inWorker && inServer ? { inWorker, inServer } : undefined;
      return split !== undefined;
    });
    return split!;
  };

  let first = 0;
  await until('a DNS worker serving', async () => (first = await worker()) > 0 && (await holds(first)).udp);
  const before = await spread(first);
  process.kill(first, 'SIGKILL');
  await logged(new RegExp(`^dns worker ${first} exited \\(SIGKILL\\), starting another$`), 'the exit logged with its PID');
  await before.inWorker.closed("the killed worker's connection", 5000);
  t.notOk(before.inServer.socket.closed, "the killed worker's connection is closed, the server's own left open");
  let second = 0;
  await until('a new DNS worker serving', async () => (second = await worker()) > 0 && second !== first && (await holds(second)).udp);
  t.pass(`worker ${first} replaced by ${second}, which holds the UDP socket`);

  for (let i = 0; i < 6; i++) t.equal((await askUdp(port, { name: 'masters.cli.k8s', id: i })).rcode, 0, `UDP query ${i + 1} answered`);
  const after = await spread(second);
  for (const [what, c] of [['the server, on the connection it kept', before.inServer], ['the new worker', after.inWorker], ['the server, on a new connection', after.inServer]] as const) {
    c.socket.write(frame(rawQuery({ name: 'masters.cli.k8s', id: 7 })));
    t.equal(parseResponse(await c.next(what, 5000)).id, 7, `a TCP query answered by ${what}`);
  }
  t.notOk(seen.some((l) => /could not be restarted/.test(l)), 'no failed restart logged');

  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  t.equal(await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running after 2 s'), 2000))]), 0, 'SIGTERM stops the server and the new worker');
});
