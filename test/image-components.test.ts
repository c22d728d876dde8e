// The pinned-components manifest (image/components.json) and the doubles' manifest, through the same
// checks `npm run components` and provision run (image/manifest.mjs); and the disk-boot module order read from modules.dep.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkManifest, missingPrograms } from '../image/components.js';
import { DEBIAN_COMPONENTS, TEST_IMAGE_DEBIAN_COMPONENTS } from '../image/debian-components.js';
import { loadOrder, parseBuiltin, parseModulesDep } from '../image/kernel-modules.js';
import { unitBinaries } from '../scripts/unit-binaries.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const readJson = async (rel: string) => JSON.parse(await readFile(path.join(REPO, rel), 'utf8')) as { components: Record<string, unknown>[] };

const good = (): Record<string, unknown> => ({
  name: 'kubelet',
  version: '1.36.0',
  kind: 'file',
  url: 'https://dl.k8s.io/release/v{version}/bin/linux/amd64/kubelet',
  digest: 'a'.repeat(64),
  source: 'a test',
  dest: '/usr/local/bin/kubelet',
});

const tarball = (): Record<string, unknown> => ({
  name: 'etcd',
  version: '3.6.14',
  kind: 'tarball',
  url: 'https://github.com/etcd-io/etcd/releases/download/v{version}/etcd-v{version}-linux-amd64.tar.gz',
  digest: 'b'.repeat(128),
  source: 'a test',
  members: { 'etcd-v{version}-linux-amd64/etcd': '/usr/local/bin/etcd' },
});

