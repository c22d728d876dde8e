// The cluster (pod) network: the range Weave's IPAM hands pod addresses out of (the router's
// --ipalloc-range). It must not overlap the service network, or a pod and a service can hold the same
// address and kube-proxy's rules send one's traffic to the other.
import { InputError, type Where } from './errors.js';
import { cidrsOverlap, parseIPv4Cidr, type IPv4Cidr } from './ipv4-cidr.js';
import type { ServiceCidr } from './service-cidr.js';

/** Weave's own default --ipalloc-range (rajch/weave prog/weave-kube/launch.sh: IPALLOC_RANGE). */
export const DEFAULT_CLUSTER_CIDR = '10.32.0.0/12';

/**
 * IPv4 only. /8 at the widest (a larger block swallows the private ranges the nodes themselves use);
 * /30 at the narrowest, Weave's minimum (ipam/allocator.go MinSubnetSize = 4 addresses).
 */
export function parseClusterCidr(text: string, where: Where = {}): IPv4Cidr {
  const block = parseIPv4Cidr(text, 8, 30);
  if ('problem' in block)
    throw new InputError(`bad cluster CIDR (${block.problem}): expected e.g. ${DEFAULT_CLUSTER_CIDR}`, { ...where, value: text });
  return block;
}

/** The router's --ipalloc-range from a validated role file's values (blank or missing: the default). */
export function clusterCidrOf(vars: Readonly<Record<string, string>>): string {
  return parseClusterCidr(vars.CLUSTER_CIDR || DEFAULT_CLUSTER_CIDR).cidr;
}

/** Refuses a cluster network that shares any address with the service network, naming both. */
export function checkNetworksApart(cluster: IPv4Cidr, service: ServiceCidr, where: Where = {}): void {
  if (cidrsOverlap(cluster, service.block))
    throw new InputError(
      `CLUSTER_CIDR ${cluster.cidr} overlaps SERVICE_CIDR ${service.cidr}: pod and service addresses must not collide; pick ranges that share no address`,
      { ...where, value: cluster.cidr },
    );
}
