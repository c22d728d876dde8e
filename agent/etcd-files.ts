// What a master's etcd member is made of, as text and data: the certificates it needs (this master's
// addresses in every serving certificate), the env file etcd.service reads its member settings from, and
// the API server's list of etcd members. Pure: the etcd phase writes what this returns.
import { apiServerNames, type LeafSpec } from './cluster-certs.js';
import { renderEnvFile } from './contract/env-file.js';
import { roleRecordName } from './dns-names.js';
import { clientUrl, peerUrl, type EtcdPorts, type Membership } from './etcd-membership.js';
import { KUBE_DIR, PKI_DIR } from './kube-files.js';
import type { ServiceCidr } from './service-cidr.js';

/** etcd.service reads it (EnvironmentFile=): etcd takes every ETCD_* variable as the flag of that name. */
export const ETCD_ENV = `${KUBE_DIR}/etcd.env`;
/** kube-apiserver.service reads ETCD_SERVERS from it. */
export const ETCD_SERVERS_ENV = `${KUBE_DIR}/etcd-servers.env`;
export const ETCD_DATA_DIR = '/var/lib/etcd';
/** Present once etcd has made the data dir its own: the member's WAL and snapshots live below it. */
export const ETCD_MEMBER_DIR = `${ETCD_DATA_DIR}/member`;
/**
 * A filesystem with this label is etcd's data dir (units/kubeseed-etcd-disk.service mounts it at ETCD_DATA_DIR), so the
 * member's data outlives a power-off of a master whose root is in RAM (a PXE boot).
 */
export const ETCD_DISK_LABEL = 'kubeseed-etcd';
export const ETCD_DISK = `/dev/disk/by-label/${ETCD_DISK_LABEL}`;
export const MOUNTINFO = '/proc/self/mountinfo';
/** Filesystems whose files are gone after a power-off: a PXE-booted node's root is one of them. */
const RAM_FILESYSTEMS: ReadonlySet<string> = new Set(['rootfs', 'tmpfs', 'ramfs']);

/** Where etcd's data dir lives, as far as this master can tell. */
export type EtcdStorage =
  /** On a filesystem that survives a power-off: the labelled disk, or a root on disk (EC2, a disk boot). */
  | { kind: 'kept'; mount: string; fstype: string }
  /** In RAM: a power-off of this master loses its member's data; of every master at once, the cluster's. */
  | { kind: 'ram'; mount: string; fstype: string }
  /** The labelled disk exists but is not mounted at the data dir (yet): the data dir must not be read before it is. */
  | { kind: 'unmounted' }
  /** No mount table to read (an offline root). */
  | { kind: 'unknown' };

/**
 * The filesystem that holds ETCD_DATA_DIR, from the mount table (proc(5)'s mountinfo: the mount point is the
 * fifth field, octal-escaped; the type follows the " - " separator): the longest mount point above the data
 * dir, the last listed when mounts are stacked (the one on top).
 */
export function etcdStorage(mountinfo: string | undefined, diskPresent: boolean): EtcdStorage {
  if (mountinfo === undefined) return { kind: 'unknown' };
  let holder: { mount: string; fstype: string } | undefined;
  for (const line of mountinfo.split('\n')) {
    const [before, after] = line.split(' - ');
    const mount = before?.split(' ')[4]?.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
    const fstype = after?.split(' ')[0];
    if (!mount || !fstype) continue;
    const above = mount === '/' || ETCD_DATA_DIR === mount || ETCD_DATA_DIR.startsWith(`${mount}/`);
    if (above && mount.length >= (holder?.mount.length ?? 0)) holder = { mount, fstype };
  }
  if (diskPresent && holder?.mount !== ETCD_DATA_DIR) return { kind: 'unmounted' };
  if (!holder) return { kind: 'unknown' };
  return { kind: RAM_FILESYSTEMS.has(holder.fstype) ? 'ram' : 'kept', ...holder };
}

/** etcd's serving and peer certificate for this master, issued here from the etcd CA. */
export const ETCD_MEMBER_CERT = { crt: `${PKI_DIR}/etcd-member.crt`, key: `${PKI_DIR}/etcd-member.key` };
/** The API server's serving certificate for this master, issued here from the cluster CA. */
export const APISERVER_MEMBER_CERT = { crt: `${PKI_DIR}/apiserver-member.crt`, key: `${PKI_DIR}/apiserver-member.key` };

/**
 * The two certificates this master issues for itself. Both carry its address and the masters name, so a
 * client reaching it by either verifies it; etcd's also loopback (the local API server dials 127.0.0.1),
 * and serves as its client certificate towards peers (etcd checks the peer's SANs against its address).
 */
export function memberCertSpecs(cluster: string, domain: string, service: ServiceCidr, self: string): { etcd: LeafSpec; apiserver: LeafSpec } {
  const masters = roleRecordName('master', cluster, domain);
  const ips = (list: string[]) => [...new Set(list)];
  return {
    etcd: {
      name: 'etcd-member',
      issuer: 'etcd-ca',
      subject: { cn: `etcd-${self}` },
      usage: ['serverAuth', 'clientAuth'],
      dns: [masters, 'localhost'],
      ip: ips([self, '127.0.0.1']),
    },
    apiserver: {
      name: 'apiserver-member',
      issuer: 'ca',
      subject: { cn: 'kube-apiserver' },
      usage: ['serverAuth'],
      dns: apiServerNames(cluster, domain),
      ip: ips([self, service.firstIp, '127.0.0.1']),
    },
  };
}

export interface EtcdEnvInput {
  cluster: string;
  self: string;
  membership: Exclude<Membership, { kind: 'wait' }>;
  ports: EtcdPorts;
}

/**
 * etcd.service's member settings. Clients: this address and loopback (the local API server); peers: this
 * address only. A restart carries no initial-cluster settings: the data dir knows the cluster.
 */
export function renderEtcdEnv({ cluster, self, membership, ports }: EtcdEnvInput): string {
  const clientUrls = [clientUrl(self, ports)];
  // A loopback address is on lo already (one-master clusters, and members sharing one test machine).
  if (!self.startsWith('127.')) clientUrls.push(clientUrl('127.0.0.1', ports));
  const entries: [string, string][] = [
    ['ETCD_NAME', membership.name],
    ['ETCD_LISTEN_CLIENT_URLS', clientUrls.join(',')],
    ['ETCD_ADVERTISE_CLIENT_URLS', clientUrl(self, ports)],
    ['ETCD_LISTEN_PEER_URLS', peerUrl(self, ports)],
    ['ETCD_INITIAL_ADVERTISE_PEER_URLS', peerUrl(self, ports)],
  ];
  if (membership.kind !== 'restart') {
    entries.push(
      ['ETCD_INITIAL_CLUSTER', membership.initialCluster],
      ['ETCD_INITIAL_CLUSTER_STATE', membership.kind === 'new' ? 'new' : 'existing'],
      ['ETCD_INITIAL_CLUSTER_TOKEN', `kubeseed-${cluster}`],
    );
  }
  return renderEnvFile(`Written by kubeseed-agent (phase etcd): this master's etcd member (${membership.kind}). Do not edit.`, entries);
}

/** The API server's --etcd-servers: every member's client URL, so losing one member loses no store. */
export function renderEtcdServersEnv(clientUrls: readonly string[]): string {
  return renderEnvFile('Written by kubeseed-agent (phase etcd): the etcd members kube-apiserver talks to.', [
    ['ETCD_SERVERS', [...new Set(clientUrls)].sort().join(',')],
  ]);
}
