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
import { holds } from './helpers/property.js';

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

t.test('real systemctl --root: the role units are enabled, one failure is recorded, a re-run finishes', async (t) => {
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
  const statuses = await applyUnits(host, planUnits(found, 'minion'));
  t.same(
    statuses.map((s) => [s.name, s.state]),
    [
      ['kube-proxy.service', 'failed'],
      ['kubelet.service', 'enabled'],
      ['override.service', 'enabled'],
      ['unrelated.service', 'enabled'],
      ['weave.service', 'enabled'],
    ],
  );
  t.match(statuses[0]?.error, /^systemctl enable kube-proxy\.service failed \(exit \d+\): /);
  const isEnabled = (name: string) =>
    execFileSync('systemctl', [`--root=${root}`, 'is-enabled', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  for (const name of ['kubelet.service', 'weave.service', 'override.service']) t.equal(isEnabled(name), 'enabled', `${name} is enabled`);
  t.throws(() => isEnabled('kube-apiserver.service'), 'the master unit is not enabled');
  t.ok(logs.some((l) => l.startsWith('unit-failed unit=kube-proxy.service')));

  await fs.rm(path.join(root, '/etc/systemd/system/broken.target.wants'));
  const again = await applyUnits(host, planUnits(await findUnits(host), 'minion'));
  t.same(again.map((s) => s.state), ['enabled', 'enabled', 'enabled', 'enabled', 'enabled'], 're-run finishes the job');
  t.equal(isEnabled('kube-proxy.service'), 'enabled');
});

t.test('a unit file that does not parse is reported and the others are still enabled', async (t) => {
  const root = await tempRoot(t);
  await put(root, '/usr/lib/systemd/system/kubelet.service', service([MINION]));
  await put(root, '/usr/lib/systemd/system/bad.service', `[Unit]\nConditionPathExists=${MINION}\n[Service\n`);
  const host = createHost({ root, write: () => undefined });
  const statuses = await applyUnits(host, planUnits(await findUnits(host), 'minion'));
  t.same(statuses, [
    { name: 'bad.service', file: '/usr/lib/systemd/system/bad.service', state: 'invalid', error: '/usr/lib/systemd/system/bad.service:3: invalid section header "[Service"' },
    { name: 'kubelet.service', file: '/usr/lib/systemd/system/kubelet.service', state: 'enabled' },
  ]);
});

t.test('live (no --root): enable then start --no-block each unit; a failed start is recorded, the rest go on', async (t) => {
  // No systemd runs on the test machine, so a live node's systemctl is the recording double.
  const dir = await tempRoot(t);
  const log = path.join(dir, 'calls');
  const double = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'systemctl-double');
  const host = createHost({
    env: { PATH: `${double}:${process.env.PATH}`, SYSTEMCTL_DOUBLE_LOG: log, SYSTEMCTL_DOUBLE_FAIL_START: 'b.service' },
    write: () => undefined,
  });
  t.equal(host.live, true);
  const unit = (name: string) => ({ name, file: `/usr/lib/systemd/system/${name}`, roles: ['minion' as const], problems: [] });
  const statuses = await applyUnits(host, { enable: [unit('a.service'), unit('b.service'), unit('c.service')], invalid: [] });
  t.same(
    statuses.map((s) => [s.name, s.state, s.error]),
    [
      ['a.service', 'started', undefined],
      ['b.service', 'failed', 'systemctl start b.service failed (exit 1): Job for b.service failed.'],
      ['c.service', 'started', undefined],
    ],
  );
  t.same((await fs.readFile(log, 'utf8')).trim().split('\n'), [
    'enable -- a.service',
    'start --no-block -- a.service',
    'enable -- b.service',
    'start --no-block -- b.service',
    'enable -- c.service',
    'start --no-block -- c.service',
  ]);
});

t.test("the agent's own units pass systemd-analyze verify with no output", async (t) => {
  const units = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'units');
  const verify = spawnSync('systemd-analyze', ['verify', 'kubeseed-agent.service', 'kubeseed-agent.path'], { cwd: units, encoding: 'utf8' });
  t.same([verify.status, verify.stdout, verify.stderr], [0, '', ''], 'exit 0, nothing on stdout or stderr');
  const roles = unitRoles(parseUnitFile(await fs.readFile(path.join(units, 'kubeseed-agent.service'), 'utf8'), 'kubeseed-agent.service').unit);
  t.same(roles, ['master', 'minion'], 'the agent unit belongs to both roles');
});
