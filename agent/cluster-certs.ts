// What the cluster's certificates are, as data: three CAs and what each signs. `npm run secrets` issues
// from this table and the agent checks against it, so the two cannot disagree. The names are
// SECRET_FILES names (agent/secrets-layout.ts); subjects are the identities Kubernetes' default RBAC knows.
import { X509Certificate } from 'node:crypto';
import { roleRecordName } from './dns-names.js';
import type { ServiceCidr } from './service-cidr.js';

export type CaName = 'ca' | 'front-proxy-ca' | 'etcd-ca';

export interface Subject {
  cn: string;
  /** Organisation: Kubernetes reads it as the user's group. */
  o?: string;
}

export interface CaSpec {
  name: CaName;
  subject: Subject;
}

export interface LeafSpec {
  /** Files `<name>.crt` and `<name>.key`. */
  name: string;
  issuer: CaName;
  subject: Subject;
  usage: readonly ('serverAuth' | 'clientAuth')[];
  dns?: readonly string[];
  ip?: readonly string[];
}

export interface SecretsPlan {
  cas: CaSpec[];
  leaves: LeafSpec[];
  /** The admin kubeconfig's client certificate: embedded in admin.kubeconfig, not kept apart. */
  admin: LeafSpec;
  /** https://masters.<cluster>.<domain>:6443 */
  server: string;
}

export function apiServerNames(cluster: string, domain: string): string[] {
  return [
    roleRecordName('master', cluster, domain),
    'kubernetes',
    'kubernetes.default',
    'kubernetes.default.svc',
    'kubernetes.default.svc.cluster.local',
  ];
}

const CLUSTER_CA_CN = 'kubernetes-ca ';

/**
 * The cluster a CA certificate was made for (its CN is `kubernetes-ca <cluster>`), so secrets of one cluster
 * are not handed to another's nodes; undefined for anything else (not PEM, another CA).
 */
export function clusterOfCa(pem: string | Buffer): string | undefined {
  let cn: string | undefined;
  try {
    cn = new X509Certificate(pem).subject.split('\n').find((part) => part.startsWith('CN='))?.slice(3);
  } catch {
    return undefined;
  }
  return cn?.startsWith(CLUSTER_CA_CN) ? cn.slice(CLUSTER_CA_CN.length) : undefined;
}

export function planSecrets(cluster: string, domain: string, service: ServiceCidr): SecretsPlan {
  const client = ['clientAuth'] as const;
  return {
    cas: [
      { name: 'ca', subject: { cn: `${CLUSTER_CA_CN}${cluster}` } },
      { name: 'front-proxy-ca', subject: { cn: `front-proxy-ca ${cluster}` } },
      { name: 'etcd-ca', subject: { cn: `etcd-ca ${cluster}` } },
    ],
    leaves: [
      {
        name: 'apiserver',
        issuer: 'ca',
        subject: { cn: 'kube-apiserver' },
        usage: ['serverAuth'],
        dns: apiServerNames(cluster, domain),
        ip: [service.firstIp, '127.0.0.1'],
      },
      // Peers use it too (etcd on a master's loopback), hence both usages.
      {
        name: 'etcd-server',
        issuer: 'etcd-ca',
        subject: { cn: 'etcd-server' },
        usage: ['serverAuth', 'clientAuth'],
        dns: ['localhost'],
        ip: ['127.0.0.1'],
      },
      { name: 'apiserver-etcd-client', issuer: 'etcd-ca', subject: { cn: 'kube-apiserver-etcd-client' }, usage: client },
      {
        name: 'apiserver-kubelet-client',
        issuer: 'ca',
        subject: { cn: 'kube-apiserver-kubelet-client', o: 'system:masters' },
        usage: client,
      },
      // --requestheader-allowed-names=front-proxy-client in kube-apiserver.service names this CN.
      { name: 'front-proxy-client', issuer: 'front-proxy-ca', subject: { cn: 'front-proxy-client' }, usage: client },
      { name: 'controller-manager', issuer: 'ca', subject: { cn: 'system:kube-controller-manager' }, usage: client },
      { name: 'scheduler', issuer: 'ca', subject: { cn: 'system:kube-scheduler' }, usage: client },
      // Bound by default to system:node-proxier.
      { name: 'kube-proxy', issuer: 'ca', subject: { cn: 'system:kube-proxy' }, usage: client },
    ],
    admin: { name: 'admin', issuer: 'ca', subject: { cn: 'kubernetes-admin', o: 'system:masters' }, usage: client },
    server: `https://${roleRecordName('master', cluster, domain)}:6443`,
  };
}
