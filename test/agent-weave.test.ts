// The weave phase over time (reconcile against a changing minions record, with the weave test double on
// PATH), the consensus value that must never change, the password's path, CNI, and weave.service.
import t from 'tap';
import fc from 'fast-check';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { applyCni, cniPhase, decideCni, CNI_BIN_DIR, CNI_CONF_DIR, KUBELET_CNI_ENV, WEAVE_CONFLIST } from '../agent/cni.js';
import { envValueProblem, parseEnvironmentFile } from '../agent/contract/env-file.js';
import { parseUnitFile } from '../agent/unit-file.js';
import { unitRoles } from '../agent/unit-match.js';
import {
  createWeavePhase,
  decidePeerChange,
  nextPassMs,
  parseWeaveEnv,
  renderWeaveEnv,
  WEAVE_ENV,
  WEAVE_STATE,
} from '../agent/weave.js';
import { startTestDns, truncatingUdpServer } from './helpers/dns.js';
import { minionContext, NODE_INTERFACES, type MinionContext } from './helpers/overlay.js';
import { systemdReadsEnvFile } from './helpers/systemd-env.js';
import { holds } from './helpers/property.js';

const run = promisify(execFile);
const RECORD = 'minions.demo.k8s';
const FAST = { interfaces: () => NODE_INTERFACES, pollMs: 10, settleMs: 10, timeoutMs: 5_000, dnsTimeoutMs: 2_000 };
const UNIT = fileURLToPath(new URL('../units/weave.service', import.meta.url));

async function env(ctx: MinionContext) {
  return parseWeaveEnv((await ctx.host.readFile(WEAVE_ENV)) ?? '');
}

t.test('decidePeerChange: connect --replace with the new set, forget only the departed', async (t) => {
  t.same(decidePeerChange(['10.0.0.6', '10.0.0.7'], ['10.0.0.6', '10.0.0.7']), { added: [], removed: [], commands: [] });
  t.same(decidePeerChange(['10.0.0.6', '10.0.0.7'], ['10.0.0.6', '10.0.0.8']), {
    added: ['10.0.0.8'],
    removed: ['10.0.0.7'],
    commands: [
      ['connect', '--replace', '10.0.0.6', '10.0.0.8'],
      ['forget', '10.0.0.7'],
    ],
  });
  t.same(decidePeerChange(['10.0.0.6'], ['10.0.0.6', '10.0.0.9']).commands, [['connect', '--replace', '10.0.0.6', '10.0.0.9']], 'nobody left: no forget');
  t.same(decidePeerChange(['10.0.0.6'], []).commands, [['connect', '--replace'], ['forget', '10.0.0.6']], 'last peer gone');
});

t.test('nextPassMs follows the TTL between a floor and a cap', async (t) => {
  t.equal(nextPassMs(60, 5_000, 300_000), 60_000);
  t.equal(nextPassMs(1, 5_000, 300_000), 5_000);
  t.equal(nextPassMs(0, 5_000, 300_000), 5_000);
  t.equal(nextPassMs(undefined, 5_000, 300_000), 5_000);
  t.equal(nextPassMs(86_400, 5_000, 300_000), 300_000);
});

t.test('weave.env round-trips through the agent’s parser, for any password', async (t) => {
  await holds(
    t,
    'weave.env round-trips',
    fc.property(
      fc.string({ unit: 'grapheme', minLength: 1 }).filter((s) => envValueProblem('WEAVE_PASSWORD', s) === undefined),
      fc.array(fc.ipV4(), { maxLength: 5 }),
      (password, peers) => {
        const text = renderWeaveEnv({ peers, members: peers.length + 1, password });
        const { assignments, problems } = parseEnvironmentFile(text, WEAVE_ENV);
        const vars = Object.fromEntries(assignments.map((a) => [a.key, a.value]));
        return problems.length === 0 && vars.WEAVE_PASSWORD === password && vars.PEERS === peers.join(' ') && vars.MEMBERS === String(peers.length + 1);
      },
    ),
  );
});

t.test('weave.env as systemd itself reads it (environment.d generator, the EnvironmentFile= parser)', async (t) => {
  const password = `s3cr3t 'quoted' "double" back\\slash`;
  const vars = await systemdReadsEnvFile(renderWeaveEnv({ peers: ['10.0.0.6', '10.0.0.7'], members: 3, password }));
  t.equal(vars.get('PEERS'), '10.0.0.6 10.0.0.7');
  t.equal(vars.get('MEMBERS'), '3');
  t.equal(vars.get('WEAVE_PASSWORD'), password);
});

