// What the whole-root initrd leaves out of the image's root: files a node booted from RAM never reads.
// PXE fetches the initrd and the kernel unpacks it on every boot, under TCG at a few MB/s, so each MB here
// is boot time. The disk image and the cloud images keep everything (apt and dpkg still work there).
// Patterns are find(1) -path patterns relative to the root ("*" also matches "/").

export const INITRD_EXCLUDES: readonly string[] = [
  // The kernel and Debian's own initramfs: the boot loader already had them.
  './boot',
  // Locale sources and their compiler: nodes run in the C.UTF-8 locale that glibc has built in.
  './usr/share/i18n',
  './usr/bin/localedef',
  // udev's hwdb sources; udev reads the compiled hwdb.bin, and systemd-hwdb-update only runs after an upgrade.
  './usr/lib/udev/hwdb.d',
  // containerd's v1 shims (io.containerd.runtime.v1.linux, io.containerd.runc.v1): the CRI config runs runc.v2.
  './usr/bin/containerd-shim',
  './usr/bin/containerd-shim-runc-v1',
  // Perl: only dpkg's maintainer scripts use it, and a RAM root installs nothing.
  './usr/bin/perl',
  './usr/bin/perl5*',
  './usr/lib/x86_64-linux-gnu/perl*',
  './usr/share/perl*',
  // Python's own test suite.
  './usr/lib/python3*/test',
];

/** find(1)'s -path: the whole path matches, `*` matches any run of characters including `/`. */
export function matchesFindPath(pattern: string, file: string): boolean {
  const re = new RegExp(`^${pattern.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
  return re.test(file);
}

/** Whether `file` (absolute inside the root, e.g. /usr/bin/node) is left out of the initrd, itself or by a parent directory. */
export function leftOutOfInitrd(file: string): boolean {
  const parts = file.split('/').filter(Boolean);
  for (let i = 1; i <= parts.length; i++) {
    const prefix = `./${parts.slice(0, i).join('/')}`;
    if (INITRD_EXCLUDES.some((p) => matchesFindPath(p, prefix))) return true;
  }
  return false;
}
