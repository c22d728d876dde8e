// The whole-root initrd: what it leaves out never includes what a node runs (the units' programs, the
// Debian components' files, the agent's node, cloud-init), the patterns mean what find(1) makes of them,
// and the compression is the cheapest the kernel unpacks.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { initrdCompression } from '../image/build-local.js';
import { DEBIAN_COMPONENTS } from '../image/debian-components.js';
import { INITRD_EXCLUDES, leftOutOfInitrd } from '../image/initrd-contents.js';
import { unitBinaries } from '../scripts/unit-binaries.js';

const run = promisify(execFile);

/** What a booted node runs besides the units' programs: PID 1, the agent's interpreter, cloud-init, the containerd shim and runc, the etcd disk's driver. */
const RUN_AT_BOOT = [
  '/usr/lib/systemd/systemd',
  '/usr/bin/node',
  '/usr/lib/x86_64-linux-gnu/libnode.so.115',
  '/usr/share/nodejs/acorn/package.json',
  '/usr/bin/python3.13',
  '/usr/lib/python3.13/json/__init__.py',
  '/usr/bin/cloud-init',
  '/usr/lib/python3/dist-packages/cloudinit/__init__.py',
  '/usr/lib/udev/hwdb.bin',
  '/usr/bin/containerd-shim-runc-v2',
  '/usr/sbin/runc',
  '/usr/sbin/sshd',
  '/usr/bin/ssh-keygen',
  '/usr/local/lib/kubeseed/agent.js',
  // A master's etcd data disk (virtio-blk; ext4 is built into the cloud kernel) and what mounts it.
  '/usr/lib/modules/6.12.118+deb13-cloud-amd64/kernel/drivers/block/virtio_blk.ko.xz',
  '/usr/bin/mount',
];

t.test('nothing a node runs is left out: the units, the Debian components, the boot programs', async (t) => {
  const programs = await unitBinaries();
  t.ok(programs.length > 5, 'the units name their programs');
  const debian = Object.values(DEBIAN_COMPONENTS).flatMap((c) => c.links.flatMap(([at, target]) => [at, target]));
  for (const file of [...programs, ...debian, ...RUN_AT_BOOT]) t.notOk(leftOutOfInitrd(file), `${file} stays in the initrd`);
});

t.test('what is left out: locales, hwdb sources, the v1 shims, perl, python tests, /boot', async (t) => {
  for (const file of [
    '/boot/vmlinuz-6.12.118+deb13-cloud-amd64',
    '/usr/share/i18n/locales/en_US',
    '/usr/bin/localedef',
    '/usr/lib/udev/hwdb.d/20-pci-vendor-model.hwdb',
    '/usr/bin/containerd-shim',
    '/usr/bin/containerd-shim-runc-v1',
    '/usr/bin/perl',
    '/usr/bin/perl5.40.1',
    '/usr/lib/x86_64-linux-gnu/perl-base/strict.pm',
    '/usr/share/perl5/Debconf/Db.pm',
    '/usr/lib/python3.13/test/__init__.py',
  ]) {
    t.ok(leftOutOfInitrd(file), `${file} is left out`);
  }
  t.notOk(leftOutOfInitrd('/usr/bin/containerd'), 'containerd itself stays (the pattern is exact)');
  t.notOk(leftOutOfInitrd('/usr/lib/python3.13/unittest/__init__.py'), 'python3*/test does not reach unittest');
});

t.test('the patterns select what find -prune selects on a real tree', async (t) => {
  const root = await mkdtemp(path.join(tmpdir(), 'kubeseed-initrd-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const files = [
    ...RUN_AT_BOOT,
    '/boot/vmlinuz',
    '/usr/share/i18n/charmaps/UTF-8.gz',
    '/usr/bin/perl5.40.1',
    '/usr/lib/x86_64-linux-gnu/perl-base/strict.pm',
    '/usr/lib/python3.13/test/test_x.py',
    '/usr/bin/containerd-shim',
    '/usr/bin/containerd',
  ];
  for (const f of files) {
    await mkdir(path.join(root, path.dirname(f)), { recursive: true });
    await writeFile(path.join(root, f), '');
  }
  const prune = INITRD_EXCLUDES.flatMap((p, i) => [...(i ? ['-o'] : []), '-path', p]);
  const { stdout } = await run('find', ['.', '(', ...prune, ')', '-prune', '-o', '-type', 'f', '-print'], { cwd: root });
  const kept = stdout.trim().split('\n').map((l) => l.slice(1)).sort();
  t.same(kept, files.filter((f) => !leftOutOfInitrd(f)).sort());
  t.same(kept.filter((f) => !RUN_AT_BOOT.includes(f)), ['/usr/bin/containerd']);
});

t.test('compression: lz4 when the kernel unpacks it, else zstd, else gzip', async (t) => {
  t.equal(initrdCompression('CONFIG_RD_GZIP=y\nCONFIG_RD_LZ4=y\nCONFIG_RD_ZSTD=y\n'), 'lz4');
  t.equal(initrdCompression('CONFIG_RD_GZIP=y\n# CONFIG_RD_LZ4 is not set\nCONFIG_RD_ZSTD=y\n'), 'zstd');
  t.equal(initrdCompression('CONFIG_RD_GZIP=y\n'), 'gzip');
});