t.test('a change in the records: exactly one connect --replace and one forget, no launch, MEMBERS kept', async (t) => {
  const dns = await startTestDns('demo.k8s', { [RECORD]: ['10.0.0.5', '10.0.0.6', '10.0.0.7'] }, 60);
  t.teardown(() => dns.close());
  const ctx = await minionContext(t, dns.nameserver);
  const phase = createWeavePhase({ ...FAST, now: () => new Date('2026-11-22T06:00:00Z') });
  await phase.run(ctx);
  t.same(await env(ctx), { peers: ['10.0.0.6', '10.0.0.7'], members: 3 });

  t.equal(await phase.reconcile!(ctx), 60_000, 'nothing changed: next look after the TTL');
  t.same(await ctx.weaveCalls(), [], 'no call while nothing changes');

  dns.records.set(RECORD, ['10.0.0.8', '10.0.0.5', '10.0.0.6', '10.0.0.9']);
  await phase.reconcile!(ctx);
  t.same(await ctx.weaveCalls(), [
    ['connect', '--replace', '10.0.0.6', '10.0.0.8', '10.0.0.9'],
    ['forget', '10.0.0.7'],
  ]);
  t.same(await env(ctx), { peers: ['10.0.0.6', '10.0.0.8', '10.0.0.9'], members: 3 }, 'MEMBERS stays the first launch’s');
  const facts = ctx.facts();
  t.same(facts.peers, ['10.0.0.6', '10.0.0.8', '10.0.0.9']);
  t.match(facts.overlay, {
    members: 3,
    consensus: 'consensus=3',
    lastChange: { at: '2026-11-22T06:00:00.000Z', added: ['10.0.0.8', '10.0.0.9'], removed: ['10.0.0.7'] },
  });
  t.ok(ctx.logs.includes('weave-peers-changed added=10.0.0.8,10.0.0.9 removed=10.0.0.7 peers=3'));

  await phase.reconcile!(ctx);
  const calls = await ctx.weaveCalls();
  t.equal(calls.length, 2, 'a second pass over the same record calls nothing');
  t.notOk(calls.some((c) => c[0] === 'launch'), 'never a new launch');
});

t.test('DNS down during reconcile: last good set kept and reported, recovery logged', async (t) => {
  const dns = await startTestDns('demo.k8s', { [RECORD]: ['10.0.0.5', '10.0.0.6', '10.0.0.7'] });
  t.teardown(() => dns.close());
  const ctx = await minionContext(t, dns.nameserver);
  const phase = createWeavePhase({ ...FAST, ttlFloorMs: 7_000 });
  await phase.run(ctx);
  const before = await ctx.host.readFile(WEAVE_ENV);

  const truncating = await truncatingUdpServer(t);
  const down = { ...ctx, nameserver: { host: '127.0.0.1', port: truncating } };
  t.equal(await phase.reconcile!(down), 7_000, 'look again after the floor');
  t.equal(await phase.reconcile!(down), 7_000);
  t.equal(await ctx.host.readFile(WEAVE_ENV), before, 'weave.env untouched');
  t.same(await ctx.weaveCalls(), [], 'Weave is not told to forget anyone');
  t.same(ctx.facts().peers, ['10.0.0.6', '10.0.0.7']);
  t.match(ctx.facts().overlay, { dns: { state: 'degraded', reason: /DNS for minions\.demo\.k8s .*ECONNREFUSED/, since: String } });
  t.match(ctx.facts().overlay, { self: ['10.0.0.5'], members: 3 }, 'the last good picture stays in the status');
  t.equal(ctx.logs.filter((l) => l.startsWith('overlay-degraded')).length, 1, 'logged once, not at every pass');

  dns.records.set(RECORD, []);
  await phase.reconcile!(ctx);
  t.match(ctx.facts().overlay, { dns: { state: 'degraded', reason: /no usable A records/ } }, 'an emptied record is not zero peers');
  dns.records.set(RECORD, ['10.0.0.6', '10.0.0.7']);
  await phase.reconcile!(ctx);
  t.match(ctx.facts().overlay, { dns: { state: 'degraded', reason: /to list this node/ } }, 'an answer without this node is not trusted');
  t.same(await ctx.weaveCalls(), []);

  dns.records.set(RECORD, ['10.0.0.5', '10.0.0.6', '10.0.0.7']);
  await phase.reconcile!(ctx);
  t.match(ctx.facts().overlay, { dns: { state: 'ok' } });
  t.ok(ctx.logs.some((l) => l.startsWith('overlay-recovered')));
});

