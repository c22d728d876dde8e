// The weave phase over time: reconcile against changing records through the router's HTTP API (the weaver
// double on loopback), the IPAM start mode that must never change, bad input that stops everything, and CNI.
import t from 'tap';
import { execFile } from 'node:child_process';
import { chmod, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { applyCni, cniPhase, decideCni, CNI_BIN_DIR, CNI_CONF_DIR, WEAVE_CONFLIST } from '../agent/cni.js';
import { WEAVE_PASSWORD_FILE } from '../agent/weave-password.js';
import { peerNameFor } from '../agent/weave-peer-name.js';
import { createWeavePhase, decidePeerChange, nextPassMs, parseWeaveEnv, renderWeaveEnv, WEAVE_ENV, WEAVE_STATE } from '../agent/weave.js';
import { startTestDns, truncatingUdpServer } from './helpers/dns.js';
import { MACHINE_ID, minionContext, NODE_INTERFACES, type MinionContext } from './helpers/overlay.js';
import { systemdReadsEnvFile } from './helpers/systemd-env.js';
import { startWeaverDouble, type RunningRouter } from './helpers/weave-double.js';

const run = promisify(execFile);
const RECORD = 'minions.demo.k8s';
const NAME = peerNameFor(MACHINE_ID);
const FAST = { interfaces: () => NODE_INTERFACES, pollMs: 10, settleMs: 10, timeoutMs: 5_000, dnsTimeoutMs: 2_000 };
const MASTERS = 'masters.demo.k8s';
/** The cluster as DNS shows it: one master, 10.0.0.2, and the minions given (this node is 10.0.0.5). */
const zone = (minions: string[], masters = ['10.0.0.2']) => ({ [MASTERS]: masters, [RECORD]: minions });
/** A minion's weave.env: an observer of the master, dialling it and the other minions. */
const launch = (minions: string[], init = 'observer') => ({ name: NAME, range: '10.32.0.0/12', init, peers: ['10.0.0.2', ...minions] });

async function env(ctx: MinionContext) {
  return parseWeaveEnv((await ctx.host.readFile(WEAVE_ENV)) ?? '');
}

/** The phase talking to a weaver double of its own. */
async function withRouter(t: Parameters<typeof startWeaverDouble>[0], extra: Parameters<typeof createWeavePhase>[0] = {}) {
  const router = await startWeaverDouble(t);
  return { router, phase: createWeavePhase({ ...FAST, router: { address: router.address, timeoutMs: 2_000 }, ...extra }) };
}

/**
 * A minion (10.0.0.5) that ran the phase once against a zone and a router of its own, as each reconcile test
 * starts; `before` is the weave.env that run wrote.
 */
async function ranMinion(t: Parameters<typeof startWeaverDouble>[0], minions: string[], extra: Parameters<typeof createWeavePhase>[0] = {}, ttl?: number) {
  const dns = await startTestDns('demo.k8s', zone(minions), ttl);
  t.teardown(() => dns.close());
  const ctx = await minionContext(t, dns.nameserver);
  const { router, phase } = await withRouter(t, extra);
  await phase.run(ctx);
  return { dns, ctx, router, phase, before: await ctx.host.readFile(WEAVE_ENV) };
}

/** The router's own log of what it was told (one line per /connect or /forget). */
const told = async (router: RunningRouter) => (await router.log()).split('\n').filter((l) => / (connect|forget) peers=/.test(l)).map((l) => l.replace(/^.* (connect|forget) /, '$1 '));

t.test('decidePeerChange: connect with replace to the new set, forget only the departed', async (t) => {
  t.same(decidePeerChange(['10.0.0.6', '10.0.0.7'], ['10.0.0.6', '10.0.0.7']), { added: [], removed: [] });
  t.same(decidePeerChange(['10.0.0.6', '10.0.0.7'], ['10.0.0.6', '10.0.0.8']), {
    added: ['10.0.0.8'],
    removed: ['10.0.0.7'],
    connect: ['10.0.0.6', '10.0.0.8'],
    forget: ['10.0.0.7'],
  });
  t.same(decidePeerChange(['10.0.0.6'], ['10.0.0.6', '10.0.0.9']), { added: ['10.0.0.9'], removed: [], connect: ['10.0.0.6', '10.0.0.9'] }, 'nobody left: no forget');
  t.same(decidePeerChange(['10.0.0.6'], []), { added: [], removed: ['10.0.0.6'], connect: [], forget: ['10.0.0.6'] }, 'last peer gone');
});

t.test('nextPassMs follows the TTL between a floor and a cap', async (t) => {
  t.equal(nextPassMs(60, 5_000, 300_000), 60_000);
  t.equal(nextPassMs(1, 5_000, 300_000), 5_000);
  t.equal(nextPassMs(0, 5_000, 300_000), 5_000);
  t.equal(nextPassMs(undefined, 5_000, 300_000), 5_000);
  t.equal(nextPassMs(86_400, 5_000, 300_000), 300_000);
});

t.test('weave.env as systemd itself reads it (environment.d generator, the EnvironmentFile= parser)', async (t) => {
  const text = renderWeaveEnv(launch(['10.0.0.6', '10.0.0.7'], 'consensus=3'));
  const vars = await systemdReadsEnvFile(text);
  t.same(Object.fromEntries(vars), { WEAVE_NAME: NAME, IPALLOC_RANGE: '10.32.0.0/12', IPALLOC_INIT: 'consensus=3', PEERS: '10.0.0.2 10.0.0.6 10.0.0.7' });
  t.same(parseWeaveEnv(text), launch(['10.0.0.6', '10.0.0.7'], 'consensus=3'));
  t.same(parseWeaveEnv(renderWeaveEnv(launch([]))), launch([]), 'observer');
  t.equal(parseWeaveEnv(text.replace('consensus=3', 'seed=x')), undefined, 'an IPAM mode the agent never writes is not ours');
});

t.test('a change in the records: one connect (replace) and one forget through the API, no relaunch, the start mode kept', async (t) => {
  const { dns, ctx, router, phase } = await ranMinion(t, ['10.0.0.5', '10.0.0.6', '10.0.0.7'], { now: () => new Date('2026-11-22T06:00:00Z') }, 60);
  t.same(await env(ctx), launch(['10.0.0.6', '10.0.0.7']));
  t.equal((await ctx.host.stat(WEAVE_ENV))?.mode, 0o600);

  t.equal(await phase.reconcile!(ctx), 60_000, 'nothing changed: next look after the TTL');
  t.same(await told(router), [], 'nothing said while nothing changes');

  dns.records.set(RECORD, ['10.0.0.8', '10.0.0.5', '10.0.0.6', '10.0.0.9']);
  await phase.reconcile!(ctx);
  t.same(await told(router), ["connect peers=['10.0.0.2', '10.0.0.6', '10.0.0.8', '10.0.0.9'] replace=True", "forget peers=['10.0.0.7']"]);
  t.same(await router.targets(), ['10.0.0.2', '10.0.0.6', '10.0.0.8', '10.0.0.9'], 'the router dials exactly the listed nodes');
  t.same(await env(ctx), launch(['10.0.0.6', '10.0.0.8', '10.0.0.9']), 'the start mode stays the first launch’s');
  const facts = ctx.facts();
  t.same(facts.peers, ['10.0.0.2', '10.0.0.6', '10.0.0.8', '10.0.0.9']);
  t.match(facts.overlay, {
    records: ['masters.demo.k8s', 'minions.demo.k8s'],
    self: ['10.0.0.5'],
    name: NAME,
    range: '10.32.0.0/12',
    ipallocInit: 'observer',
    encrypted: false,
    lastChange: { at: '2026-11-22T06:00:00.000Z', added: ['10.0.0.8', '10.0.0.9'], removed: ['10.0.0.7'] },
  });
  t.match(facts.weaveConsensus, { mode: 'observer', consensus: { size: 1, members: ['10.0.0.2'] }, contradiction: null });
  t.ok(ctx.logs.includes('weave-peers-changed added=10.0.0.8,10.0.0.9 removed=10.0.0.7 peers=4'));

  await phase.reconcile!(ctx);
  t.equal((await told(router)).length, 2, 'a second pass over the same records says nothing');
});

t.test('a master starts the ring (consensus=MASTER_COUNT) and dials the minions; a minion never waits to be listed', async (t) => {
  const dns = await startTestDns('demo.k8s', zone(['10.0.0.6', '10.0.0.7'], ['10.0.0.5']));
  t.teardown(() => dns.close());
  const master = await minionContext(t, dns.nameserver, { role: 'master' });
  await createWeavePhase(FAST).run(master);
  t.same(await env(master), { name: NAME, range: '10.32.0.0/12', init: 'consensus=1', peers: ['10.0.0.6', '10.0.0.7'] });
  t.match(master.facts().overlay, { self: ['10.0.0.5'] });

  dns.records.set(MASTERS, ['10.0.0.2']);
  const minion = await minionContext(t, dns.nameserver);
  await createWeavePhase(FAST).run(minion);
  t.same(await env(minion), launch(['10.0.0.6', '10.0.0.7']), 'not in the minions record: joins anyway, as an observer');
});

t.test('DNS down during reconcile: last good set kept and reported, recovery logged', async (t) => {
  const { dns, ctx, router, phase, before } = await ranMinion(t, ['10.0.0.5', '10.0.0.6', '10.0.0.7'], { ttlFloorMs: 7_000 });

  const truncating = await truncatingUdpServer(t);
  const down = { ...ctx, nameserver: { host: '127.0.0.1', port: truncating } };
  t.equal(await phase.reconcile!(down), 7_000, 'look again after the floor');
  t.equal(await phase.reconcile!(down), 7_000);
  t.equal(await ctx.host.readFile(WEAVE_ENV), before, 'weave.env untouched');
  t.same(await told(router), [], 'the router is not told to forget anyone');
  t.same(ctx.facts().peers, ['10.0.0.2', '10.0.0.6', '10.0.0.7']);
  t.match(ctx.facts().overlay, { dns: { state: 'degraded', reason: /DNS for masters\.demo\.k8s .*ECONNREFUSED/, since: String } });
  t.match(ctx.facts().overlay, { ipallocInit: 'observer' }, 'the last good picture stays in the status');
  t.equal(ctx.logs.filter((l) => l.startsWith('overlay-degraded')).length, 1, 'logged once, not at every pass');

  dns.records.set(RECORD, []);
  await phase.reconcile!(ctx);
  t.match(ctx.facts().overlay, { dns: { state: 'degraded', reason: /minions\.demo\.k8s to list any node \(no usable A records\)/ } }, 'an emptied record is not zero peers');
  dns.records.set(RECORD, ['10.0.0.6', '10.0.0.7']);
  dns.records.set(MASTERS, []);
  await phase.reconcile!(ctx);
  t.match(ctx.facts().overlay, { dns: { state: 'degraded', reason: /masters\.demo\.k8s to list any node/ } }, 'nor is a cluster without masters');
  t.same(await told(router), []);

  dns.records.set(MASTERS, ['10.0.0.2']);
  await phase.reconcile!(ctx);
  t.match(ctx.facts().overlay, { dns: { state: 'ok' } });
  t.ok(ctx.logs.some((l) => l.startsWith('overlay-recovered')));
  t.same(await env(ctx), launch(['10.0.0.6', '10.0.0.7']), 'a minion absent from its record still follows it');
  t.same(await told(router), [], 'and its peers were right all along');
});

t.test('the router down: nothing recorded as applied, reported, done on the next pass once it is back', async (t) => {
  const { dns, ctx, router, phase, before } = await ranMinion(t, ['10.0.0.5', '10.0.0.6', '10.0.0.7'], { ttlFloorMs: 6_000 });

  dns.records.set(RECORD, ['10.0.0.5', '10.0.0.6']);
  await router.stop();
  t.equal(await phase.reconcile!(ctx), 6_000, 'retry soon');
  t.equal(await ctx.host.readFile(WEAVE_ENV), before, 'weave.env still says what the router was last told');
  t.match(ctx.facts().overlay, { error: /^weave router connect: nothing listens on 127\.0\.0\.1:\d+ \(is weave\.service running\?\)$/ });
  t.same(ctx.facts().peers, ['10.0.0.2', '10.0.0.6', '10.0.0.7']);
  t.ok(ctx.logs.some((l) => l.startsWith('weave-router-failed route=connect')));

  await router.start();
  await phase.reconcile!(ctx);
  t.same(await router.targets(), ['10.0.0.2', '10.0.0.6']);
  t.same(await env(ctx), launch(['10.0.0.6']));
  t.match(ctx.facts().overlay, { error: null }, 'the error is cleared');
});

t.test('the consensus set is fixed at the first launch: a reboot (empty /run) relaunches with the same one', async (t) => {
  const dns = await startTestDns('demo.k8s', zone(['10.0.0.6', '10.0.0.7'], ['10.0.0.5']));
  t.teardown(() => dns.close());
  const ctx = await minionContext(t, dns.nameserver, { role: 'master', vars: { MASTER_COUNT: '3' } });
  await createWeavePhase(FAST).run(ctx);
  t.match(await env(ctx), { init: 'consensus=3' });
  await rm(ctx.host.resolve('/run'), { recursive: true });
  const rebooted = { ...ctx, config: { ...ctx.config, vars: { ...ctx.config.vars, MASTER_COUNT: '5' } } };
  await createWeavePhase(FAST).run(rebooted);
  t.match(await env(ctx), { init: 'consensus=3' }, 'N stays what the node chose, whatever MASTER_COUNT says now');
  t.match(ctx.facts().weaveConsensus, { consensus: { size: 3 }, contradiction: /MASTER_COUNT is 5 .* but this node chose consensus=3/ });
  t.ok(ctx.logs.some((l) => l.startsWith('weave-consensus-contradicted')));
});

t.test('a state file from before the consensus rule (a count of minions) is replaced by a choice', async (t) => {
  const dns = await startTestDns('demo.k8s', zone(['10.0.0.5', '10.0.0.6']));
  t.teardown(() => dns.close());
  const ctx = await minionContext(t, dns.nameserver);
  await ctx.host.writeFile(WEAVE_STATE, '{"consensus": 4, "launchedAt": "2026-11-01T00:00:00.000Z"}\n');
  await createWeavePhase(FAST).run(ctx);
  t.same(await env(ctx), launch(['10.0.0.6']));
  t.match(JSON.parse((await ctx.host.readFile(WEAVE_STATE))!), { set: { size: 1, members: ['10.0.0.2'] } });
});

t.test('bad input stops the phase before anything is written, naming the file or value', async (t) => {
  const dns = await startTestDns('demo.k8s', zone(['10.0.0.5', '10.0.0.6']));
  t.teardown(() => dns.close());
  const nothingWritten = async (ctx: MinionContext) => {
    t.equal(await ctx.host.readFile(WEAVE_ENV), undefined, 'no weave.env: weave.service does not start');
    t.equal(await ctx.host.readFile(WEAVE_STATE), undefined);
  };
  const damaged = await minionContext(t, dns.nameserver);
  await damaged.host.writeFile(WEAVE_STATE, '{"set": {"size": "three"}}');
  await t.rejects(createWeavePhase(FAST).run(damaged), { name: 'InputError', file: damaged.host.resolve(WEAVE_STATE) });
  t.equal(await damaged.host.readFile(WEAVE_ENV), undefined);

  // The role file's validation refuses a CLUSTER_CIDR that overlaps SERVICE_CIDR (test/agent-role-networks.test.ts).
  const crowded = await minionContext(t, dns.nameserver, { role: 'master' });
  dns.records.set(MASTERS, ['10.0.0.5', '10.0.0.3']);
  await t.rejects(createWeavePhase(FAST).run(crowded), {
    name: 'InputError',
    file: '/etc/sysconfig/kubernetes-masters',
    message: /masters\.demo\.k8s lists 2 masters \(10\.0\.0\.3, 10\.0\.0\.5\), more than MASTER_COUNT=1/,
  });
  await nothingWritten(crowded);
  dns.records.set(MASTERS, ['10.0.0.2']);

  const short = await minionContext(t, dns.nameserver);
  await mkdir(path.dirname(short.host.resolve(WEAVE_PASSWORD_FILE)), { recursive: true });
  await writeFile(short.host.resolve(WEAVE_PASSWORD_FILE), 'WEAVE_PASSWORD="hunter2"\n', { mode: 0o600 });
  await chmod(short.host.resolve(WEAVE_PASSWORD_FILE), 0o600);
  await t.rejects(createWeavePhase(FAST).run(short), { name: 'InputError', file: short.host.resolve(WEAVE_PASSWORD_FILE), message: /7 bytes long; at least 16/ });
  await nothingWritten(short);
  t.notOk(short.logs.some((l) => l.includes('hunter2')), 'not in logs');

  const noId = await minionContext(t, dns.nameserver);
  await rm(noId.host.resolve('/etc/machine-id'));
  await t.rejects(createWeavePhase(FAST).run(noId), { name: 'InputError', message: /no machine ID/ });
  await nothingWritten(noId);
});

t.test('a password file makes the overlay encrypted, and the password goes nowhere the agent writes', async (t) => {
  const dns = await startTestDns('demo.k8s', zone(['10.0.0.5', '10.0.0.6']));
  t.teardown(() => dns.close());
  const ctx = await minionContext(t, dns.nameserver);
  const file = ctx.host.resolve(WEAVE_PASSWORD_FILE);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, 'WEAVE_PASSWORD="hunter2 hunter2 hunter2"\n', { mode: 0o600 });
  await chmod(file, 0o600);
  const { phase } = await withRouter(t);
  await phase.run(ctx);
  dns.records.set(RECORD, ['10.0.0.5', '10.0.0.7']);
  await phase.reconcile!(ctx);
  t.match(ctx.facts().overlay, { encrypted: true });
  t.notOk((await ctx.host.readFile(WEAVE_ENV))!.includes('hunter2'), 'not in weave.env');
  t.notOk(ctx.logs.some((l) => l.includes('hunter2')), 'not in logs');
  t.notOk(JSON.stringify(ctx.reports).includes('hunter2'), 'not in status');
});

