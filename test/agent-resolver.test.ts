// The resolver phase: a metal node's system resolver (systemd-resolved) sends the cluster's names to the
// NAMESERVER of its role file, port and all, so the kubelet finds masters.<cluster>.<domain> as the agent does.
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { createHost, type Host } from '../agent/host.js';
import { decideResolver, reloadsOnSighup, resolvedDropIn, resolverPhase, RESOLVED_CGROUP_PROCS, RESOLVED_DROP_IN, RESOLVED_UNIT_FILE } from '../agent/resolver.js';
import { minionConfig, minionContext } from './helpers/overlay.js';

type Cleanup = Parameters<typeof minionContext>[0];

t.test('the drop-in routes the cluster domain alone to NAMESERVER, port included', async (t) => {
  const conf = resolvedDropIn(minionConfig({ NAMESERVER: '10.0.2.2:41008' }))!;
  t.match(conf, /^\[Resolve\]$/m);
  t.match(conf, /^DNS=10\.0\.2\.2:41008$/m);
  t.match(conf, /^Domains=~demo\.k8s$/m, 'a routing-only domain: not added to the search list');
  t.match(resolvedDropIn(minionConfig({ NAMESERVER: '[fd00::53]:5353' })), /^DNS=\[fd00::53\]:5353$/m, 'IPv6 in brackets before a port');
  t.match(resolvedDropIn(minionConfig({ NAMESERVER: '192.0.2.53' })), /^DNS=192\.0\.2\.53:53$/m);
  t.equal(resolvedDropIn(minionConfig()), undefined, 'no NAMESERVER: nothing to write');
  t.equal(decideResolver(minionConfig()), undefined);
  t.throws(() => resolvedDropIn(minionConfig({ NAMESERVER: 'dns.example:53' })), { name: 'InputError', message: /NAMESERVER.*dns\.example:53/ });
});

t.test('the phase: nothing to do without NAMESERVER, skipped when resolved is missing, written once', async (t) => {
  const none = await minionContext(t, '127.0.0.1:53');
  t.equal(await resolverPhase.skipReason!(none), undefined, 'no NAMESERVER: nothing to warn about');
  await resolverPhase.run(none);
  t.equal(await none.host.readFile(RESOLVED_DROP_IN), undefined, 'and nothing written');
  t.match(none.facts(), { resolver: { nameserver: 'system' } });

  const vars = { NAMESERVER: '10.0.2.2:41008' };
  const noResolved = await minionContext(t, '127.0.0.1:53', { vars });
  t.match(await resolverPhase.skipReason!(noResolved), /systemd-resolved is not installed/, 'says why the system resolver will not know');

  const ctx = await minionContext(t, '127.0.0.1:53', { vars });
  await mkdir(path.dirname(ctx.host.resolve(RESOLVED_UNIT_FILE)), { recursive: true });
  await writeFile(ctx.host.resolve(RESOLVED_UNIT_FILE), '[Service]\n');
  t.equal(await resolverPhase.skipReason!(ctx), undefined);
  await resolverPhase.run(ctx);
  t.match(await ctx.host.readFile(RESOLVED_DROP_IN), /^DNS=10\.0\.2\.2:41008$/m);
  t.match(ctx.facts(), { resolver: { zone: 'demo.k8s', nameserver: '10.0.2.2:41008', dropIn: RESOLVED_DROP_IN } });
  t.equal(ctx.logs.filter((l) => l.startsWith('resolver-changed')).length, 2, 'one line each for the directory and the file');

  const before = await stat(ctx.host.resolve(RESOLVED_DROP_IN));
  await resolverPhase.run(ctx);
  t.equal((await stat(ctx.host.resolve(RESOLVED_DROP_IN))).mtimeMs, before.mtimeMs, 'second run: the file is not rewritten');
  t.equal(ctx.logs.filter((l) => l.startsWith('resolver-changed')).length, 2, 'and nothing more logged as changed');
});

/** A live host on a test root that records what it runs instead of running it. */
function liveHost(root: string, logs: string[], ran: string[][]): Host {
  return {
    ...createHost({ root, write: (line) => logs.push(line) }),
    live: true,
    async exec(cmd, args) {
      ran.push([cmd, ...args]);
      return { code: 0, stdout: '', stderr: '' };
    },
  };
}

