import t, { type Test } from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { fileURLToPath } from 'node:url';
import { createHost } from '../agent/host.js';
import { listValues, parseUnitFile } from '../agent/unit-file.js';
import { roleConditions, unitRoles } from '../agent/unit-match.js';
import { applyUnits, findUnits, planUnits } from '../agent/units.js';
import { classify, parseShow, planTransaction } from '../agent/unit-state.js';
import { startUserManager, type UserManager } from './helpers/systemd-user.js';
import { holds } from './helpers/property.js';
import { until } from './helpers/until.js';

const MINION = '/etc/sysconfig/kubernetes-minions';
const MASTER = '/etc/sysconfig/kubernetes-masters';
const unit = (text: string) => parseUnitFile(text, 'x.service');

t.test('unit syntax: sections, repeated keys, resets, continuations, comments', async (t) => {
  const { unit: u, problems } = parseUnitFile(
    [
      '# a comment',
      '; another',
      '[Unit]',
      'Description = spaced out  ',
      'After=a.service',
      'After=b.service \\',
      '  c.service',
      'ExecStart=/bin/echo one \\',
      '# a comment inside a continuation is skipped',
      '  two',
      'Literal=ends in an escaped backslash \\\\',
      'Next=line',
      '',
      '[Service]',
      'Environment=A=1',
      'Environment=',
      'Environment=B=2',
      '[Unit]',
      'After=d.service',
    ].join('\n'),
    'demo.service',
  );
  t.same(problems, []);
  t.same(u.sections.map((s) => s.name), ['Unit', 'Service', 'Unit']);
  const first = u.sections[0]!.entries;
  t.same(first[0], { key: 'Description', value: 'spaced out', line: 4 });
  t.same(listValues(u, 'Unit', 'After').map((e) => e.value), ['a.service', 'b.service    c.service', 'd.service'], 'repeated keys kept, across repeated sections');
  t.same(first.find((e) => e.key === 'ExecStart'), { key: 'ExecStart', value: '/bin/echo one    two', line: 8 }, 'continuation starts at its first line');
  t.equal(first.find((e) => e.key === 'Literal')?.value, 'ends in an escaped backslash \\\\', 'an escaped backslash does not continue');
  t.equal(first.find((e) => e.key === 'Next')?.line, 12);
  t.same(listValues(u, 'Service', 'Environment').map((e) => e.value), ['B=2'], 'an empty assignment resets the list');
});

t.test('a unit file that does not parse: every problem with file and line', async (t) => {
  const { problems } = parseUnitFile('Orphan=1\n[Unit\n[Unit]\njust words\n=novalue\n[Install]\nWantedBy=multi-user.target\n', 'bad.service');
  t.same(
    problems.map((p) => p.describe()),
    [
      'bad.service:1: assignment Orphan= outside of any section',
      'bad.service:2: invalid section header "[Unit"',
      `bad.service:4: missing '=' in "just words"`,
      'bad.service:5: invalid key ""',
    ],
  );
});

t.test('unit matching: conditions on role files, negation, triggering', async (t) => {
  const roles = (conds: string[]) => unitRoles(unit(`[Unit]\n${conds.map((c) => `ConditionPathExists=${c}`).join('\n')}\n`).unit);
  t.same(roles([]), [], 'no role condition: no role');
  t.same(roles(['/etc/hostname']), [], 'conditions on other paths do not make a role');
  t.same(roles([MINION]), ['minion']);
  t.same(roles([MINION, `!${MASTER}`]), ['minion']);
  t.same(roles([MASTER]), ['master']);
  t.same(roles([`!${MASTER}`]), ['minion'], 'negation alone: every world without the master file');
  t.same(roles([`|${MASTER}`, `|${MINION}`]), ['master', 'minion'], 'triggering conditions are OR-ed');
  t.same(roles([`|${MASTER}`, `|${MINION}`, `!${MINION}`]), ['master']);
  t.same(roles([`|!${MASTER}`, `| ${MASTER}`]), ['master', 'minion'], "'|' then '!', spaces allowed after each");
  t.same(roles([MINION, MASTER]), [], 'contradiction: no role');
  t.same(roles(['/etc/sysconfig//kubernetes-minions']), ['minion'], 'paths are compared normalised');
  t.same(roles([MASTER, '', MINION]), ['minion'], 'an empty assignment resets earlier conditions');
  t.same(roleConditions(unit(`[Unit]\nConditionPathExists=!${MASTER}\n`).unit), [{ role: 'master', negate: true, trigger: false }]);
  t.same(unitRoles(unit(`[Service]\nConditionPathExists=${MINION}\n`).unit), [], 'only [Unit] conditions count');
});

