// The Debian packages the local cluster needs on the host: installed when we are root, otherwise
// named exactly, with the command that installs them.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { InputError } from '../../agent/errors.js';

const run = promisify(execFile);

/** To boot VMs: QEMU, the iPXE ROMs its NICs PXE-boot with, and mkfs.ext4 for the masters' etcd disks. */
export const VM_PACKAGES = ['qemu-system-x86', 'ipxe-qemu', 'e2fsprogs'];
/** To build the image (image/build-local.ts): the Debian root, its disk and initrd. */
export const IMAGE_PACKAGES = ['mmdebstrap', 'qemu-utils', 'zstd', 'cpio', 'busybox-static', 'systemd'];

export async function missingPackages(names: readonly string[]): Promise<string[]> {
  const missing: string[] = [];
  for (const name of names) {
    const status = await run('dpkg-query', ['-W', '-f=${Status}', name]).then(
      (r) => r.stdout,
      () => '',
    );
    if (!status.includes('install ok installed')) missing.push(name);
  }
  return missing;
}

export async function ensurePackages(names: readonly string[], log: (line: string) => void): Promise<void> {
  const missing = await missingPackages(names);
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) {
    throw new InputError(
      `missing Debian packages: ${missing.join(' ')}; install them with: sudo apt-get install -y --no-install-recommends ${missing.join(' ')} (or run: bash .ci/setup)`,
    );
  }
  log(`installing Debian packages: ${missing.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  await run('apt-get', ['update', '-qq'], { env, maxBuffer: 64 * 1024 * 1024 });
  await run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { env, maxBuffer: 64 * 1024 * 1024 });
  const still = await missingPackages(missing);
  if (still.length) throw new InputError(`apt-get did not install: ${still.join(' ')}`);
}
