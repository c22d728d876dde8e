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