t.test('unit matching agrees with systemd itself (systemd-analyze condition) on random condition sets', async (t) => {
  // systemd-analyze condition checks real paths, so each role's world is a temp dir holding only its file,
  // and the conditions given to systemd point into it; ours keep the role file paths.
  const worlds = { master: await tempRoot(t), minion: await tempRoot(t) };
  for (const role of ['master', 'minion'] as const) await put(worlds[role], role === 'master' ? MASTER : MINION, 'CLUSTER_NAME=a\n');
  const condition = fc.record({ file: fc.constantFrom(MASTER, MINION), prefix: fc.constantFrom('', '!', '|', '|!') });
  await holds(
    t,
    'random condition sets agree with systemd-analyze condition',
    fc.property(fc.array(condition, { minLength: 1, maxLength: 4 }), (conds) => {
      const ours = unitRoles(unit(`[Unit]\n${conds.map((c) => `ConditionPathExists=${c.prefix}${c.file}`).join('\n')}\n`).unit);
      for (const role of ['master', 'minion'] as const) {
        const args = conds.map((c) => `ConditionPathExists=${c.prefix}${worlds[role]}${c.file}`);
        const systemd = spawnSync('systemd-analyze', ['condition', ...args], { encoding: 'utf8' }).status === 0;
        if (systemd !== ours.includes(role)) return false;
      }
      return true;
    }),
    { numRuns: 40 },
  );
});

async function tempRoot(t: Test): Promise<string> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'agent-units-'));
  t.teardown(() => fs.rm(root, { recursive: true, force: true }));
  return root;
}

async function put(root: string, file: string, text: string) {
  await fs.mkdir(path.dirname(path.join(root, file)), { recursive: true });
  await fs.writeFile(path.join(root, file), text);
}

const service = (conds: string[], wantedBy = 'multi-user.target') =>
  `[Unit]\n${conds.map((c) => `ConditionPathExists=${c}\n`).join('')}[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=${wantedBy}\n`;

