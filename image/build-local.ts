// `npm run image -- [--components-dir DIR --manifest FILE] [--out DIR]`: the golden image with no cloud and no
// base-image download. mmdebstrap builds a Debian bookworm root from the mirror (cached as out/cache/base-*),
// the same image/provision step runs inside a copy of it (systemd-nspawn: /proc, /sys, /dev), then it writes:
//   vmlinuz      Debian's cloud kernel from the root
//   initrd       the whole root but what a node never runs (cpio + lz4, else zstd or gzip: what the kernel unpacks); /init is systemd
//   disk.qcow2   the same root as one ext4 filesystem (label "root", no partition table)
//   initrd-disk  a tiny busybox initramfs that loads the virtio modules and switch_roots into /dev/vda
//   rootfs/      the root itself (for systemd-nspawn and inspection)
// A hash of every input (provision, units, agent bundle, components, this file) keys a cache: unchanged
// inputs return at once.
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, copyFile, cp, mkdir, mkdtemp, readFile, readdir, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDebianComponents, type DebianComponent } from './debian-components.js';
import { INITRD_EXCLUDES } from './initrd-contents.js';
import { loadOrder, parseBuiltin, parseModulesDep } from './kernel-modules.js';
import { promisify } from 'node:util';
import { parseCommandLine, runMain, UsageError } from '../agent/command-line.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const IMAGE = path.join(REPO, 'image');
/** Debian 13, the current stable; the build machine may run another release. */
const SUITE = 'trixie';
/** Only the local root needs these: clouds bring their own kernel and init. */
const ROOT_ONLY_PACKAGES = ['systemd-sysv', 'linux-image-cloud-amd64'];
const DOC_EXCLUDES = ['man', 'locale', 'doc', 'info'].map((d) => `--dpkgopt=path-exclude=/usr/share/${d}/*`);
/** What a disk boot must load before it can mount /dev/vda (the cloud kernel has them only as modules). */
const DISK_MODULES = ['virtio_pci', 'virtio_blk', 'ext4'];
const DISK_SIZE = '2G';
/** Files of the repository that shape the image (besides units/, the agent bundle and the components). */
const IMAGE_INPUTS = ['provision', 'install-components.mjs', 'manifest.mjs', 'hygiene-check', 'packages', 'cloud-init-nocloud.cfg', 'initrd-disk-init', 'build-local.ts', 'debian-components.ts', 'initrd-contents.ts'];

interface Options {
  out: string;
  componentsDir?: string;
  manifest: string;
  /** Names from --debian-components (test builds): taken from Debian's packages instead of the manifest. */
  debianComponents: string[];
}

interface BuildRecord {
  key: string;
  imageVersion: string;
  kernel: string;
  initrdCompression: string;
  seconds: number;
  builtAt: string;
}

const OUTPUTS = ['vmlinuz', 'initrd', 'initrd-disk', 'disk.qcow2'];

function log(line: string): void {
  console.log(`image: ${line}`);
}

function run(cmd: string, args: readonly string[], opts: { quiet?: boolean } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', opts.quiet ? 'ignore' : 'inherit', 'inherit'] });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code}`))));
  });
}

const capture = promisify(execFile);

const USAGE = `usage: npm run image -- [--components-dir DIR [--manifest FILE] [--debian-components etcd,containerd,runc,cni-plugins]] [--out DIR]
  Builds the local image (vmlinuz, initrd, initrd-disk, disk.qcow2, rootfs/) into --out (default: out/image).
  --components-dir DIR   take every component from DIR instead of downloading (offline builds)
  --manifest FILE        the components' manifest (default: DIR/manifest.json; without DIR, image/components.json)
  --debian-components L  take these components from Debian 13's packages (image/debian-components.ts)`;

