// image/provision's steps against temporary roots (real bash, node, GNU tar, systemctl --root), and
// image/hygiene-check against planted leftovers. The full root build is `npm run image`.
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, readlink, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
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

const digest = (algorithm: 'sha256' | 'sha512', data: Buffer | string) => createHash(algorithm).update(data).digest('hex');

/** Every regular file and symlink under a root, relative: what an install left behind. */
async function filesUnder(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries.filter((e) => !e.isDirectory()).map((e) => path.relative(root, path.join(e.parentPath, e.name))).sort();
}

/** A gzipped tar of `files` (path → content), made by GNU tar as upstream tarballs are. */
async function tarball(dir: string, name: string, files: Record<string, string>, prefix = ''): Promise<Buffer> {
  const src = await mkdtemp(path.join(dir, 'src-'));
  for (const [rel, content] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(src, rel)), { recursive: true });
    await writeFile(path.join(src, rel), content);
  }
  const r = await sh('tar', ['-czf', path.join(dir, name), '-C', src, ...(prefix ? [prefix] : Object.keys(files))]);
  if (r.code !== 0) throw new Error(r.stderr);
  return readFile(path.join(dir, name));
}

/**
 * An OCI image layout tar (what `skopeo copy ... oci-archive:` writes): an index naming an amd64 and an arm64
 * manifest, the amd64 one with two layers; the upper layer deletes /usr/bin/stale with a whiteout.
 */
async function ociArchive(dir: string, name: string): Promise<{ index: string; layers: string[] }> {
  const layout = await mkdtemp(path.join(dir, 'layout-'));
  await mkdir(path.join(layout, 'blobs', 'sha256'), { recursive: true });
  const blob = async (data: Buffer | string) => {
    const hex = digest('sha256', data);
    await writeFile(path.join(layout, 'blobs', 'sha256', hex), data);
    return { digest: `sha256:${hex}`, size: Buffer.byteLength(data), hex };
  };
  const lower = await blob(await tarball(dir, 'lower.tar.gz', { 'home/weave/weaver': 'old weaver\n', 'usr/bin/stale': 'deleted above\n' }));
  const upper = await blob(await tarball(dir, 'upper.tar.gz', { 'home/weave/weaver': '#!/bin/sh\necho weaver-double\n', 'usr/bin/weaveutil': '#!/bin/sh\necho weaveutil-double\n', 'usr/bin/.wh.stale': '' }));
  const config = await blob('{}');
  const layer = (l: { digest: string; size: number }) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.size });
  const manifest = await blob(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config.digest, size: config.size }, layers: [layer(lower), layer(upper)] }));
  const arm = await blob(JSON.stringify({ schemaVersion: 2, layers: [] }));
  const index = await blob(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [
      { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: arm.digest, size: arm.size, platform: { os: 'linux', architecture: 'arm64' } },
      { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: manifest.digest, size: manifest.size, platform: { os: 'linux', architecture: 'amd64' } },
    ],
  }));
  await writeFile(path.join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ digest: index.digest, size: index.size }] }));
  await writeFile(path.join(layout, 'oci-layout'), '{"imageLayoutVersion": "1.0.0"}');
  const r = await sh('tar', ['-cf', path.join(dir, name), '-C', layout, 'oci-layout', 'index.json', 'blobs']);
  if (r.code !== 0) throw new Error(r.stderr);
  return { index: index.hex, layers: [lower.hex, upper.hex] };
}

type Manifest = { components: Record<string, unknown>[] };

/**
 * A components dir with one of each kind, as upstreams publish them: a single file by sha256, a tarball by
 * sha512 whose members sit under "./" (as the CNI plugins') beside files that must not be installed, and an OCI
 * image by its index digest; and its manifest.
 */