t.test('weave exiting non-zero: nothing recorded as applied, reported, retried on the next pass', async (t) => {
  const dns = await startTestDns('demo.k8s', { [RECORD]: ['10.0.0.5', '10.0.0.6', '10.0.0.7'] });
  t.teardown(() => dns.close());
  const ctx = await minionContext(t, dns.nameserver);
  const phase = createWeavePhase({ ...FAST, ttlFloorMs: 6_000 });
  await phase.run(ctx);
  const before = await ctx.host.readFile(WEAVE_ENV);

  dns.records.set(RECORD, ['10.0.0.5', '10.0.0.6']);
  await writeFile(ctx.failFile, '');
  t.equal(await phase.reconcile!(ctx), 6_000, 'retry soon');
  t.equal(await ctx.host.readFile(WEAVE_ENV), before, 'weave.env still says what Weave was last told');
  t.match(ctx.facts().overlay, { error: /weave connect exited 1: weave double: failing as asked/ });
  t.same(ctx.facts().peers, ['10.0.0.6', '10.0.0.7']);
  t.ok(ctx.logs.some((l) => l.startsWith('weave-command-failed command=connect code=1')));

  await rm(ctx.failFile);
  await phase.reconcile!(ctx);
  t.same(await ctx.weaveCalls(), [
    ['connect', '--replace', '10.0.0.6'],
    ['connect', '--replace', '10.0.0.6'],
    ['forget', '10.0.0.7'],
  ]);
  t.same(await env(ctx), { peers: ['10.0.0.6'], members: 3 });
  t.match(ctx.facts().overlay, { error: null }, 'the error is cleared');
});

t.test('consensus is fixed at the first launch: a reboot (empty /run) relaunches with the same MEMBERS', async (t) => {
  const dns = await startTestDns('demo.k8s', { [RECORD]: ['10.0.0.5', '10.0.0.6', '10.0.0.7'] });
  t.teardown(() => dns.close());
  const ctx = await minionContext(t, dns.nameserver);
  await createWeavePhase(FAST).run(ctx);
  await rm(ctx.host.resolve('/run'), { recursive: true });
  dns.records.set(RECORD, ['10.0.0.5', '10.0.0.6', '10.0.0.7', '10.0.0.8', '10.0.0.9']);
  await createWeavePhase(FAST).run(ctx);
  t.same(await env(ctx), { peers: ['10.0.0.6', '10.0.0.7', '10.0.0.8', '10.0.0.9'], members: 3 });
  t.ok(ctx.logs.includes('weave-consensus-kept consensus=3 listed=5'));
  t.match(ctx.facts().overlay, { consensus: 'consensus=3' });
});

t.test('a damaged weave state file is an error naming it, and changes nothing', async (t) => {
  const dns = await startTestDns('demo.k8s', { [RECORD]: ['10.0.0.5', '10.0.0.6'] });
  t.teardown(() => dns.close());
  const ctx = await minionContext(t, dns.nameserver);
  await ctx.host.writeFile(WEAVE_STATE, '{"consensus": "three"}');
  await t.rejects(createWeavePhase(FAST).run(ctx), { name: 'InputError', file: ctx.host.resolve(WEAVE_STATE) });
  t.equal(await ctx.host.readFile(WEAVE_ENV), undefined);
});

t.test('a live node restarting its agent follows the running Weave instead of rewriting its launch file', async (t) => {
  const dns = await startTestDns('demo.k8s', { [RECORD]: ['10.0.0.5', '10.0.0.6', '10.0.0.7'] });
  t.teardown(() => dns.close());
  const ctx = await minionContext(t, dns.nameserver, { host: (h) => ({ ...h, live: true }) });
  await createWeavePhase(FAST).run(ctx);
  t.same(await ctx.weaveCalls(), [], 'first launch: weave.env only');
  dns.records.set(RECORD, ['10.0.0.5', '10.0.0.7']);
  await createWeavePhase(FAST).run(ctx);
  t.same(await ctx.weaveCalls(), [
    ['connect', '--replace', '10.0.0.7'],
    ['forget', '10.0.0.6'],
  ]);
  t.same(await env(ctx), { peers: ['10.0.0.7'], members: 3 });
});