export function parseOptions(argv: string[]): Options {
  const { values } = parseCommandLine(argv, {
    out: { type: 'string', default: path.join(REPO, 'out', 'image') },
    'components-dir': { type: 'string' },
    manifest: { type: 'string' },
    'debian-components': { type: 'string', default: '' },
  });
  const componentsDir = values['components-dir'] ? path.resolve(values['components-dir']) : undefined;
  if (values.manifest && !componentsDir) throw new UsageError(`--manifest ${JSON.stringify(values.manifest)} goes with --components-dir (offline builds)`);
  const manifest = path.resolve(values.manifest ?? (componentsDir ? path.join(componentsDir, 'manifest.json') : path.join(IMAGE, 'components.json')));
  const debianComponents = (values['debian-components'] as string).split(',').filter(Boolean);
  try {
    parseDebianComponents(debianComponents.join(','));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  return { out: path.resolve(values.out), manifest, debianComponents, ...(componentsDir ? { componentsDir } : {}) };
}

async function filesIn(dir: string): Promise<string[]> {
  const names = (await readdir(dir, { withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name);
  return names.sort().map((n) => path.join(dir, n));
}

/** The cache key: every byte that can change the image, with the name it had. */
export async function inputsKey(files: readonly string[]): Promise<string> {
  const hash = createHash('sha256');
  for (const file of files) {
    hash.update(`${path.relative(REPO, file)}\0`);
    hash.update(await readFile(file));
    hash.update('\0');
  }
  return hash.digest('hex');
}

async function imageInputs(opts: Options): Promise<string[]> {
  return [
    ...IMAGE_INPUTS.map((f) => path.join(IMAGE, f)),
    ...(await filesIn(path.join(REPO, 'units'))),
    path.join(REPO, 'dist', 'agent.js'),
    opts.manifest,
    ...(opts.componentsDir ? await filesIn(opts.componentsDir) : []),
  ];
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

async function cachedBuild(out: string, key: string): Promise<BuildRecord | undefined> {
  const record = await readFile(path.join(out, 'build.json'), 'utf8').then(
    (t) => JSON.parse(t) as BuildRecord,
    () => undefined,
  );
  if (record?.key !== key) return undefined;
  for (const f of OUTPUTS) if (!(await exists(path.join(out, f)))) return undefined;
  return record;
}

/** The tree provision expects (as Packer's file provisioners upload it): image/, units/, dist/agent.js, components/. */
async function stage(opts: Options, dir: string): Promise<void> {
  await mkdir(path.join(dir, 'image'), { recursive: true });
  for (const f of ['provision', 'install-components.mjs', 'manifest.mjs', 'hygiene-check', 'packages', 'cloud-init-nocloud.cfg']) await cp(path.join(IMAGE, f), path.join(dir, 'image', f));
  await cp(path.join(IMAGE, 'components.json'), path.join(dir, 'image', 'components.json'));
  await cp(path.join(REPO, 'units'), path.join(dir, 'units'), { recursive: true });
  await mkdir(path.join(dir, 'dist'));
  await cp(path.join(REPO, 'dist', 'agent.js'), path.join(dir, 'dist', 'agent.js'));
  if (opts.componentsDir) {
    await cp(opts.componentsDir, path.join(dir, 'components'), { recursive: true });
    await cp(opts.manifest, path.join(dir, 'components', 'kubeseed-manifest.json'));
  }
}

async function debianPackages(components: readonly DebianComponent[]): Promise<string[]> {
  const listed = (await readFile(path.join(IMAGE, 'packages'), 'utf8'))
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter(Boolean);
  return [...listed, ...ROOT_ONLY_PACKAGES, ...components.flatMap((c) => c.packages)];
}

/** Debian's binaries where the manifest would put them, and Debian's enabling of their units undone. */
async function linkDebianComponents(root: string, components: readonly DebianComponent[]): Promise<void> {
  for (const [at, target] of components.flatMap((c) => c.links)) {
    if (!(await exists(path.join(root, target)))) throw new Error(`Debian component: ${target} is not in the root (package contents changed?)`);
    await mkdir(path.dirname(path.join(root, at)), { recursive: true });
    await rm(path.join(root, at), { force: true });
    await symlink(target, path.join(root, at));
  }
  const units = components.flatMap((c) => c.disable);
  if (units.length) await run('systemctl', [`--root=${root}`, '--quiet', 'disable', ...units]);
  for (const file of components.flatMap((c) => c.remove)) await rm(path.join(root, file), { force: true });
}

/**
 * The Debian root before provision: mmdebstrap's part, the slow one (about 1-4 minutes here). Kept in
 * out/cache/base-<key> (key: suite, package list, dpkg excludes) and shared by every output directory, so a
 * new agent bundle, unit or component only re-runs provision on a copy. Remove out/cache for fresh packages.
 */
async function baseRoot(components: readonly DebianComponent[]): Promise<string> {
  const packages = await debianPackages(components);
  const key = createHash('sha256').update(JSON.stringify({ SUITE, packages, components, DOC_EXCLUDES, recipe: 2 })).digest('hex').slice(0, 16);
  const cache = path.join(REPO, 'out', 'cache');
  const base = path.join(cache, `base-${key}`);
  await mkdir(cache, { recursive: true });
  return withLock(`${base}.lock`, async () => {
    if (await exists(`${base}.complete`)) {
      log(`base root: ${path.relative(REPO, base)} (cached)`);
      return base;
    }
    await rm(base, { recursive: true, force: true });
    log(`base root: mmdebstrap ${SUITE} minbase + ${packages.length} packages`);
    await run('mmdebstrap', ['--variant=minbase', '--mode=root', '--quiet', `--include=${packages.join(',')}`, ...DOC_EXCLUDES, SUITE, base]);
    await linkDebianComponents(base, components);
    await writeFile(`${base}.complete`, `${new Date().toISOString()}\n`);
    // Older bases (another package list) are dead weight; one being built right now has its lock.
    for (const name of await readdir(cache)) {
      const other = /^base-([0-9a-f]+)$/.exec(name)?.[1];
      if (other && other !== key && !(await exists(path.join(cache, `base-${other}.lock`)))) {
        await rm(path.join(cache, name), { recursive: true, force: true });
        await rm(path.join(cache, `${name}.complete`), { force: true });
      }
    }
    return base;
  });
}

/** A copy of the base root, with image/provision run inside it (systemd-nspawn gives it /proc, /sys, /dev, /tmp). */
async function buildRoot(opts: Options, root: string, stageDir: string, imageVersion: string): Promise<void> {
  const base = await baseRoot(parseDebianComponents(opts.debianComponents.join(',')));
  await run('cp', ['-a', '--reflink=auto', base, root]);
  const provisionArgs = ['--image-version', imageVersion, '--cloud-init', 'nocloud'];
  if (opts.componentsDir) provisionArgs.push('--components-dir', '/tmp/kubeseed/components', '--manifest', '/tmp/kubeseed/components/kubeseed-manifest.json');
  await run('systemd-nspawn', [
    '--quiet', '--directory', root, '--register=no', '--keep-unit', '--pipe',
    '--resolv-conf=copy-host', '--timezone=off', '--link-journal=no',
    // nspawn gives the container its own /tmp: the staged tree is mounted there, read-only, as Packer uploads it.
    `--bind-ro=${stageDir}:/tmp/kubeseed`,
    '/tmp/kubeseed/image/provision', ...provisionArgs,
  ]);
  // Without a /init the kernel ignores a whole-root initrd; systemd is PID 1 whether it boots from RAM or disk.
  await symlink('lib/systemd/systemd', path.join(root, 'init'));
}

async function kernelOf(root: string): Promise<{ version: string; compression: InitrdCompression }> {
  const vmlinuz = (await readdir(path.join(root, 'boot'))).filter((n) => n.startsWith('vmlinuz-')).sort();
  const latest = vmlinuz.at(-1);
  if (!latest) throw new Error(`no /boot/vmlinuz-* in ${root}`);
  const version = latest.slice('vmlinuz-'.length);
  const config = await readFile(path.join(root, 'boot', `config-${version}`), 'utf8');
  return { version, compression: initrdCompression(config) };
}

/** The kernel's initrd decompressors this image can use, cheapest to unpack first (CONFIG_RD_*). */
export type InitrdCompression = 'lz4' | 'zstd' | 'gzip';

/**
 * lz4 when the kernel has it: a TCG guest unpacks lz4 about 6 times faster than zstd (0.16 s against 0.97 s of
 * host CPU for this root) and the unpack sits on every boot's critical path; the file is a quarter bigger, which
 * PXE fetches once. `-l`: the legacy frame format, the only one the kernel reads.
 */
export function initrdCompression(kernelConfig: string): InitrdCompression {
  if (/^CONFIG_RD_LZ4=y$/m.test(kernelConfig)) return 'lz4';
  return /^CONFIG_RD_ZSTD=y$/m.test(kernelConfig) ? 'zstd' : 'gzip';
}

const COMPRESS: Record<InitrdCompression, string> = { lz4: 'lz4 -l -9 -q', zstd: 'zstd -3 -T0 -q', gzip: 'gzip -6' };

async function wholeRootInitrd(root: string, file: string, compression: InitrdCompression): Promise<void> {
  // What a RAM root never runs is left out (image/initrd-contents.ts): every MB is fetched over PXE and unpacked under TCG.
  const prune = INITRD_EXCLUDES.flatMap((p, i) => [...(i ? ['-o'] : []), '-path', p]);
  const script = `cd "$1" && shift 2 && find . \\( "$@" \\) -prune -o -print | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | ${COMPRESS[compression]} > "$0"`;
  await run('sh', ['-c', script, file, root, '--', ...prune]);
}

async function diskInitrd(root: string, kernel: string, file: string): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'kubeseed-initrd-disk-'));
  try {
    const modulesDir = path.join(root, 'lib', 'modules', kernel);
    const order = loadOrder(
      parseModulesDep(await readFile(path.join(modulesDir, 'modules.dep'), 'utf8')),
      DISK_MODULES,
      parseBuiltin(await readFile(path.join(modulesDir, 'modules.builtin'), 'utf8')),
    );
    for (const rel of order) {
      await mkdir(path.join(dir, 'lib', 'modules', kernel, path.dirname(rel)), { recursive: true });
      await copyFile(path.join(modulesDir, rel), path.join(dir, 'lib', 'modules', kernel, rel));
    }
    for (const d of ['bin', 'dev', 'proc', 'sys', 'newroot']) await mkdir(path.join(dir, d), { recursive: true });
    await copyFile('/bin/busybox', path.join(dir, 'bin', 'busybox'));
    await copyFile(path.join(IMAGE, 'initrd-disk-init'), path.join(dir, 'init'));
    await chmod(path.join(dir, 'init'), 0o755);
    await symlink('busybox', path.join(dir, 'bin', 'sh'));
    await writeFile(path.join(dir, 'modules'), order.map((rel) => `/lib/modules/${kernel}/${rel}\n`).join(''));
    await run('sh', ['-c', 'cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -9 > "$2"', 'initrd-disk', dir, file]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function disk(root: string, out: string): Promise<void> {
  const raw = path.join(out, 'disk.raw');
  await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'root', '-d', root, raw, DISK_SIZE], { quiet: true });
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, path.join(out, 'disk.qcow2')]);
  await rm(raw);
}