/** A process standing in for resolved: it says `hup` on SIGHUP, as resolved reloads on it. `hup(ms)`: whether it did within ms. */
async function fakeResolved(t: Cleanup): Promise<{ pid: number; hup: (ms: number) => Promise<boolean> }> {
  const child = spawn(process.execPath, ['-e', "process.on('SIGHUP', () => { console.log('hup'); process.exit(0); }); console.log('ready'); setInterval(() => {}, 1e6);"]);
  t.teardown(() => child.kill('SIGKILL'));
  let out = '';
  const exited = new Promise<boolean>((resolve) => child.on('exit', () => resolve(out.includes('hup'))));
  await new Promise<void>((resolve) => child.stdout.on('data', (d) => ((out += d), out.includes('ready') && resolve())));
  return { pid: child.pid!, hup: (ms) => Promise.race([exited, new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms).unref())]) };
}

const NOTIFY_RELOAD_UNIT = '[Unit]\nDescription=Network Name Resolution\n\n[Service]\nType=notify-reload\nRestart=always\n';

/** A live minion with NAMESERVER whose root has resolved's unit file and, when `pid` is given, that process in resolved's cgroup. */
async function liveMinion(t: Cleanup, unitText: string, pid?: number) {
  const logs: string[] = [];
  const ran: string[][] = [];
  const ctx = await minionContext(t, '127.0.0.1:53', { vars: { NAMESERVER: '10.0.2.2:41008' }, host: (h) => liveHost(h.root, logs, ran) });
  const files: [string, string | undefined][] = [[RESOLVED_UNIT_FILE, unitText], [RESOLVED_CGROUP_PROCS, pid === undefined ? undefined : `${pid}\n`]];
  for (const [file, text] of files) {
    if (text === undefined) continue;
    await mkdir(path.dirname(ctx.host.resolve(file)), { recursive: true });
    await writeFile(ctx.host.resolve(file), text);
  }
  return { ctx, logs, ran };
}

t.test('live: a running resolved reloads on SIGHUP, with no systemctl; a second run signals nothing', async (t) => {
  const resolved = await fakeResolved(t);
  const { ctx, logs, ran } = await liveMinion(t, NOTIFY_RELOAD_UNIT, resolved.pid);
  await resolverPhase.run(ctx);
  t.ok(await resolved.hup(10_000), 'resolved got SIGHUP');
  t.ok(logs.includes(`resolved-reloaded pid=${resolved.pid} signal=SIGHUP`), 'logged with its PID', { logs });
  t.same(ran, [], 'no systemctl');

  await resolverPhase.run(ctx);
  t.equal(logs.filter((l) => l.startsWith('resolved-')).length, 1, 'the drop-in unchanged: no second reload');
});

t.test('live: a resolved that is not running is left alone; one without notify-reload is reloaded by systemctl', async (t) => {
  const stopped = await liveMinion(t, NOTIFY_RELOAD_UNIT);
  await resolverPhase.run(stopped.ctx);
  t.match(stopped.logs.at(-1), /^resolved-not-running /);
  t.same(stopped.ran, [], 'nothing started: resolved reads the drop-in when it starts');

  const resolved = await fakeResolved(t);
  const { ctx, logs, ran } = await liveMinion(t, '[Service]\nType=notify\n', resolved.pid);
  await resolverPhase.run(ctx);
  t.same(ran, [['systemctl', 'try-reload-or-restart', 'systemd-resolved.service']], 'SIGHUP would end an older resolved: systemctl reloads it');
  t.match(logs, [/^resolver-changed /, /^resolver-changed /, /^resolved-reloaded by="systemctl try-reload-or-restart"$/]);
  t.notOk(await resolved.hup(300), 'and no signal was sent');
});

t.test('reloadsOnSighup: the last Type= of the [Service] section decides', async (t) => {
  t.equal(reloadsOnSighup(NOTIFY_RELOAD_UNIT), true);
  t.equal(reloadsOnSighup('[Service]\nType=notify-reload\nType=notify\n'), false);
  t.equal(reloadsOnSighup('[Unit]\nType=notify-reload\n'), false, 'Type= belongs to [Service]');
  t.equal(reloadsOnSighup(undefined), false);
});