t.test('the committed manifest pins every component, each with its source; no null anywhere', async (t) => {
  const text = await readFile(path.join(REPO, 'image/components.json'), 'utf8');
  t.notMatch(text, /\bnull\b/, 'no null in image/components.json');
  const { problems, components } = checkManifest(JSON.parse(text));
  t.same(problems, []);
  const provided = components.flatMap((c) => c.installs.map((i) => path.basename(i.to)));
  for (const n of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubelet', 'kube-proxy', 'kubectl', 'etcd', 'etcdctl', 'containerd', 'containerd-shim-runc-v2', 'runc', 'crictl', 'bridge', 'host-local', 'loopback', 'weaver', 'weave-net'])
    t.ok(provided.includes(n), `installs ${n}`);
  const kube = components.filter((c) => c.name.startsWith('kubernetes-'));
  t.same(kube.map((c) => c.name).sort(), ['kubernetes-node', 'kubernetes-server']);
  t.same(new Set(kube.map((c) => c.version)).size, 1, 'one Kubernetes version for every binary');
  t.ok(Number(kube[0]?.version.split('.')[1]) >= 36, 'Kubernetes 1.36 or newer');
  t.same(kube.map((c) => c.algorithm), ['sha512', 'sha512'], 'verified by the sha512 Kubernetes publishes');
  t.ok(Number(components.find((c) => c.name === 'containerd')?.version.split('.')[0]) >= 2, 'containerd 2.x (1.36 dropped 1.7)');
  const weave = components.find((c) => c.name === 'weave');
  t.equal(weave?.kind, 'oci');
  t.same(weave?.links, [{ path: '/opt/cni/bin/weave-ipam', target: 'weave-net' }]);
  t.match(components.find((c) => c.name === 'etcd')?.installs[0]?.from, /^etcd-v3\.6\.14-linux-amd64\/etcd$/, '{version} is filled in members');
});

t.test('every program the units run from /usr/local or /opt comes from a component (real, or doubles plus Debian)', async (t) => {
  const programs = await unitBinaries();
  t.ok(programs.some((p) => p.startsWith('/usr/local/')), 'the units do run such programs');
  // The test image links Debian's etcd, containerd, runc and CNI plugins where the manifest would install them.
  const fromDebian = new Set(TEST_IMAGE_DEBIAN_COMPONENTS.flatMap((name) => DEBIAN_COMPONENTS[name]?.links.map(([at]) => at) ?? []));
  for (const [rel, linked] of [['image/components.json', new Set<string>()], ['test/fixtures/components-double/manifest.json', fromDebian]] as const) {
    const { components, problems } = checkManifest(await readJson(rel));
    t.same(problems, [], rel);
    t.same(missingPrograms(programs, components).filter((p) => !linked.has(p)), [], rel);
  }
  t.ok(fromDebian.has('/usr/local/bin/etcd') && fromDebian.has('/usr/local/bin/containerd'), 'the test image takes etcd and containerd from Debian');
  t.same(missingPrograms(['/usr/local/bin/kubelet', '/usr/bin/node'], []), ['/usr/local/bin/kubelet'], 'a missing one is reported, Debian ones are not ours');
});

t.test('each unpinned or malformed entry is a problem naming the component', async (t) => {
  const cases: [string, () => Record<string, unknown>, (c: Record<string, unknown>) => void, RegExp][] = [
    ['plain http', good, (c) => (c.url = 'http://dl.k8s.io/release/v1.36.0/bin/linux/amd64/kubelet'), /kubelet: url .* must use https/],
    ['not a URL', good, (c) => (c.url = 'dl.k8s.io kubelet'), /kubelet: url "dl\.k8s\.io kubelet" is not a URL/],
    ['URL without the version', good, (c) => (c.url = 'https://dl.k8s.io/release/latest/kubelet'), /does not name version 1\.36\.0/],
    ['no digest', good, (c) => delete c.digest, /kubelet: has no "digest"/],
    ['null digest', good, (c) => (c.digest = null), /kubelet: has no "digest"/],
    ['a digest of the wrong length', good, (c) => (c.digest = 'a'.repeat(96)), /kubelet: digest "a{96}" has 96 hex digits: a sha256 has 64, a sha512 128/],
    ['a short digest', good, (c) => (c.digest = 'abc'), /has 3 hex digits/],
    ['uppercase digest', good, (c) => (c.digest = 'A'.repeat(64)), /kubelet: digest "A{64}" is not lowercase hex/],
    ['no source', good, (c) => delete c.source, /kubelet: "source" must say where the digest comes from/],
    ['relative dest', good, (c) => (c.dest = 'usr/local/bin/kubelet'), /kubelet: dest must be an absolute path/],
    ['dest with ..', good, (c) => (c.dest = '/usr/local/../etc/passwd'), /kubelet: dest must be an absolute path without "\.\."/],
    ['unknown kind', good, (c) => (c.kind = 'zip'), /kubelet: kind must be "file", "tarball", "oci", got "zip"/],
    ['file with a slash', good, (c) => (c.file = '../kubelet'), /kubelet: file must be a plain file name/],
    ['tarball without members', tarball, (c) => delete c.members, /etcd: "members" must map each archive member/],
    ['member outside the archive', tarball, (c) => (c.members = { '../etcd': '/usr/local/bin/etcd' }), /etcd: member "\.\.\/etcd" must be a relative path/],
    ['member to a relative path', tarball, (c) => (c.members = { etcd: 'bin/etcd' }), /etcd: member etcd must go to an absolute path/],
    ['tarball with a dest', tarball, (c) => (c.dest = '/usr/local/bin'), /etcd: a tarball names a path per member/],
    ['image with a tag', () => ({ ...tarball(), kind: 'oci', image: 'docker.io/weaveworks/weave-kube:2.8.1', url: undefined }), () => {}, /etcd: image must be REGISTRY\/REPOSITORY without tag or digest/],
    ['link to another directory', tarball, (c) => (c.links = { '/usr/local/bin/etcd2': '/usr/bin/etcd' }), /etcd: link "\/usr\/local\/bin\/etcd2" must be an absolute path to a file name/],
  ];
  for (const [what, make, mutate, expected] of cases) {
    const c = make();
    mutate(c);
    const { problems, components } = checkManifest({ components: [c] });
    t.match(problems.join('\n'), expected, what);
    t.same(components, [], `${what}: nothing to install`);
  }
  t.same(checkManifest({ components: [good(), tarball()] }).problems, [], 'the unmutated entries are fine');
  const [kubelet, etcd] = checkManifest({ components: [good(), tarball()] }).components;
  t.equal(kubelet?.url, 'https://dl.k8s.io/release/v1.36.0/bin/linux/amd64/kubelet', '{version} is filled in');
  t.equal(kubelet?.algorithm, 'sha256');
  t.equal(etcd?.algorithm, 'sha512');
  t.equal(etcd?.file, 'etcd-v3.6.14-linux-amd64.tar.gz');
  t.match(checkManifest({ components: [good(), good()] }).problems, ['kubelet: listed twice']);
  t.match(checkManifest({ components: [good(), { ...good(), name: 'kubelet2' }] }).problems, ['kubelet2: /usr/local/bin/kubelet is installed by kubelet too']);
  t.match(checkManifest({}).problems, ['"components" must be a list']);
});

t.test('npm run components: the table and exit 0; exit 1 naming an unpinned entry; --help; usage errors', async (t) => {
  const run = (args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile('npx', ['tsx', 'image/components.ts', ...args], { cwd: REPO }, (err, stdout, stderr) =>
        resolve({ code: err ? Number(err.code) : 0, stdout, stderr }),
      ),
    );
  const dir = await mkdtemp(path.join(tmpdir(), 'kubeseed-components-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const doc = await readJson('image/components.json');
  (doc.components[0] as Record<string, unknown>).digest = null;
  await writeFile(path.join(dir, 'unpinned.json'), JSON.stringify(doc));
  const [plain, unpinned, help, bogus, missing] = await Promise.all([
    run([]),
    run(['--manifest', path.join(dir, 'unpinned.json')]),
    run(['--help']),
    run(['--manfest', 'x.json']),
    run(['--manifest', path.join(REPO, 'no-such-manifest.json')]),
  ]);
  t.equal(plain.code, 0, plain.stderr);
  t.match(plain.stdout, /^NAME +VERSION +DIGEST +SOURCE$/m);
  t.match(plain.stdout, /^kubernetes-server +1\.36\.0 +sha512 +kubernetes\/kubernetes CHANGELOG\/CHANGELOG-1\.36\.md/m);
  t.match(plain.stdout, /^runc +1\.4\.3 +sha256 +kubernetes-sigs\/kubespray@/m);
  t.match(plain.stdout, /^\d+ components pinned, 0 problems$/m);
  t.equal(unpinned.code, 1);
  t.match(unpinned.stderr, /unpinned\.json: kubernetes-server: has no "digest"/);
  t.equal(help.code, 0);
  t.match(help.stdout, /^usage: npm run components/);
  t.equal(bogus.code, 2);
  t.match(bogus.stderr, /^components: unknown flag --manfest\n/);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /^components: .*no-such-manifest\.json: cannot read the manifest: ENOENT\n$/);
});

t.test('disk-boot modules load dependencies first, each once; built-ins need nothing', async (t) => {
  const dep = parseModulesDep(
    [
      'kernel/drivers/virtio/virtio.ko:',
      'kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko',
      'kernel/drivers/virtio/virtio_pci_modern_dev.ko:',
      'kernel/drivers/virtio/virtio_pci_legacy_dev.ko:',
      'kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko',
      'kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko',
      '',
    ].join('\n'),
  );
  const order = loadOrder(dep, ['virtio_pci', 'virtio-blk', 'ext4'], parseBuiltin('kernel/fs/ext4/ext4.ko\n'));
  t.same(order.map((f) => path.basename(f, '.ko')), ['virtio', 'virtio_ring', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci', 'virtio_blk']);
  t.throws(() => loadOrder(dep, ['e1000']), /kernel module e1000 is neither in modules\.dep nor built in/);
});
