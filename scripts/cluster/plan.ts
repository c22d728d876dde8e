// What a local cluster is, decided before anything runs: node names, roles, MACs, LAN addresses and
// the inventory the metal server serves. Pure, so the layout is tested without booting anything.
import { stringify } from 'yaml';
import { InputError } from '../../agent/errors.js';
import { isDnsLabel, type Role } from '../../agent/dns-names.js';

export interface NodePlan {
  name: string;
  role: Role;
  /** The NIC on the shared LAN: the inventory's MAC, so the metal server's seed and DNS name this one. */
  lanMac: string;
  /** The NIC on QEMU user networking: PXE, the way to the host (10.0.2.2) and the SSH port forward. */
  bootMac: string;
  /** Static address on the shared LAN, published in DNS. */
  address: string;
}

export const LAN_PREFIX = 24;
const LAN_NET = '192.168.100';
const FIRST_HOST = 10;
export const MAX_NODES = 200;

const hex = (n: number) => n.toString(16).padStart(2, '0');

export function planNodes(masters: number, minions: number): NodePlan[] {
  if (!Number.isInteger(masters) || masters < 1) throw new InputError(`--masters must be a whole number of at least 1, got ${masters}`);
  if (!Number.isInteger(minions) || minions < 0) throw new InputError(`--minions must be a whole number, got ${minions}`);
  if (masters + minions > MAX_NODES) throw new InputError(`at most ${MAX_NODES} nodes fit the local LAN, asked for ${masters + minions}`);
  const roles: [Role, number][] = [['master', masters], ['minion', minions]];
  let index = 0;
  return roles.flatMap(([role, count]) =>
    Array.from({ length: count }, (_, i) => {
      index += 1;
      return {
        name: `${role}-${i + 1}`,
        role,
        lanMac: `52:54:00:6b:01:${hex(index)}`,
        bootMac: `52:54:00:6b:02:${hex(index)}`,
        address: `${LAN_NET}.${FIRST_HOST + index - 1}`,
      };
    }),
  );
}

/** The metal server's inventory: the LAN NIC of each node, with a static prefix so its seed configures it. */
export function inventoryYaml(cluster: string, domain: string, nodes: readonly NodePlan[]): string {
  if (!isDnsLabel(cluster)) throw new InputError(`--cluster must be a DNS label, got ${JSON.stringify(cluster)}`, { value: cluster });
  return stringify({
    cluster,
    domain,
    network: { prefix: LAN_PREFIX },
    machines: nodes.map((n) => ({ mac: n.lanMac, hostname: n.name, address: n.address, role: n.role })),
  });
}

/**
 * The first script each VM's iPXE fetches over TFTP: it asks the metal server for the script of the
 * node's LAN MAC (the one the inventory knows), the job a DHCP server's per-host options do on metal.
 */
export function tftpBootScript(baseUrl: string, node: NodePlan): string {
  return `#!ipxe\nchain ${baseUrl}/ipxe?mac=${node.lanMac}\n`;
}

/** The node's second serial port: QEMU writes it to a file only we read, so what arrives there is the node's word. */
export const REPORT_TTY = '/dev/ttyS1';

/**
 * eth0 (net.ifnames=0) is the boot NIC on QEMU's user network, where the metal server is reached; eth1 is the
 * LAN NIC the inventory names. The metal server puts that NIC's network-config (the address DNS publishes) on
 * the kernel command line for cloud-init's local stage, which then configures nothing else: eth0 gets DHCP
 * from systemd-network-generator's `ip=`.
 * panic=-1: a guest that panics restarts at once instead of hanging (a TCG double fault once froze a master
 * mid-boot until the e2e timed out); QEMU runs with -no-reboot, so the restart ends QEMU, which the watcher
 * sees ("QEMU exited") and boots the node again.
 */
export const GUEST_KERNEL_ARGS = ['net.ifnames=0', 'ip=eth0:dhcp', 'panic=-1'];

const HOST_KEY = '/etc/ssh/ssh_host_ed25519_key';

/**
 * Cluster-wide cloud-config on the kernel command line (cloud-init's `cc: ... end_cc`, URL-encoded so it
 * is one word): the key cluster-check logs in with, and a bootcmd that makes the node's SSH host keys and
 * reports them on its second serial port in cloud-init's keys_to_console format, so we never trust a key
 * blindly. bootcmd runs first thing in cloud-init.service, before sshd starts; keys_to_console would only
 * speak in cloud-final, after multi-user.target, minutes later on a busy master. ssh_deletekeys: false
 * keeps cloud-init's ssh module from replacing the keys we just reported. One ed25519 key, which every SSH
 * client here speaks: `ssh-keygen -A` also made RSA and ECDSA keys, 1.9 s and 0.2 s of a booted TCG guest's CPU
 * (more at boot), and bootcmd runs before write_files gives the agent its role file; ssh_genkeytypes keeps
 * cloud-init's ssh module from making the others after it.
 * Only public data goes here: /proc/cmdline is readable by every user of the node.
 */
export function clusterKernelArgs(publicKey: string): string[] {
  const report =
    `{ test -e ${HOST_KEY} || ssh-keygen -q -t ed25519 -N '' -f ${HOST_KEY}; } && ` +
    `{ echo -----BEGIN SSH HOST KEY KEYS-----; cat /etc/ssh/ssh_host_*_key.pub; echo -----END SSH HOST KEY KEYS-----; } >${REPORT_TTY}`;
  const config = {
    disable_root: false,
    ssh_authorized_keys: [publicKey.trim()],
    ssh_deletekeys: false,
    ssh_genkeytypes: ['ed25519'],
    bootcmd: [['sh', '-c', report]],
  };
  // Block style, one `key: <JSON value>` line each: cloud-init joins every cc: block on the command line with a
  // newline and reads the result as one YAML document, so a flow mapping ({...}) beside the metal server's own
  // block would not parse and both would be lost.
  const lines = Object.entries(config).map(([key, value]) => `${key}: ${JSON.stringify(value)}`);
  return [`cc:${encodeURIComponent(lines.join('\n'))}`, 'end_cc'];
}