t.test('a second run over the same record changes nothing', async (t) => {
  const dns = await startTestDns('demo.k8s', zone(['10.0.0.5', '10.0.0.6']));
  t.teardown(() => dns.close());
  const ctx = await minionContext(t, dns.nameserver);
  await createWeavePhase(FAST).run(ctx);
  const files = [WEAVE_ENV, WEAVE_STATE].map((f) => ctx.host.resolve(f));
  const before = await Promise.all(files.map((f) => stat(f)));
  ctx.logs.length = 0;
  await createWeavePhase(FAST).run(ctx);
  const after = await Promise.all(files.map((f) => stat(f)));
  t.same(
    after.map((s) => s.mtimeMs),
    before.map((s) => s.mtimeMs),
  );
  t.notOk(ctx.logs.some((l) => l.startsWith('weave-env-written')));
});

t.test('a live node restarting its agent follows the running router instead of rewriting its launch file', async (t) => {
  const dns = await startTestDns('demo.k8s', zone(['10.0.0.5', '10.0.0.6', '10.0.0.7']));
  t.teardown(() => dns.close());
  const ctx = await minionContext(t, dns.nameserver, { host: (h) => ({ ...h, live: true }) });
  const { router, phase } = await withRouter(t);
  await phase.run(ctx);
  t.same(await told(router), [], 'first launch: weave.env only');
  dns.records.set(RECORD, ['10.0.0.5', '10.0.0.7']);
  await phase.run(ctx);
  t.same(await told(router), ["connect peers=['10.0.0.2', '10.0.0.7'] replace=True", "forget peers=['10.0.0.6']"]);
  t.same(await env(ctx), launch(['10.0.0.7']));
});

