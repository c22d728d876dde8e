// One master per cluster until the highly available control plane lands (issue 18). Each master starts
// its own etcd and API server; several of them behind `masters.<cluster>.<domain>` are several clusters
// under one name, and kubelets split between them. Every tool that can ask for masters refuses more.
export const HA_ISSUE = 'issue 18 (highly available control plane)';

/** Why `count` masters cannot be had, or undefined when it is one (or none). */
export function tooManyMasters(count: number): string | undefined {
  if (count <= 1) return undefined;
  return `${count} masters asked for, but a cluster has one master until ${HA_ISSUE} lands: several would each start their own etcd and API server behind one name, and kubelets would split between them`;
}
