// The pinned-components manifest (image/components.json) and the doubles' manifest, through the same
// checks `npm run components` runs; and the disk-boot module order read from modules.dep.
import t from 'tap';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkManifest, missingPrograms, type Component } from '../image/components.js';
import { DEBIAN_COMPONENTS, TEST_IMAGE_DEBIAN_COMPONENTS } from '../image/debian-components.js';
import { loadOrder, parseBuiltin, parseModulesDep } from '../image/kernel-modules.js';
import { unitBinaries } from '../scripts/unit-binaries.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const readJson = async (rel: string) => JSON.parse(await readFile(path.join(REPO, rel), 'utf8')) as { components: Record<string, unknown>[] };

const good = (): Record<string, unknown> => ({
  name: 'kubelet',
  version: '1.33.5',
  url: 'https://dl.k8s.io/release/v1.33.5/bin/linux/amd64/kubelet',
  sha256: 'a'.repeat(64),
  install: { kind: 'file', dest: '/usr/local/bin/kubelet' },
});

t.test('the committed manifest is well formed; every unpinned component says why', async (t) => {
  const doc = await readJson('image/components.json');
  const { problems, unpinned, components } = checkManifest(doc);
  t.same(problems, []);
  const names = components.map((c) => c.name);
  for (const n of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubelet', 'kube-proxy', 'kubectl', 'etcd', 'containerd', 'runc', 'crictl', 'cni-plugins', 'weave'])
    t.ok(names.includes(n), `pins ${n}`);
  for (const name of unpinned) t.match(components.find((c) => c.name === name)?.source ?? '', /\S/, `${name} says why it is unpinned`);
  const kube = components.find((c) => c.name === 'kubelet') as Component;
  t.ok(Number(kube.version.split('.')[1]) >= 31, 'Kubernetes 1.31 or newer');
  t.match(components.find((c) => c.name === 'weave')?.url, /github\.com\/rajch\/weave\//, 'Weave is the maintained fork');
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

t.test('each malformed entry is a problem naming the component', async (t) => {
  const cases: [string, (c: Record<string, unknown>) => void, RegExp][] = [
    ['plain http', (c) => (c.url = 'http://dl.k8s.io/release/v1.33.5/bin/linux/amd64/kubelet'), /kubelet: url .* must use https/],
    ['not a URL', (c) => (c.url = 'dl.k8s.io kubelet'), /kubelet: url "dl\.k8s\.io kubelet" is not a URL/],
    ['URL without the version', (c) => (c.url = 'https://dl.k8s.io/release/latest/kubelet'), /does not name version 1\.33\.5/],
    ['short sha256', (c) => (c.sha256 = 'abc'), /kubelet: sha256 "abc" is not 64 lowercase hex digits/],
    ['uppercase sha256', (c) => (c.sha256 = 'A'.repeat(64)), /not 64 lowercase hex/],
    ['null sha256 without a reason', (c) => (c.sha256 = null), /kubelet: sha256 is null: say why in "source"/],
    ['relative dest', (c) => (c.install = { kind: 'file', dest: 'usr/local/bin/kubelet' }), /install\.dest must be an absolute path/],
    ['dest with ..', (c) => (c.install = { kind: 'file', dest: '/usr/local/../etc/passwd' }), /install\.dest/],
    ['unknown kind', (c) => (c.install = { kind: 'zip', dest: '/opt' }), /install\.kind must be "file" or "tar"/],
    ['tar without provides', (c) => (c.install = { kind: 'tar', dest: '/opt/cni/bin' }), /a tar install must say what it "provides"/],
    ['file with a slash', (c) => (c.file = '../kubelet'), /file must be a plain file name/],
  ];
  for (const [what, mutate, expected] of cases) {
    const c = good();
    mutate(c);
    const { problems } = checkManifest({ components: [c] });
    t.match(problems.join('\n'), expected, what);
  }
  t.same(checkManifest({ components: [good()] }).problems, [], 'the unmutated entry is fine');
  t.match(checkManifest({ components: [good(), good()] }).problems, ['kubelet: listed twice']);
  t.match(checkManifest({}).problems, ['"components" must be a list']);
});

t.test('npm run components prints the pins and exits 0; --strict fails on unpinned ones', async (t) => {
  const run = (args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile('npx', ['tsx', 'image/components.ts', ...args], { cwd: REPO }, (err, stdout, stderr) =>
        resolve({ code: err ? Number(err.code) : 0, stdout, stderr }),
      ),
    );
  const plain = await run([]);
  t.equal(plain.code, 0, plain.stderr);
  t.match(plain.stdout, /^kubelet +1\.33\.5 +8f6106b97025… +https:\/\/dl\.k8s\.io\//m);
  t.match(plain.stdout, /\d+ components, \d+ pinned, \d+ unpinned/);
  const doc = await readJson('image/components.json');
  const strict = await run(['--strict']);
  t.equal(strict.code, doc.components.some((c) => c.sha256 === null) ? 1 : 0);
  const missing = await run(['--manifest', path.join(REPO, 'no-such-manifest.json')]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /no-such-manifest\.json: ENOENT/);
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