t.test('real systemctl --root: the set is enabled in one call; a failure enables none of it; a re-run finishes', async (t) => {
  const root = await tempRoot(t);
  const lib = '/usr/lib/systemd/system';
  await put(root, `${lib}/kubelet.service`, service([MINION, `!${MASTER}`]));
  await put(root, `${lib}/kube-proxy.service`, service([MINION], 'broken.target'));
  await put(root, `${lib}/weave.service`, service([`|${MASTER}`, `|${MINION}`]));
  await put(root, `${lib}/kube-apiserver.service`, service([MASTER]));
  await put(root, `${lib}/unrelated.service`, service([]));
  // /etc overrides /usr/lib by name: this kube-apiserver belongs to minions.
  await put(root, `${lib}/override.service`, service([MASTER]));
  await put(root, '/etc/systemd/system/override.service', service([MINION]));
  // A regular file where systemctl must create broken.target.wants/: kube-proxy cannot be enabled.
  await put(root, '/etc/systemd/system/broken.target.wants', 'not a directory\n');
  await fs.symlink('/dev/null', path.join(root, '/etc/systemd/system/masked.service'));
  // Drop-ins: one resets unrelated.service's conditions and makes it a minion unit; an /etc drop-in hides
  // the /usr/lib one of the same name, so kube-apiserver stays a master unit.
  await put(root, `${lib}/unrelated.service.d/10-role.conf`, `[Unit]\nConditionPathExists=\nConditionPathExists=${MINION}\n`);
  await put(root, `${lib}/kube-apiserver.service.d/50-x.conf`, `[Unit]\nConditionPathExists=\nConditionPathExists=${MINION}\n`);
  await put(root, '/etc/systemd/system/kube-apiserver.service.d/50-x.conf', '[Unit]\nDescription=local override\n');

  const logs: string[] = [];
  const host = createHost({ root, write: (l) => logs.push(l) });
  const found = await findUnits(host);
  t.same(
    found.map((u) => [u.name, u.roles]),
    [
      ['kube-apiserver.service', ['master']],
      ['kube-proxy.service', ['minion']],
      ['kubelet.service', ['minion']],
      ['override.service', ['minion']],
      ['unrelated.service', ['minion']],
      ['weave.service', ['master', 'minion']],
    ],
    'masked units and directories are skipped; /etc wins; drop-ins apply in order',
  );
  const first = await applyUnits(host, planUnits(found, 'minion'), { mode: 'bootstrap' });
  t.equal(first.ok, false);
  t.same(first.units.map((s) => s.state), ['failed', 'failed', 'failed', 'failed', 'failed'], 'the set failed as one');
  t.match(first.units[0]?.error, /^enabling kube-proxy\.service kubelet\.service override\.service unrelated\.service weave\.service: cannot link \/etc\/systemd\/system\/broken\.target\.wants\/kube-proxy\.service \(EEXIST.*\); none of them enabled$/);
  const isEnabled = (name: string) =>
    spawnSync('systemctl', [`--root=${root}`, 'is-enabled', name], { encoding: 'utf8' }).stdout.trim();
  for (const name of ['kubelet.service', 'weave.service', 'override.service', 'kube-proxy.service']) t.equal(isEnabled(name), 'disabled', `${name} is not enabled: no half-enabled set`);
  t.ok(logs.some((l) => l.startsWith('units-enable-failed units=kube-proxy.service,kubelet.service')));

  await fs.rm(path.join(root, '/etc/systemd/system/broken.target.wants'));
  const again = await applyUnits(host, planUnits(await findUnits(host), 'minion'), { mode: 'bootstrap' });
  t.same([again.ok, again.changed, again.units.map((s) => s.state)], [true, true, ['enabled', 'enabled', 'enabled', 'enabled', 'enabled']], 're-run finishes the job');
  for (const name of ['kubelet.service', 'weave.service', 'override.service', 'kube-proxy.service']) t.equal(isEnabled(name), 'enabled', `${name} is enabled`);
  t.equal(isEnabled('kube-apiserver.service'), 'disabled', 'the master unit is not enabled');
  const third = await applyUnits(host, planUnits(await findUnits(host), 'minion'), { mode: 'reconcile' });
  t.same([third.ok, third.changed], [true, false], 'a third pass changes nothing');
});

t.test("a broken unit that names no role file does not hold up the role's units; `check` scope still reports it", async (t) => {
  const root = await tempRoot(t);
  await put(root, '/usr/lib/systemd/system/kubelet.service', service([MINION]));
  // A drop-in alone can give a unit a role: its base file must still be read and parsed.
  await put(root, '/usr/lib/systemd/system/plain.service', `[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n`);
  await put(root, '/etc/systemd/system/plain.service.d/role.conf', `[Unit]\nConditionPathExists=${MINION}\n`);
  await put(root, '/usr/lib/systemd/system/vendor-typo.service', '[Unit\nDescription=a packaged unit with a typo\n');
  const host = createHost({ root, write: () => undefined });
  const applied = await applyUnits(host, planUnits(await findUnits(host), 'minion'), { mode: 'bootstrap' });
  t.same(applied.units.map((u) => [u.name, u.state]), [['kubelet.service', 'enabled'], ['plain.service', 'enabled']], 'the role is enabled; the broken vendor unit is not part of it');
  t.ok(applied.ok);
  const all = await findUnits(host, 'all');
  t.match(all.find((u) => u.name === 'vendor-typo.service')?.problems.map((p) => p.describe()), [/vendor-typo\.service:1: invalid section header/], 'agent check still sees it');
});

t.test('a role unit with an [Install] key the agent does not link itself: the set is enabled by systemctl, and the log says why', async (t) => {
  const root = await tempRoot(t);
  await put(root, '/usr/lib/systemd/system/kubelet.service', service([MINION]));
  await put(root, '/usr/lib/systemd/system/held.service', `${service([MINION])}UpheldBy=multi-user.target\n`);
  const logs: string[] = [];
  const host = createHost({ root, write: (l) => logs.push(l) });
  const applied = await applyUnits(host, planUnits(await findUnits(host), 'minion'), { mode: 'bootstrap' });
  t.same([applied.ok, applied.units.map((u) => u.state)], [true, ['enabled', 'enabled']]);
  t.ok(logs.includes('units-enabled-by-systemctl reason="held.service has UpheldBy= in [Install]"'), logs.join('\n'));
  const isEnabled = spawnSync('systemctl', [`--root=${root}`, 'is-enabled', 'held.service', 'kubelet.service'], { encoding: 'utf8' }).stdout;
  t.same(isEnabled.trim().split('\n'), ['enabled', 'enabled']);
});

