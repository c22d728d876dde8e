// One VM of the local cluster as a QEMU command line (pure), and the check whether KVM really works
// here (on some machines /dev/kvm exists but guests hang: TOOLING.md), so `auto` falls back to TCG.
import { spawn } from 'node:child_process';
import { access, constants } from 'node:fs/promises';

export type Accel = 'kvm' | 'tcg';

export interface VmSpec {
  /** Shown by `ps` and checked before we ever kill a PID: it names the state directory. */
  name: string;
  accel: Accel;
  memoryMb: number;
  bootMac: string;
  lanMac: string;
  /** Directory QEMU's TFTP serves; holds boot.ipxe. */
  tftpDir: string;
  sshPort: number;
  mcast: { group: string; port: number };
  consoleLog: string;
  /** The second serial port (/dev/ttyS1): the node's reports to us. */
  reportLog: string;
  pidFile: string;
  /**
   * A master's etcd data disk (raw, one ext4 filesystem labelled kubeseed-etcd, which the image mounts at
   * /var/lib/etcd): the root is in RAM, so this is what keeps the member's data across a power-off.
   */
  etcdDisk?: string;
}

export const QEMU = 'qemu-system-x86_64';

export function qemuArgs(vm: VmSpec): string[] {
  return [
    '-name', vm.name,
    '-accel', vm.accel,
    '-cpu', vm.accel === 'kvm' ? 'host' : 'max',
    '-smp', '1',
    '-m', String(vm.memoryMb),
    '-display', 'none',
    '-monitor', 'none',
    '-no-reboot',
    '-serial', `file:${vm.consoleLog}`,
    '-serial', `file:${vm.reportLog}`,
    '-pidfile', vm.pidFile,
    '-boot', 'n',
    '-device', 'virtio-rng-pci',
    '-netdev', `user,id=boot,tftp=${vm.tftpDir},bootfile=boot.ipxe,hostfwd=tcp:127.0.0.1:${vm.sshPort}-:22`,
    '-device', `virtio-net-pci,netdev=boot,mac=${vm.bootMac},bootindex=1`,
    '-netdev', `socket,id=lan,mcast=${vm.mcast.group}:${vm.mcast.port},localaddr=127.0.0.1`,
    '-device', `virtio-net-pci,netdev=lan,mac=${vm.lanMac}`,
    ...(vm.etcdDisk ? ['-drive', `if=none,id=etcd,format=raw,file=${vm.etcdDisk}`, '-device', 'virtio-blk-pci,drive=etcd'] : []),
  ];
}

/**
 * True when a KVM guest boots the kernel: QEMU starts the image's kernel with no root, and KVM counts
 * as working when the kernel's banner reaches the serial port within the deadline.
 */
export async function kvmWorks(kernel: string, deadlineMs = 15_000): Promise<boolean> {
  try {
    await access('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return false;
  }
  return new Promise((resolve) => {
    const child = spawn(
      QEMU,
      ['-accel', 'kvm', '-cpu', 'host', '-m', '256', '-display', 'none', '-monitor', 'none', '-no-reboot', '-nodefaults',
        '-serial', 'stdio', '-kernel', kernel, '-append', 'console=ttyS0 panic=-1'],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    let seen = '';
    const finish = (ok: boolean) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), deadlineMs);
    child.stdout.on('data', (d: Buffer) => {
      seen = (seen + d.toString()).slice(-4096);
      if (seen.includes('Linux version')) finish(true);
    });
    child.on('error', () => finish(false));
    child.on('exit', () => finish(seen.includes('Linux version')));
  });
}