t.test('CNI: directories 0755 and the Weave conflist; a second run changes nothing', async (t) => {
  const ctx = await minionContext(t, '127.0.0.1:53');
  // A umask that would narrow the directories: the modes must still come out right.
  const umask = process.umask(0o077);
  t.teardown(() => process.umask(umask));
  await cniPhase.run(ctx);
  for (const dir of [CNI_BIN_DIR, CNI_CONF_DIR]) t.match(await ctx.host.stat(dir), { isDirectory: true, mode: 0o755 }, dir);
  t.match(await ctx.host.stat(WEAVE_CONFLIST), { isFile: true, mode: 0o644 }, WEAVE_CONFLIST);
  const conflist = JSON.parse((await ctx.host.readFile(WEAVE_CONFLIST))!);
  t.match(conflist, { name: 'weave', plugins: [{ type: 'weave-net' }, { type: 'portmap', capabilities: { portMappings: true } }] });
  t.match(ctx.facts(), { cni: { binDir: CNI_BIN_DIR, confDir: CNI_CONF_DIR, config: WEAVE_CONFLIST } });
  t.equal(ctx.logs.filter((l) => l.startsWith('cni-changed')).length, 3);

  const before = await stat(ctx.host.resolve(WEAVE_CONFLIST));
  t.same(await applyCni(ctx.host, decideCni()), [], 'second run: nothing to change');
  t.equal((await stat(ctx.host.resolve(WEAVE_CONFLIST))).mtimeMs, before.mtimeMs);

  await run('chmod', ['0700', ctx.host.resolve(CNI_CONF_DIR)]);
  t.same(await applyCni(ctx.host, decideCni()), [CNI_CONF_DIR], 'a wrong mode is put right');
});