t.test('a unit file that does not parse is reported and nothing is enabled', async (t) => {
  const root = await tempRoot(t);
  await put(root, '/usr/lib/systemd/system/kubelet.service', service([MINION]));
  await put(root, '/usr/lib/systemd/system/bad.service', `[Unit]\nConditionPathExists=${MINION}\n[Service\n`);
  const host = createHost({ root, write: () => undefined });
  const applied = await applyUnits(host, planUnits(await findUnits(host), 'minion'), { mode: 'bootstrap' });
  t.equal(applied.ok, false);
  t.same(applied.units, [
    { name: 'bad.service', file: '/usr/lib/systemd/system/bad.service', state: 'invalid', error: '/usr/lib/systemd/system/bad.service:3: invalid section header "[Service"' },
    { name: 'kubelet.service', file: '/usr/lib/systemd/system/kubelet.service', state: 'stopped', error: 'not enabled: another unit file is invalid' },
  ]);
  t.equal(spawnSync('systemctl', [`--root=${root}`, 'is-enabled', 'kubelet.service'], { encoding: 'utf8' }).stdout.trim(), 'disabled');
});

t.test('unit states from one systemctl show: what is ready, what reconcile may start', async (t) => {
  const show = [
    'Id=a.service\nLoadState=loaded\nActiveState=activating\nSubState=auto-restart\nResult=exit-code\nType=notify\nUnitFileState=enabled\nJob=',
    'Id=b.service\nLoadState=loaded\nActiveState=inactive\nSubState=dead\nResult=success\nType=simple\nUnitFileState=enabled\nJob=',
    'Id=c.service\nLoadState=loaded\nActiveState=inactive\nSubState=dead\nResult=success\nType=simple\nUnitFileState=disabled\nJob=12',
    'Id=d.service\nLoadState=masked\nActiveState=inactive\nUnitFileState=masked',
    'Id=e.service\nLoadState=loaded\nActiveState=failed\nSubState=failed\nResult=start-limit-hit\nType=simple\nUnitFileState=enabled\nNeedDaemonReload=yes',
  ].join('\n\n');
  const names = ['a.service', 'b.service', 'c.service', 'd.service', 'e.service'];
  const props = parseShow(`${show}\n`, names);
  t.same(
    names.map((n) => classify(props.get(n)!)),
    [
      { state: 'starting', error: 'restarting after a failure (Result=exit-code)' },
      { state: 'stopped' },
      { state: 'starting', error: 'queued' },
      { state: 'masked', error: 'masked (LoadState=masked): an operator turned it off' },
      { state: 'failed', error: 'failed (Result=start-limit-hit)' },
    ],
  );
  t.same(planTransaction(props, 'reconcile'), { unusable: [], reload: true, enable: ['c.service'], resetFailed: ['e.service'], start: ['e.service'] }, 'reconcile: the stopped b.service stays stopped');
  t.same(planTransaction(props, 'bootstrap').start, ['b.service', 'e.service'], 'agent run starts it');
  t.equal(planTransaction(props, 'reconcile', new Set(['e.service'])).reload, false, 'NeedDaemonReload=yes on files systemd loaded as they are (our own enable, systemd 257): no reload');
  t.throws(() => parseShow(show, names.slice(1)), /5 unit blocks for 4 units/);
});

// The live path (no --root) against a real systemd: a `systemd --user` manager (test/helpers/systemd-user.ts).
const simple = (extra = '') => `[Unit]\n${extra}[Service]\nExecStart=/bin/sleep 600\n[Install]\nWantedBy=default.target\n`;
const oneshot = (exec: string) => `[Service]\nType=oneshot\nExecStart=${exec}\n[Install]\nWantedBy=default.target\n`;

async function manager(t: Test): Promise<UserManager> {
  const m = await startUserManager();
  t.teardown(() => m.stop());
  return m;
}