async function componentsFixture(dir: string, tweak: (m: Manifest) => void = () => {}) {
  const comp = path.join(dir, 'components');
  await mkdir(comp, { recursive: true });
  const kubelet = '#!/bin/sh\necho kubelet-double "$@"\n';
  await writeFile(path.join(comp, 'kubelet'), kubelet);
  const cni = await tarball(comp, 'cni-plugins-v9.tgz', { bridge: '#!/bin/sh\necho bridge-double\n', loopback: '#!/bin/sh\necho loopback\n', 'README.md': 'not installed\n' }, '.');
  const image = await ociArchive(dir, 'weave.oci.tar');
  await rename(path.join(dir, 'weave.oci.tar'), path.join(comp, 'weave-9.oci.tar'));
  const manifest: Manifest = {
    components: [
      { name: 'kubelet', version: '9.0.0', kind: 'file', url: 'https://components.invalid/{version}/kubelet', digest: digest('sha256', kubelet), source: 'test', dest: '/usr/local/bin/kubelet' },
      {
        name: 'cni-plugins',
        version: '9',
        kind: 'tarball',
        url: 'https://components.invalid/cni-plugins-v{version}.tgz',
        digest: digest('sha512', cni),
        source: 'test',
        members: { bridge: '/opt/cni/bin/bridge', './loopback': '/opt/cni/bin/loopback' },
      },
      {
        name: 'weave',
        version: '9',
        kind: 'oci',
        image: 'registry.invalid/weave/weave-kube',
        digest: image.index,
        source: 'test',
        members: { 'home/weave/weaver': '/usr/local/bin/weaver', 'usr/bin/weaveutil': '/opt/cni/bin/weave-net' },
        links: { '/opt/cni/bin/weave-ipam': 'weave-net' },
      },
    ],
  };
  tweak(manifest);
  await writeFile(path.join(dir, 'manifest.json'), JSON.stringify(manifest));
  return { comp, manifest: path.join(dir, 'manifest.json'), image };
}

/** A fixture dir with an empty root, and provision's components step on it. */
async function provisionComponents(t: Test, tweak?: (m: Manifest) => void, edit: (comp: string, image: { index: string; layers: string[] }) => Promise<void> = async () => {}) {
  const dir = await tempDir(t, 'kubeseed-prov-');
  const root = path.join(dir, 'root');
  await mkdir(root);
  const { comp, manifest, image } = await componentsFixture(dir, tweak);
  await edit(comp, image);
  const r = await sh(PROVISION, ['components', '--root', root, '--components-dir', comp, '--manifest', manifest]);
  return { r, root, comp, image };
}

t.test('components: a file, tarball members and image members land in the root, mode 0755, nothing else', async (t) => {
  const { r, root } = await provisionComponents(t);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /component cni-plugins 9: sha512 verified, \/opt\/cni\/bin\/bridge \/opt\/cni\/bin\/loopback\n/);
  t.match(r.stdout, /components: 3 verified and installed/);
  t.same(await filesUnder(root), ['opt/cni/bin/bridge', 'opt/cni/bin/loopback', 'opt/cni/bin/weave-ipam', 'opt/cni/bin/weave-net', 'usr/local/bin/kubelet', 'usr/local/bin/weaver'], 'only the named members; the work dir is gone');
  t.equal((await sh(path.join(root, 'usr/local/bin/kubelet'), ['--version'])).stdout, 'kubelet-double --version\n');
  t.equal((await sh(path.join(root, 'opt/cni/bin/bridge'), [])).stdout, 'bridge-double\n', 'a "./" member by its plain name');
  t.equal((await sh(path.join(root, 'usr/local/bin/weaver'), [])).stdout, 'weaver-double\n', 'the topmost layer wins');
  t.equal((await sh(path.join(root, 'opt/cni/bin/weave-ipam'), [])).stdout, 'weaveutil-double\n', 'the link reaches the plugin');
  t.equal(await readlink(path.join(root, 'opt/cni/bin/weave-ipam')), 'weave-net');
  for (const f of ['usr/local/bin/kubelet', 'opt/cni/bin/bridge', 'opt/cni/bin/weave-net']) t.equal((await stat(path.join(root, f))).mode & 0o777, 0o755, `${f} is 0755`);
  const again = await sh(PROVISION, ['components', '--root', root, '--components-dir', path.join(path.dirname(root), 'components'), '--manifest', path.join(path.dirname(root), 'manifest.json')]);
  t.equal(again.code, 0, `a second run over the installed root: ${again.stderr}`);
});

t.test('a wrong digest stops the build naming component, file, expected and actual; nothing is installed', async (t) => {
  const { r, root, comp } = await provisionComponents(t, (m) => {
    (m.components[1] as { digest: string }).digest = 'a'.repeat(128);
  });
  t.equal(r.code, 1);
  const actual = digest('sha512', await readFile(path.join(comp, 'cni-plugins-v9.tgz')));
  t.equal(r.stderr, `provision: sha512 mismatch for component cni-plugins (${path.join(comp, 'cni-plugins-v9.tgz')}): expected ${'a'.repeat(128)}, got ${actual}\n`);
  t.same(await filesUnder(root), [], 'the good component before it was not installed either');
});

t.test('a missing tarball member stops the build naming member and archive; nothing is installed', async (t) => {
  const { r, root, comp } = await provisionComponents(t, (m) => {
    (m.components[1] as { members: Record<string, string> }).members = { bridge: '/opt/cni/bin/bridge', flannel: '/opt/cni/bin/flannel' };
  });
  t.equal(r.code, 1);
  t.equal(r.stderr, `provision: component cni-plugins: ${path.join(comp, 'cni-plugins-v9.tgz')} has no member flannel\n`);
  t.same(await filesUnder(root), []);
});

