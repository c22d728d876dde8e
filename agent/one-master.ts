// EC2 launches make one master per cluster until `launch` tells masters the cluster's master count (the
// role file's MASTER_COUNT, issue 18): a master without it starts a one-member etcd of its own, so several of
// them behind `masters.<cluster>.<domain>` would be several clusters under one name. The metal inventory
// and `cluster up` know the count and pass it.
export const HA_ISSUE = 'issue 18 (highly available control plane)';

/** Why `count` masters cannot be had, or undefined when it is one (or none). */
export function tooManyMasters(count: number): string | undefined {
  if (count <= 1) return undefined;
  return `${count} masters asked for, but a cluster has one master until ${HA_ISSUE} lands: several would each start their own etcd and API server behind one name, and kubelets would split between them`;
}
