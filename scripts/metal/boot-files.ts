// What a PXE-booting machine is served, as pure text: the iPXE scripts that load the image's kernel
// and initrd, and the NoCloud seed (meta-data, network-config) cloud-init reads. The HTTP server only
// routes requests to these; tests and the CLI can look at them without a network.
import type { Inventory, Machine } from './inventory.js';

/** `52:54:00:12:34:56` → `52-54-00-12-34-56`: the form used in URL paths and in pxelinux's BOOTIF. */
export function macPath(mac: string): string {
  return mac.replaceAll(':', '-');
}

export function seedUrl(baseUrl: string, machine: Machine): string {
  return `${baseUrl}/nocloud/${macPath(machine.mac)}/`;
}

/**
 * The first script every machine gets (from DHCP's boot filename or a TFTP-served stub): it asks
 * for the script of the NIC it booted from. `${net0/mac}` is expanded by iPXE, not by us.
 */
export function bootScript(baseUrl: string): string {
  return ['#!ipxe', `chain ${baseUrl}/ipxe?mac=\${net0/mac}`, ''].join('\n');
}

/**
 * The per-machine script. iPXE splits a command line on whitespace and treats only a token that is
 * exactly `;`, `&&` or `||` as a separator (and `${...}` as a setting), so `ds=nocloud-net;s=URL`
 * reaches the kernel as one argument without quoting. Our values never contain `$` or spaces: the
 * inventory's MAC, hostname and role are validated, and extra arguments are checked by `checkKernelArg`.
 */
export function machineScript(baseUrl: string, machine: Machine, networkConfigText: string, extraKernelArgs: readonly string[] = []): string {
  return [
    '#!ipxe',
    `echo kubeseed: ${machine.hostname} (${machine.role}) from ${baseUrl}`,
    `kernel ${baseUrl}/image/vmlinuz ${kernelCommandLine(baseUrl, machine, networkConfigText, extraKernelArgs)}`,
    `initrd --name initrd ${baseUrl}/image/initrd`,
    'boot',
    '',
  ].join('\n');
}

/** x86 Linux keeps the first 2047 bytes of its command line (COMMAND_LINE_SIZE 2048) and drops the rest silently. */
export const KERNEL_COMMAND_LINE_MAX = 2047;

/**
 * The machine's network-config travels twice: in the seed, and here as cloud-init's `network-config=`
 * (base64), which its local stage applies before systemd-networkd first starts. Given that, the network stage
 * would only render the same files again and then restart networkd and resolved to "bring them up" (about 6 s
 * of a TCG boot, and a moment with no resolver), so the same command line turns that activation off through
 * cloud-init's kernel command line config (`cc: ... end_cc`, which it merges over its own). The two only ever
 * travel together: a boot without the early config keeps cloud-init's activation.
 * The same block sets NoCloud's `fs_label` to null: a PXE machine's seed is the URL on this line, and the
 * search for a `cidata` disk ran blkid five times in the local stage and five again in the network stage
 * (3.2 s and 2.5 s of a 3-guest TCG boot, before the role file is written).
 */
export function kernelCommandLine(baseUrl: string, machine: Machine, networkConfigText: string, extraKernelArgs: readonly string[] = []): string {
  return [
    'initrd=initrd', // names the initrd for EFI boots; ignored by BIOS ones
    'console=tty0',
    'console=ttyS0,115200n8',
    `BOOTIF=01-${macPath(machine.mac)}`, // which NIC booted, in the form initramfs-tools understands
    `ds=nocloud-net;s=${seedUrl(baseUrl, machine)}`,
    `network-config=${Buffer.from(networkConfigText).toString('base64')}`,
    `cc:${encodeURIComponent('disable_network_activation: true\ndatasource: {NoCloud: {fs_label: null}}')}`,
    'end_cc',
    ...extraKernelArgs.map((arg) => fillMachine(arg, machine)),
  ].join(' ');
}

const PLACEHOLDERS = ['address', 'hostname', 'mac', 'role'] as const;

/**
 * `{address}`, `{hostname}`, `{mac}` and `{role}` in an extra kernel argument become the machine's own,
 * so one list serves every machine, e.g. `ip={address}::0.0.0.0:255.255.255.0::eth1:off` for
 * systemd-network-generator. The values are validated inventory fields (no spaces, no `$`).
 */
export function fillMachine(arg: string, machine: Machine): string {
  return arg.replace(/\{(address|hostname|mac|role)\}/g, (_, key: (typeof PLACEHOLDERS)[number]) => machine[key]);
}

/** Kernel arguments are written into an iPXE script: refuse what iPXE would interpret. */
export function checkKernelArg(arg: string): string | undefined {
  if (arg === '' || /\s/.test(arg)) return 'must be one word (no spaces)';
  if (arg.includes('${')) return 'must not contain ${ (iPXE would expand it)';
  if (arg.startsWith('#')) return 'must not start with # (iPXE would read a comment)';
  if (arg === ';' || arg === '&&' || arg === '||') return 'must not be an iPXE command separator';
  return undefined;
}

/** cloud-init's `meta-data`. The instance id is stable per machine, so a reboot is not a new instance. */
export function metaData(inventory: Inventory, machine: Machine): string {
  return [`instance-id: kubeseed-${inventory.cluster}-${machine.hostname}`, `local-hostname: ${machine.hostname}`, ''].join('\n');
}

/**
 * Network config v2 for the boot NIC, matched by MAC: the inventory's address when the inventory
 * gives a prefix (so the address DNS publishes is the one the machine has), DHCP otherwise.
 *
 * With `nameserver` (the metal DNS server) the system resolver asks it too, and searches the cluster's
 * zone: the kubelet and kube-proxy reach `masters.<cluster>.<domain>` through glibc, not through the
 * agent's NAMESERVER. glibc asks port 53 only (resolv.conf has no port), so a server on another port
 * cannot be named here: then nothing is added and those names resolve only if the site's DNS has them.
 */
export function networkConfig(inventory: Inventory, machine: Machine, nameserver?: { host: string; port: number }): string {
  const lines = ['version: 2', 'ethernets:', '  boot:', '    match:', `      macaddress: "${machine.mac}"`];
  const net = inventory.network;
  if (!net) lines.push('    dhcp4: true');
  else {
    lines.push('    dhcp4: false', `    addresses: ["${machine.address}/${net.prefix}"]`);
    if (net.gateway) lines.push('    routes:', `      - to: 0.0.0.0/0`, `        via: "${net.gateway}"`);
  }
  if (nameserver?.port === 53) {
    lines.push('    nameservers:', `      addresses: ["${nameserver.host}"]`, `      search: ["${inventory.cluster}.${inventory.domain}"]`);
  }
  return [...lines, ''].join('\n');
}