async function report(out: string, record: BuildRecord, cached: boolean): Promise<void> {
  const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MB`;
  for (const f of OUTPUTS) {
    const s = await stat(path.join(out, f));
    const { stdout } = f === 'disk.qcow2' ? await capture('du', ['-k', path.join(out, f)]) : { stdout: `${s.size / 1024}` };
    log(`${path.join(path.relative(process.cwd(), out) || '.', f)}  ${mb(s.size)}${f === 'disk.qcow2' ? ` (${mb(Number(stdout.split('\t')[0]) * 1024)} on disk)` : ''}`);
  }
  log(`${record.imageVersion}  kernel ${record.kernel}  initrd ${record.initrdCompression}`);
  log(cached ? `cached: inputs unchanged since ${record.builtAt} (built in ${record.seconds} s)` : `built in ${record.seconds} s`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Whether the process that wrote `lock/pid` still runs (a lock without a pid yet is fresh for a minute). */
async function lockHolder(lock: string): Promise<number | undefined> {
  const pid = Number(await readFile(path.join(lock, 'pid'), 'utf8').catch(() => ''));
  if (!pid) return (await stat(lock).then((s) => Date.now() - s.mtimeMs < 60_000, () => false)) ? -1 : undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}

/** One build per output directory at a time: a second `npm run image` waits, then finds the cache. */
async function withLock<T>(lock: string, fn: () => Promise<T>): Promise<T> {
  for (let told = false; ; ) {
    try {
      await mkdir(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = await lockHolder(lock);
      if (holder === undefined) {
        await rm(lock, { recursive: true, force: true });
        continue;
      }
      if (!told) log(`waiting for the build that holds ${lock} (pid ${holder})`);
      told = true;
      await sleep(2000);
    }
  }
  try {
    await writeFile(path.join(lock, 'pid'), String(process.pid));
    return await fn();
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}

export async function buildImage(opts: Options): Promise<void> {
  await mkdir(path.dirname(opts.out), { recursive: true });
  await withLock(`${opts.out}.lock`, () => buildOrReuse(opts));
}

async function buildOrReuse(opts: Options): Promise<void> {
  const started = Date.now();
  const key = createHash('sha256')
    .update(`${await inputsKey(await imageInputs(opts))}\0${opts.debianComponents.join(',')}`)
    .digest('hex');
  const cached = await cachedBuild(opts.out, key);
  if (cached) return report(opts.out, cached, true);

  const pkg = JSON.parse(await readFile(path.join(REPO, 'package.json'), 'utf8')) as { version: string };
  const imageVersion = `kubeseed-${pkg.version}+${key.slice(0, 12)}`;
  // Built aside and moved into place at the end: readers never see half an image, a failed build keeps the last one.
  const work = `${opts.out}.building`;
  const root = path.join(work, 'rootfs');
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  const stageDir = await mkdtemp(path.join(tmpdir(), 'kubeseed-stage-'));
  try {
    await stage(opts, stageDir);
    log(`building ${imageVersion}: mmdebstrap ${SUITE} + provision${opts.componentsDir ? ` (components from ${opts.componentsDir})` : ''}${opts.debianComponents.length ? ` (from Debian: ${opts.debianComponents.join(', ')})` : ''}`);
    await buildRoot(opts, root, stageDir, imageVersion);
  } finally {
    await rm(stageDir, { recursive: true, force: true });
  }
  // mmdebstrap puts the build host's resolv.conf and hostname back after the hooks: clean once more, then check.
  await run(path.join(IMAGE, 'provision'), ['hygiene', '--root', root]);
  await run(path.join(IMAGE, 'hygiene-check'), [root]);
  const kernel = await kernelOf(root);
  await copyFile(path.join(root, 'boot', `vmlinuz-${kernel.version}`), path.join(work, 'vmlinuz'));
  await wholeRootInitrd(root, path.join(work, 'initrd'), kernel.compression);
  await diskInitrd(root, kernel.version, path.join(work, 'initrd-disk'));
  await disk(root, work);
  const record: BuildRecord = {
    key,
    imageVersion,
    kernel: kernel.version,
    initrdCompression: kernel.compression,
    seconds: Math.round((Date.now() - started) / 1000),
    builtAt: new Date().toISOString(),
  };
  await writeFile(path.join(work, 'build.json'), `${JSON.stringify(record, null, 2)}\n`);
  await rm(opts.out, { recursive: true, force: true });
  await rename(work, opts.out);
  await report(opts.out, record, false);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  runMain({ name: 'image', usage: USAGE }, (argv) => buildImage(parseOptions(argv)));
}