async function liveSet(m: UserManager, units: Record<string, string>) {
  const found = [];
  for (const [name, text] of Object.entries(units)) {
    const file = await m.writeUnit(name, text);
    found.push({ name, file, roles: ['minion' as const], problems: [], unit: parseUnitFile(text, file).unit });
  }
  return { enable: found, invalid: [], known: found };
}

const verbs = (calls: string[]) => calls.map((c) => c.replace(/^show --property=\S+/, 'show'));

t.test('live: one show, one enable, one start for the whole set; ready once all are active (a oneshot: succeeded); no reload', async (t) => {
  const m = await manager(t);
  const plan = await liveSet(m, { 'a.service': simple(), 'b.service': oneshot('/bin/true'), 'c.service': simple('After=a.service\n') });
  const stamp = await m.loadStamp();
  const logs: string[] = [];
  const host = createHost({ env: m.env, write: (l) => logs.push(l) });
  t.equal(host.live, true);
  const calls: string[] = [];
  const take = async () => (calls.push(...verbs(await m.takeCalls())), [...calls]);
  const waits: { on: string | null; after: string[] }[] = [];
  const waiting = async (on: string | null) => void waits.push({ on, after: await take() });
  const applied = await applyUnits(host, plan, { mode: 'bootstrap', configDir: m.unitDir, waiting });
  t.same(applied.units.map((u) => [u.name, u.state]), [['a.service', 'active'], ['b.service', 'succeeded'], ['c.service', 'active']]);
  t.same([applied.ok, applied.changed], [true, true]);
  await take();
  t.same(
    waits[0],
    { on: 'units a.service (starting: queued), b.service (starting: queued), c.service (starting: queued)', after: ['show -- a.service b.service c.service', 'start --no-block -- a.service b.service c.service'] },
    'the wait for the units begins as their jobs are queued, before the first show of them',
  );
  t.equal(waits.at(-1)?.on, null, 'and ends once they are up');
  t.same(calls.slice(0, 2), ['show -- a.service b.service c.service', 'start --no-block -- a.service b.service c.service'], 'the agent links the set itself: no is-enabled, no enable');
  t.same(calls.slice(2).filter((c) => c !== 'show -- a.service b.service c.service'), [], 'then only one show of the set per poll');
  t.equal(await m.loadStamp(), stamp, 'systemd did not reload');
  t.equal((await m.systemctl('is-enabled', 'a.service', 'b.service', 'c.service')).trim(), 'enabled\nenabled\nenabled');
  t.ok(logs.includes('units-started units=a.service,b.service,c.service'));

  // Steady state: one read; nothing enabled, reloaded or started.
  const steady = await applyUnits(host, plan, { mode: 'reconcile', configDir: m.unitDir });
  t.same([steady.ok, steady.changed, verbs(await m.takeCalls())], [true, false, ['show -- a.service b.service c.service']]);

  // An operator stops a unit: reconcile leaves it stopped, and says so.
  await m.systemctl('stop', 'a.service');
  const stopped = await applyUnits(host, plan, { mode: 'reconcile', configDir: m.unitDir });
  t.same([stopped.ok, stopped.changed, verbs(await m.takeCalls())], [true, false, ['show -- a.service b.service c.service']]);
  t.equal(stopped.units[0]?.state, 'stopped');
  t.equal((await m.systemctl('show', '-p', 'ActiveState', 'a.service')).trim(), 'ActiveState=inactive', 'still stopped');

  // A unit that fails is started again, alone.
  await m.systemctl('kill', '--signal=KILL', 'c.service');
  await until('c.service to fail after SIGKILL', async () => (await m.systemctl('show', '-p', 'ActiveState', 'c.service')).trim() === 'ActiveState=failed');
  const healed = await applyUnits(host, plan, { mode: 'reconcile', configDir: m.unitDir });
  t.same(verbs(await m.takeCalls()), ['show -- a.service b.service c.service', 'reset-failed -- c.service', 'start --no-block -- c.service', 'show -- a.service b.service c.service']);
  t.same([healed.ok, healed.changed], [true, true]);
  t.equal(await m.loadStamp(), stamp, 'still no reload');
});

