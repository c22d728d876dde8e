// image/provision's steps against temporary roots (real bash, sha256sum, tar, systemctl --root), and
// image/hygiene-check against planted leftovers. The full root build is `npm run image`.
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const PROVISION = path.join(REPO, 'image', 'provision');
const HYGIENE_CHECK = path.join(REPO, 'image', 'hygiene-check');
const DOUBLES = path.join(REPO, 'test', 'fixtures', 'components-double');

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function sh(cmd: string, args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: { ...process.env, ROOT: '' } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

async function tempDir(t: Test, prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(() => true, () => false);
}

const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

/** A components dir with one file component and one tar component, and its manifest. */
async function componentsFixture(dir: string, tweak: (m: { components: Record<string, unknown>[] }) => void = () => {}) {
  const comp = path.join(dir, 'components');
  await mkdir(path.join(comp, 'src', 'etcd-v9-linux', 'docs'), { recursive: true });
  const kubelet = '#!/bin/sh\necho kubelet-double "$@"\n';
  await writeFile(path.join(comp, 'kubelet'), kubelet);
  await writeFile(path.join(comp, 'src', 'etcd-v9-linux', 'etcd'), '#!/bin/sh\necho etcd-double\n');
  await chmod(path.join(comp, 'src', 'etcd-v9-linux', 'etcd'), 0o755);
  await writeFile(path.join(comp, 'src', 'etcd-v9-linux', 'docs', 'README'), 'not installed\n');
  const tar = await sh('tar', ['-czf', path.join(comp, 'etcd-v9.tar.gz'), '-C', path.join(comp, 'src'), 'etcd-v9-linux']);
  if (tar.code !== 0) throw new Error(tar.stderr);
  const manifest = {
    components: [
      { name: 'kubelet', version: '9.0.0', url: 'https://components.invalid/9.0.0/kubelet', sha256: sha256(kubelet), install: { kind: 'file', dest: '/usr/local/bin/kubelet' } },
      {
        name: 'etcd',
        version: '9',
        url: 'https://components.invalid/etcd-v9.tar.gz',
        sha256: sha256(await readFile(path.join(comp, 'etcd-v9.tar.gz'))),
        install: { kind: 'tar', dest: '/usr/local/bin', strip: 1, members: ['etcd-v9-linux/etcd'], provides: ['/usr/local/bin/etcd'] },
      },
    ] as Record<string, unknown>[],
  };
  tweak(manifest);
  await writeFile(path.join(dir, 'manifest.json'), JSON.stringify(manifest));
  return { comp, manifest: path.join(dir, 'manifest.json') };
}

t.test('components: verified files and tar members land in the root', async (t) => {
  const dir = await tempDir(t, 'kubeseed-prov-');
  const root = path.join(dir, 'root');
  await mkdir(root);
  const { comp, manifest } = await componentsFixture(dir);
  const r = await sh(PROVISION, ['components', '--root', root, '--components-dir', comp, '--manifest', manifest]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /components: 2 verified and installed/);
  t.equal((await sh(path.join(root, 'usr/local/bin/kubelet'), ['--version'])).stdout, 'kubelet-double --version\n');
  t.same((await readdir(path.join(root, 'usr/local/bin'))).sort(), ['etcd', 'kubelet'], 'only the listed tar member, stripped');
});

t.test('a wrong sha256 stops the build, names the component and file, and installs nothing', async (t) => {
  const dir = await tempDir(t, 'kubeseed-prov-');
  const root = path.join(dir, 'root');
  await mkdir(root);
  const { comp, manifest } = await componentsFixture(dir, (m) => {
    (m.components[1] as { sha256: string }).sha256 = 'a'.repeat(64);
  });
  const r = await sh(PROVISION, ['components', '--root', root, '--components-dir', comp, '--manifest', manifest]);
  t.equal(r.code, 1);
  t.match(r.stderr, `sha256 mismatch for component etcd (${path.join(comp, 'etcd-v9.tar.gz')}): expected ${'a'.repeat(64)}`);
  t.notOk(await exists(path.join(root, 'usr/local/bin/kubelet')), 'the good component before it was not installed either');
});

t.test('a component without a pinned sha256 is refused before anything is fetched', async (t) => {
  const dir = await tempDir(t, 'kubeseed-prov-');
  const root = path.join(dir, 'root');
  await mkdir(root);
  const { manifest } = await componentsFixture(dir, (m) => {
    (m.components[0] as { sha256: null }).sha256 = null;
  });
  // No --components-dir: a pinned component would be downloaded (and fail here); the refusal comes first.
  const r = await sh(PROVISION, ['components', '--root', root, '--manifest', manifest]);
  t.equal(r.code, 1);
  t.match(r.stderr, /no pinned sha256 in .*manifest\.json for: kubelet 9\.0\.0: refusing/);
  t.notMatch(r.stderr, /download/);
});

t.test('the committed manifest is refused while it has unpinned components, naming each', async (t) => {
  const dir = await tempDir(t, 'kubeseed-prov-');
  const r = await sh(PROVISION, ['components', '--root', dir]);
  const doc = JSON.parse(await readFile(path.join(REPO, 'image', 'components.json'), 'utf8')) as { components: { name: string; sha256: string | null }[] };
  const unpinned = doc.components.filter((c) => c.sha256 === null).map((c) => c.name);
  if (unpinned.length === 0) {
    t.pass('every component is pinned');
    return;
  }
  t.equal(r.code, 1);
  for (const name of unpinned) t.match(r.stderr, new RegExp(`\\b${name} `), `names ${name}`);
});

t.test('a missing file in --components-dir is named', async (t) => {
  const dir = await tempDir(t, 'kubeseed-prov-');
  const { comp, manifest } = await componentsFixture(dir);
  await rm(path.join(comp, 'kubelet'));
  const r = await sh(PROVISION, ['components', '--root', dir, '--components-dir', comp, '--manifest', manifest]);
  t.equal(r.code, 1);
  t.match(r.stderr, `component kubelet: ${path.join(comp, 'kubelet')} not found`);
});

t.test('offline steps on an empty root: agent, units, kernel, enable, version, hygiene, check', async (t) => {
  const root = await tempDir(t, 'kubeseed-root-');
  const steps = ['components', 'agent', 'units', 'kernel', 'cloud-init', 'enable', 'version', 'hygiene', 'check'];
  for (const step of steps) {
    const r = await sh(PROVISION, [
      step, '--root', root, '--components-dir', DOUBLES, '--manifest', path.join(DOUBLES, 'manifest.json'),
      '--agent', path.join(REPO, 'dist', 'agent.js'), '--image-version', 'kubeseed-test-1',
      // NoCloud also enables systemd-networkd, which an empty root does not have: the image build checks that.
      ...(step === 'cloud-init' ? ['--cloud-init', 'nocloud'] : []),
    ]);
    t.equal(r.code, 0, `${step}: ${r.stderr}`);
  }
  t.equal((await readFile(path.join(root, 'etc/kubeseed/image-version'), 'utf8')).trim(), 'kubeseed-test-1');
  t.match(await readFile(path.join(root, 'usr/local/bin/agent'), 'utf8'), 'exec /usr/bin/node /usr/local/lib/kubeseed/agent.js "$@"');
  t.ok(await exists(path.join(root, 'usr/local/lib/kubeseed/agent.js')));
  for (const unit of await readdir(path.join(REPO, 'units'))) t.ok(await exists(path.join(root, 'usr/lib/systemd/system', unit)), `${unit} installed`);
  const enabled = await sh('systemctl', ['--root', root, 'is-enabled', 'kubeseed-agent.path']);
  t.equal(enabled.stdout.trim(), 'enabled');
  t.match(await readFile(path.join(root, 'etc/sysctl.d/90-kubeseed.conf'), 'utf8'), /^net\.bridge\.bridge-nf-call-iptables = 1$/m);
  t.match(await readFile(path.join(root, 'etc/modules-load.d/kubeseed.conf'), 'utf8'), /^br_netfilter$/m);
  t.match(await readFile(path.join(root, 'etc/cloud/cloud.cfg.d/90-kubeseed-nocloud.cfg'), 'utf8'), /datasource_list: \[ NoCloud, None \]/);
  // An empty machine-id makes the first boot apply presets to every unit (Debian's enable anything unlisted).
  const preset = await sh('systemctl', ['--root', root, 'preset-all', '--preset-mode=enable-only']);
  t.equal(preset.code, 0, preset.stderr);
  t.equal((await sh('systemctl', ['--root', root, 'is-enabled', 'kubelet.service'])).stdout.trim(), 'disabled', 'presets leave role units to the agent');
  t.equal((await sh('systemctl', ['--root', root, 'is-enabled', 'kubeseed-agent.path'])).stdout.trim(), 'enabled');
  const node = await sh('node', [path.join(root, 'usr/local/lib/kubeseed/agent.js'), '--version']);
  t.match(node.stdout, /^kubeseed-agent \S+/);
});

t.test('unknown steps and options are refused', async (t) => {
  t.match((await sh(PROVISION, ['bake'])).stderr, /unknown step 'bake'/);
  t.match((await sh(PROVISION, ['agent', '--colour', 'x'])).stderr, /unknown option --colour/);
  t.match((await sh(PROVISION, ['packages', '--root', tmpdir()])).stderr, /apt installs only into the running system/);
});

/** Every kind of machine state the hygiene step removes, planted in a small fixture root. */
/** [path, content, what the check lists it as (default: the path)] */
const PLANTED: [string, string, string?][] = [
  ['etc/ssh/ssh_host_ed25519_key', 'PRIVATE'],
  ['etc/ssh/ssh_host_ed25519_key.pub', 'ssh-ed25519 AAAA'],
  ['etc/machine-id', '0123456789abcdef0123456789abcdef\n'],
  ['var/lib/dbus/machine-id', '0123456789abcdef0123456789abcdef\n'],
  ['var/lib/systemd/random-seed', 'seed'],
  ['var/lib/cloud/instances/i-123/user-data.txt', 'secret', 'var/lib/cloud/instances'],
  ['var/lib/cloud/data/instance-id', 'i-123', 'var/lib/cloud/data'],
  ['var/log/cloud-init.log', 'boot'],
  ['var/log/journal/abc/system.journal', 'j'],
  ['var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease', 'x'],
  ['root/.ssh/authorized_keys', 'ssh-ed25519 AAAA builder'],
  ['home/admin/.ssh/authorized_keys', 'ssh-ed25519 AAAA packer'],
  ['root/.bash_history', 'ls'],
  ['etc/sysconfig/kubernetes-masters', 'CLUSTER_NAME=x'],
  ['etc/hostname', 'build-host\n'],
  ['etc/resolv.conf', 'nameserver 10.0.0.2\n'],
];

async function plant(root: string): Promise<void> {
  for (const [rel, content] of PLANTED) {
    await mkdir(path.dirname(path.join(root, rel)), { recursive: true });
    await writeFile(path.join(root, rel), content);
  }
  await mkdir(path.join(root, 'var/lib/apt/lists/partial'), { recursive: true });
}

t.test('hygiene-check lists every planted leftover and fails', async (t) => {
  const root = await tempDir(t, 'kubeseed-dirty-');
  await plant(root);
  const r = await sh(HYGIENE_CHECK, [root]);
  t.equal(r.code, 1);
  t.match(r.stderr, /hygiene-check: \d+ leftover\(s\)/);
  for (const [rel, , listed = rel] of PLANTED) t.match(r.stderr, `: /${listed}\n`, `lists /${listed}`);
  t.equal(r.stderr.split('\n').filter((l) => l.startsWith('  ')).length, PLANTED.length, 'and nothing else');
});

t.test('provision hygiene cleans the planted root, and the check then passes', async (t) => {
  const root = await tempDir(t, 'kubeseed-dirty-');
  await plant(root);
  const clean = await sh(PROVISION, ['hygiene', '--root', root]);
  t.equal(clean.code, 0, clean.stderr);
  const r = await sh(HYGIENE_CHECK, [root]);
  t.equal(r.code, 0, r.stderr);
  t.equal(await readFile(path.join(root, 'etc/machine-id'), 'utf8'), '', 'machine-id is an empty file (systemd makes one at first boot)');
  t.ok(await exists(path.join(root, 'var/log/cloud-init.log')), 'log files stay, emptied');
  t.equal((await stat(path.join(root, 'var/log/cloud-init.log'))).size, 0);
  t.ok(await exists(path.join(root, 'var/lib/apt/lists/partial')), "apt's own partial dir stays");
});

t.test('hygiene-check on a missing root is a usage error', async (t) => {
  const r = await sh(HYGIENE_CHECK, [path.join(tmpdir(), 'kubeseed-no-such-root')]);
  t.equal(r.code, 2);
});