t.test('a tarball member that is a symlink is refused (it could point anywhere in the root); nothing is installed', async (t) => {
  const dir = await tempDir(t, 'kubeseed-prov-');
  const root = path.join(dir, 'root');
  const comp = path.join(dir, 'components');
  await mkdir(path.join(comp, 'src'), { recursive: true });
  await mkdir(root);
  await symlink('/etc/shadow', path.join(comp, 'src', 'bridge'));
  const made = await sh('tar', ['-czf', path.join(comp, 'cni.tgz'), '-C', path.join(comp, 'src'), 'bridge']);
  t.equal(made.code, 0, made.stderr);
  const manifest = path.join(dir, 'manifest.json');
  const sum = digest('sha256', await readFile(path.join(comp, 'cni.tgz')));
  await writeFile(manifest, JSON.stringify({ components: [{ name: 'cni-plugins', version: '9', kind: 'tarball', url: 'https://components.invalid/9/cni.tgz', digest: sum, source: 'test', members: { bridge: '/opt/cni/bin/bridge' } }] }));
  const r = await sh(PROVISION, ['components', '--root', root, '--components-dir', comp, '--manifest', manifest]);
  t.equal(r.code, 1);
  t.equal(r.stderr, `provision: component cni-plugins: member bridge of ${path.join(comp, 'cni.tgz')} is not a regular file\n`);
  t.same(await filesUnder(root), []);
});

t.test('a digest of the wrong length is refused before anything is read; nothing is installed', async (t) => {
  const { r, root } = await provisionComponents(t, (m) => {
    (m.components[2] as { digest: string }).digest = 'a'.repeat(100);
  });
  t.equal(r.code, 1);
  t.match(r.stderr, /^provision: .*manifest\.json: weave: digest "a{100}" has 100 hex digits: a sha256 has 64, a sha512 128\n$/);
  t.same(await filesUnder(root), []);
});

t.test('an image: a corrupted layer and a member the image deleted each stop the build; nothing is installed', async (t) => {
  const corrupted = await provisionComponents(t, undefined, async (comp, image) => {
    // Rewrite the upper layer inside the layout tar with other bytes under the same digest name.
    const dir = await mkdtemp(path.join(comp, 'edit-'));
    await sh('tar', ['-xf', path.join(comp, 'weave-9.oci.tar'), '-C', dir]);
    await writeFile(path.join(dir, 'blobs', 'sha256', image.layers[1] as string), 'tampered');
    await sh('tar', ['-cf', path.join(comp, 'weave-9.oci.tar'), '-C', dir, 'oci-layout', 'index.json', 'blobs']);
    await rm(dir, { recursive: true });
  });
  t.equal(corrupted.r.code, 1);
  t.match(corrupted.r.stderr, new RegExp(`^provision: sha256 mismatch for component weave \\(.*/blobs/sha256/${corrupted.image.layers[1]}\\): expected ${corrupted.image.layers[1]}, got ${digest('sha256', 'tampered')}\\n$`));
  t.same(await filesUnder(corrupted.root), []);
  const deleted = await provisionComponents(t, (m) => {
    (m.components[2] as { members: Record<string, string> }).members = { 'usr/bin/stale': '/usr/local/bin/stale' };
  });
  t.equal(deleted.r.code, 1);
  t.match(deleted.r.stderr, /^provision: component weave: image registry\.invalid\/weave\/weave-kube@sha256:[0-9a-f]{64} has no member usr\/bin\/stale\n$/);
  t.same(await filesUnder(deleted.root), []);
});

/**
 * A registry double over HTTPS on loopback, speaking the distribution API as Docker Hub does: 401 with a Bearer
 * challenge, an anonymous token from the realm, then manifests and blobs by digest. `tamper` swaps one blob's bytes.
 */