t.test('live: a unit file changed on disk costs exactly one daemon-reload', async (t) => {
  const m = await manager(t);
  const plan = await liveSet(m, { 'a.service': simple() });
  const host = createHost({ env: m.env, write: () => undefined });
  t.equal((await applyUnits(host, plan, { mode: 'bootstrap', configDir: m.unitDir })).ok, true);
  const stamp = await m.loadStamp();
  await m.writeUnit('a.service', simple('Description=changed\n'));
  await m.takeCalls();
  const applied = await applyUnits(host, plan, { mode: 'reconcile', configDir: m.unitDir });
  t.same(verbs(await m.takeCalls()), ['show -- a.service', 'daemon-reload', 'show -- a.service', 'show -- a.service']);
  t.equal(applied.ok, true);
  t.not(await m.loadStamp(), stamp, 'systemd reloaded once');
  t.equal((await m.systemctl('show', '-p', 'Description', 'a.service')).trim(), 'Description=changed');
});

t.test('live: a unit that fails to start leaves the set not ready, with its reason', async (t) => {
  const m = await manager(t);
  const plan = await liveSet(m, { 'a.service': simple(), 'f.service': oneshot('/bin/false') });
  const logs: string[] = [];
  const applied = await applyUnits(createHost({ env: m.env, write: (l) => logs.push(l) }), plan, { mode: 'bootstrap', configDir: m.unitDir });
  t.equal(applied.ok, false);
  t.same(applied.units.map((u) => [u.name, u.state, u.error]), [['a.service', 'active', undefined], ['f.service', 'failed', 'failed (Result=exit-code)']]);
  t.ok(logs.some((l) => l.startsWith('unit-failed unit=f.service')));
});

t.test('live: a unit that is missing or cannot load refuses the whole set; after the fix one pass converges', async (t) => {
  const m = await manager(t);
  const plan = await liveSet(m, { 'a.service': simple(), 'bad.service': `[Service]\nExecStart=relative/path\n[Install]\nWantedBy=default.target\n` });
  plan.enable.push({ name: 'gone.service', file: path.join(m.unitDir, 'gone.service'), roles: ['minion'], problems: [], unit: parseUnitFile(oneshot('/bin/true'), path.join(m.unitDir, 'gone.service')).unit });
  const host = createHost({ env: m.env, write: () => undefined });
  const refused = await applyUnits(host, plan, { mode: 'bootstrap', configDir: m.unitDir });
  t.equal(refused.ok, false);
  t.same(
    refused.units.map((u) => [u.name, u.state]),
    [['a.service', 'stopped'], ['bad.service', 'invalid'], ['gone.service', 'missing']],
  );
  t.match(refused.units[1]?.error, /LoadState=bad-setting/);
  t.match(refused.units[2]?.error, /LoadState=not-found/);
  t.equal(refused.units[0]?.error, 'not started: bad.service, gone.service cannot load');
  t.same(verbs(await m.takeCalls()), ['show -- a.service bad.service gone.service'], 'nothing enabled, nothing started');
  t.same(await fs.readdir(path.join(m.unitDir, 'default.target.wants')).catch(() => []), [], 'no link written');
  t.equal((await m.systemctl('is-enabled', 'a.service').catch((e: { stdout: string }) => e.stdout)).trim(), 'disabled');

  await m.writeUnit('bad.service', simple());
  await m.writeUnit('gone.service', oneshot('/bin/true'));
  const fixed = await applyUnits(host, plan, { mode: 'bootstrap', configDir: m.unitDir });
  t.same(fixed.units.map((u) => [u.name, u.state]), [['a.service', 'active'], ['bad.service', 'active'], ['gone.service', 'succeeded']]);
  t.equal(fixed.ok, true);
});

t.test("the agent's own units pass systemd-analyze verify with no output", async (t) => {
  const units = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'units');
  const verify = spawnSync('systemd-analyze', ['verify', 'kubeseed-agent.service', 'kubeseed-agent.path'], { cwd: units, encoding: 'utf8' });
  t.same([verify.status, verify.stdout, verify.stderr], [0, '', ''], 'exit 0, nothing on stdout or stderr');
  const roles = unitRoles(parseUnitFile(await fs.readFile(path.join(units, 'kubeseed-agent.service'), 'utf8'), 'kubeseed-agent.service').unit);
  t.same(roles, ['master', 'minion'], 'the agent unit belongs to both roles');
});
