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

/**
 * The LAN NIC's MAC carries the node's LAN address in its last four bytes (52:54:c0:a8:64:0a is
 * 192.168.100.10; 52 makes it locally administered): a node configures its static address from its own
 * MAC, with one cluster-wide command, because NoCloud over HTTP never fetches the seed's network-config.
 */
export function lanMacFor(address: string): string {
  return `52:54:${address.split('.').map((b) => hex(Number(b))).join(':')}`;
}

export function planNodes(masters: number, minions: number): NodePlan[] {
  if (!Number.isInteger(masters) || masters < 1) throw new InputError(`--masters must be a whole number of at least 1, got ${masters}`);
  if (!Number.isInteger(minions) || minions < 0) throw new InputError(`--minions must be a whole number, got ${minions}`);
  if (masters + minions > MAX_NODES) throw new InputError(`at most ${MAX_NODES} nodes fit the local LAN, asked for ${masters + minions}`);
  const roles: [Role, number][] = [['master', masters], ['minion', minions]];
  let index = 0;
  return roles.flatMap(([role, count]) =>
    Array.from({ length: count }, (_, i) => {
      index += 1;
      const address = `${LAN_NET}.${FIRST_HOST + index - 1}`;
      return {
        name: `${role}-${i + 1}`,
        role,
        lanMac: lanMacFor(address),
        bootMac: `52:54:00:6b:00:${hex(index)}`,
        address,
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

/** eth1 (net.ifnames=0) is the LAN NIC: its address is the last four bytes of its MAC (see lanMacFor). */
export const LAN_ADDRESS_SCRIPT =
  `set -- $(tr : ' ' </sys/class/net/eth1/address); ` +
  `ip link set eth1 up; ip addr replace $((0x$3)).$((0x$4)).$((0x$5)).$((0x$6))/${LAN_PREFIX} dev eth1`;

/** The node's second serial port: QEMU writes it to a file only we read, so what arrives there is the node's word. */
export const REPORT_TTY = '/dev/ttyS1';

/**
 * Cluster-wide cloud-config on the kernel command line (cloud-init's `cc: ... end_cc`, URL-encoded so it
 * is one word): the key cluster-check logs in with, and a runcmd that reports the node's SSH host keys on
 * its second serial port in cloud-init's keys_to_console format, so we never have to trust a key blindly.
 * Only public data goes here: /proc/cmdline is readable by every user of the node.
 */
export function clusterKernelArgs(publicKey: string): string[] {
  const report = `{ echo -----BEGIN SSH HOST KEY KEYS-----; cat /etc/ssh/ssh_host_*_key.pub; echo -----END SSH HOST KEY KEYS-----; } >${REPORT_TTY}`;
  const config = JSON.stringify({
    disable_root: false,
    ssh_authorized_keys: [publicKey.trim()],
    // bootcmd runs before write_files puts the role file down, so the agent starts with its LAN address in place.
    bootcmd: [['sh', '-c', LAN_ADDRESS_SCRIPT]],
    runcmd: [['sh', '-c', report]],
  });
  return [`cc:${encodeURIComponent(config)}`, 'end_cc'];
}