async function registryDouble(t: Test, dir: string, layout: string, tamper?: string) {
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  const made = await sh('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=registry-double', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert]);
  if (made.code !== 0) throw new Error(made.stderr);
  const seen: string[] = [];
  const server = createServer({ key: await readFile(key), cert: await readFile(cert) }, async (req, res) => {
    const url = req.url ?? '';
    seen.push(`${req.headers.authorization ? 'token' : 'anonymous'} ${url.replace(/[0-9a-f]{64}/, 'DIGEST')}`);
    if (url.startsWith('/token?')) return void res.end(JSON.stringify({ token: 'pull-token' }));
    const m = /^\/v2\/weave\/weave-kube\/(manifests|blobs)\/sha256:([0-9a-f]{64})$/.exec(url);
    if (!m) return void res.writeHead(404).end();
    if (req.headers.authorization !== 'Bearer pull-token') {
      const { port } = server.address() as AddressInfo;
      res.writeHead(401, { 'www-authenticate': `Bearer realm="https://127.0.0.1:${port}/token",service="registry-double",scope="repository:weave/weave-kube:pull"` });
      return void res.end();
    }
    res.end(m[2] === tamper ? 'tampered' : await readFile(path.join(layout, 'blobs', 'sha256', m[2] as string)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { port: (server.address() as AddressInfo).port, cert, seen };
}

t.test('an image is pulled from its registry (Bearer token), every blob verified; a tampered blob installs nothing', async (t) => {
  for (const tampered of [false, true]) {
    const dir = await tempDir(t, 'kubeseed-registry-');
    const root = path.join(dir, 'root');
    const layout = path.join(dir, 'layout');
    await mkdir(root);
    await mkdir(layout);
    const image = await ociArchive(dir, 'weave.oci.tar');
    await sh('tar', ['-xf', path.join(dir, 'weave.oci.tar'), '-C', layout]);
    const registry = await registryDouble(t, dir, layout, tampered ? image.layers[0] : undefined);
    const manifest = path.join(dir, 'manifest.json');
    await writeFile(manifest, JSON.stringify({
      components: [{
        name: 'weave', version: '9', kind: 'oci', image: `127.0.0.1:${registry.port}/weave/weave-kube`, digest: image.index, source: 'test',
        members: { 'home/weave/weaver': '/usr/local/bin/weaver' },
      }],
    }));
    const r = await new Promise<Result>((resolve) =>
      execFile(PROVISION, ['components', '--root', root, '--manifest', manifest], { env: { ...process.env, ROOT: '', NODE_EXTRA_CA_CERTS: registry.cert } }, (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
      ),
    );
    if (!tampered) {
      t.equal(r.code, 0, r.stderr);
      t.equal((await sh(path.join(root, 'usr/local/bin/weaver'), [])).stdout, 'weaver-double\n');
      t.same(registry.seen.slice(0, 3), ['anonymous /v2/weave/weave-kube/manifests/sha256:DIGEST', `anonymous /token?service=registry-double&scope=${encodeURIComponent('repository:weave/weave-kube:pull')}`, 'token /v2/weave/weave-kube/manifests/sha256:DIGEST'], 'challenge, token, then the pinned index');
      t.same(registry.seen.slice(3).map((l) => l.replace(/ .*\//, ' ')), ['token sha256:DIGEST', 'token sha256:DIGEST', 'token sha256:DIGEST'], 'the amd64 manifest, then its two layers');
    } else {
      t.equal(r.code, 1);
      t.match(r.stderr, new RegExp(`^provision: sha256 mismatch for component weave \\(.*/blobs/sha256/${image.layers[0]}\\): expected ${image.layers[0]}, got ${digest('sha256', 'tampered')}\\n$`));
      t.same(await filesUnder(root), [], 'nothing installed');
    }
  }
});

t.test('a component without a digest is refused before anything is fetched', async (t) => {
  const dir = await tempDir(t, 'kubeseed-prov-');
  const root = path.join(dir, 'root');
  await mkdir(root);
  const { manifest } = await componentsFixture(dir, (m) => {
    (m.components[0] as { digest: null }).digest = null;
  });
  // No --components-dir: a pinned component would be downloaded (and fail here); the refusal comes first.
  const r = await sh(PROVISION, ['components', '--root', root, '--manifest', manifest]);
  t.equal(r.code, 1);
  t.match(r.stderr, /manifest\.json: kubelet: has no "digest"/);
  t.notMatch(r.stderr, /download/);
});

t.test('a missing file in --components-dir is named', async (t) => {
  const { r, comp } = await provisionComponents(t, undefined, (comp) => rm(path.join(comp, 'kubelet')));
  t.equal(r.code, 1);
  t.match(r.stderr, `component kubelet: ${path.join(comp, 'kubelet')} not found in --components-dir`);
});

t.test('offline steps on an empty root: agent, units, kernel, enable, version, hygiene, updated, check', async (t) => {
  const root = await tempDir(t, 'kubeseed-root-');
  const steps = ['components', 'agent', 'units', 'kernel', 'cloud-init', 'enable', 'version', 'hygiene', 'updated', 'check'];
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
  // Mounted whenever a disk labelled kubeseed-etcd appears, whatever the role.
  t.equal(
    await readlink(path.join(root, 'etc/systemd/system/dev-disk-by\\x2dlabel-kubeseed\\x2detcd.device.wants/kubeseed-etcd-disk.service')),
    '/usr/lib/systemd/system/kubeseed-etcd-disk.service',
    "kubeseed-etcd-disk.service is wanted by the labelled disk's device",
  );
  t.match(await readFile(path.join(root, 'etc/sysctl.d/90-kubeseed.conf'), 'utf8'), /^net\.bridge\.bridge-nf-call-iptables = 1$/m);
  t.match(await readFile(path.join(root, 'etc/modules-load.d/kubeseed.conf'), 'utf8'), /^br_netfilter$/m);
  t.match(await readFile(path.join(root, 'etc/cloud/cloud.cfg.d/90-kubeseed-nocloud.cfg'), 'utf8'), /datasource_list: \[ NoCloud, None \]/);
  // An empty machine-id makes the first boot apply presets to every unit (Debian's enable anything unlisted).
  const preset = await sh('systemctl', ['--root', root, 'preset-all', '--preset-mode=enable-only']);
  t.equal(preset.code, 0, preset.stderr);
  t.equal((await sh('systemctl', ['--root', root, 'is-enabled', 'kubelet.service'])).stdout.trim(), 'disabled', 'presets leave role units to the agent');
  t.equal((await sh('systemctl', ['--root', root, 'is-enabled', 'kubeseed-agent.path'])).stdout.trim(), 'enabled');
  t.equal((await sh('systemctl', ['--root', root, 'is-enabled', 'kubeseed-etcd-disk.service'])).stdout.trim(), 'enabled', 'presets keep the etcd disk mount');
  const node = await sh('node', [path.join(root, 'usr/local/lib/kubeseed/agent.js'), '--version']);
  t.match(node.stdout, /^kubeseed-agent \S+/);
  // systemd's ConditionNeedsUpdate= is false while /usr is not newer than the stamp, by mtime then TIMESTAMP_NSEC:
  // the booted e2e node checks that the update units were skipped.
  const usr = await stat(path.join(root, 'usr'), { bigint: true });
  for (const dir of ['etc', 'var']) {
    const stamp = path.join(root, dir, '.updated');
    t.match(await readFile(stamp, 'utf8'), new RegExp(`^TIMESTAMP_NSEC=${usr.mtimeNs}$`, 'm'), `/${dir}/.updated holds /usr's time in ns`);
    t.equal((await stat(stamp, { bigint: true })).mtimeNs, usr.mtimeNs, `/${dir}/.updated has /usr's mtime`);
  }
});

t.test('the command line: --help on stdout exit 0; an unknown step, flag or missing value exit 2, naming it', async (t) => {
  const help = await sh(PROVISION, ['--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /^The one provision step of every kubeseed image/);
  t.match(help.stdout, /--components-dir DIR/);
  const cases: [string[], string][] = [
    [['bake'], "provision: unknown step 'bake'"],
    [['agent', '--colour', 'x'], 'provision: unknown flag --colour'],
    [['agent', '--root'], 'provision: --root needs a value'],
    [['agent', '--root', '--units', 'x'], 'provision: --root needs a value'],
    [['agent', '--root', '/nonexistent-root'], "provision: --root '/nonexistent-root' is not a directory"],
    [['cloud-init', '--root', tmpdir(), '--cloud-init', 'ec2'], "provision: --cloud-init: only 'nocloud' is known, got 'ec2'"],
  ];
  for (const [args, line] of cases) {
    const r = await sh(PROVISION, args);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr.split('\n')[0], line);
    t.match(r.stderr, /\n {2}provision STEP \[options\]/, 'then the usage');
  }
  const packages = await sh(PROVISION, ['packages', '--root', tmpdir()]);
  t.equal(packages.code, 1);
  t.match(packages.stderr, /apt installs only into the running system/);
});

t.test("npm run image's command line: --help exit 0, usage mistakes exit 2 naming the flag; nothing is built", async (t) => {
  const image = (args: string[]) => sh('npx', ['tsx', path.join(REPO, 'image', 'build-local.ts'), ...args]);
  const [help, unknown, lone] = await Promise.all([image(['--help']), image(['--ouT', 'x']), image(['--manifest', 'x.json'])]);
  t.equal(help.code, 0);
  t.match(help.stdout, /^usage: npm run image -- /);
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, /^image: unknown flag --ouT\nusage: npm run image/);
  t.equal(lone.code, 2);
  t.match(lone.stderr, /^image: --manifest "x\.json" goes with --components-dir/);
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