t.test('a second run over the same record changes nothing', async (t) => {
  const dns = await startTestDns('demo.k8s', { [RECORD]: ['10.0.0.5', '10.0.0.6'] });
  t.teardown(() => dns.close());
  const ctx = await minionContext(t, dns.nameserver, { vars: { WEAVE_PASSWORD: 'pw' } });
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

t.test('WEAVE_PASSWORD reaches weave.env (0600) and nowhere else; a newline in it changes nothing', async (t) => {
  const dns = await startTestDns('demo.k8s', { [RECORD]: ['10.0.0.5', '10.0.0.6'] });
  t.teardown(() => dns.close());
  const password = "hunter2 'and' more";
  const ctx = await minionContext(t, dns.nameserver, { vars: { WEAVE_PASSWORD: password } });
  const phase = createWeavePhase(FAST);
  await phase.run(ctx);
  dns.records.set(RECORD, ['10.0.0.5', '10.0.0.7']);
  await phase.reconcile!(ctx);
  const text = (await ctx.host.readFile(WEAVE_ENV))!;
  t.equal(Object.fromEntries(parseEnvironmentFile(text, WEAVE_ENV).assignments.map((a) => [a.key, a.value])).WEAVE_PASSWORD, password);
  t.equal((await ctx.host.stat(WEAVE_ENV))?.mode, 0o600);
  t.notOk(ctx.logs.some((l) => l.includes('hunter2')), 'not in logs');
  t.notOk(JSON.stringify(ctx.reports).includes('hunter2'), 'not in status');
  t.notOk((await ctx.weaveCalls()).flat().some((a) => a.includes('hunter2')), 'not in any argv');

  const bad = await minionContext(t, dns.nameserver, { vars: { WEAVE_PASSWORD: 'a\nb' } });
  await t.rejects(createWeavePhase(FAST).run(bad), { name: 'InputError', file: '/etc/sysconfig/kubernetes-minions', message: /WEAVE_PASSWORD/ });
  t.equal(await bad.host.readFile(WEAVE_ENV), undefined);
  t.equal(await bad.host.readFile(WEAVE_STATE), undefined);
});

t.test('CNI: directories 0755, the Weave conflist and the kubelet env file; a second run changes nothing', async (t) => {
  const ctx = await minionContext(t, '127.0.0.1:53');
  // A umask that would narrow the directories: the modes must still come out right.
  const umask = process.umask(0o077);
  t.teardown(() => process.umask(umask));
  await cniPhase.run(ctx);
  for (const dir of [CNI_BIN_DIR, CNI_CONF_DIR]) t.match(await ctx.host.stat(dir), { isDirectory: true, mode: 0o755 }, dir);
  for (const file of [WEAVE_CONFLIST, KUBELET_CNI_ENV]) t.match(await ctx.host.stat(file), { isFile: true, mode: 0o644 }, file);
  const conflist = JSON.parse((await ctx.host.readFile(WEAVE_CONFLIST))!);
  t.match(conflist, { name: 'weave', plugins: [{ type: 'weave-net' }, { type: 'portmap', capabilities: { portMappings: true } }] });
  const kubeletEnv = parseEnvironmentFile((await ctx.host.readFile(KUBELET_CNI_ENV))!, KUBELET_CNI_ENV);
  t.same(kubeletEnv.problems, []);
  t.same(
    Object.fromEntries(kubeletEnv.assignments.map((a) => [a.key, a.value])),
    { CNI_BIN_DIR: '/opt/cni/bin', CNI_CONF_DIR: '/etc/cni/net.d' },
  );
  t.match(ctx.facts(), { cni: { binDir: CNI_BIN_DIR, confDir: CNI_CONF_DIR, config: WEAVE_CONFLIST } });
  t.equal(ctx.logs.filter((l) => l.startsWith('cni-changed')).length, 4);

  const before = await stat(ctx.host.resolve(WEAVE_CONFLIST));
  t.same(await applyCni(ctx.host, decideCni()), [], 'second run: nothing to change');
  t.equal((await stat(ctx.host.resolve(WEAVE_CONFLIST))).mtimeMs, before.mtimeMs);

  await run('chmod', ['0700', ctx.host.resolve(CNI_CONF_DIR)]);
  t.same(await applyCni(ctx.host, decideCni()), [CNI_CONF_DIR], 'a wrong mode is put right');
});

t.test('weave.service: minions only, and systemd-analyze verify says nothing', async (t) => {
  const text = await readFile(UNIT, 'utf8');
  const { unit, problems } = parseUnitFile(text, UNIT);
  t.same(problems, []);
  t.same(unitRoles(unit), ['minion']);
  t.match(text, /^EnvironmentFile=\/run\/kubeseed\/weave\.env$/m);
  t.match(text, /^ExecStart=\/usr\/local\/bin\/weave launch .*--ipalloc-init consensus=\$\{MEMBERS\} \$PEERS$/m);

  // A root with the one program the unit runs, as in the image.
  const root = await mkdtemp(path.join(os.tmpdir(), 'kubeseed-unit-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  for (const dir of ['usr/local/bin', 'etc/systemd/system', 'usr/lib/systemd/system']) await mkdir(path.join(root, dir), { recursive: true });
  await writeFile(path.join(root, 'usr/local/bin/weave'), '#!/bin/sh\n', { mode: 0o755 });
  await copyFile(UNIT, path.join(root, 'etc/systemd/system/weave.service'));
  const out = await run('systemd-analyze', ['verify', `--root=${root}`, '--recursive-errors=no', path.join(root, 'etc/systemd/system/weave.service')]).catch(
    (e: { stdout: string; stderr: string }) => e,
  );
  t.equal(`${out.stdout}${out.stderr}`, '', 'no output at all');
});
