// The names machines agree on (DESIGN.md "DNS names"): the agent owns them, the DNS servers and
// Route53 bookkeeping publish them.
export type Role = 'master' | 'minion';
export const ROLES: readonly Role[] = ['master', 'minion'];
export const DEFAULT_DNS_DOMAIN = 'k8s';

export function zoneName(cluster: string, domain = DEFAULT_DNS_DOMAIN): string {
  return `${cluster}.${domain}`.toLowerCase();
}

/** `masters.<cluster>.<domain>` or `minions.<cluster>.<domain>`. */
export function roleRecordName(role: Role, cluster: string, domain = DEFAULT_DNS_DOMAIN): string {
  return `${role}s.${zoneName(cluster, domain)}`;
}

/** RFC 1123 label: what CLUSTER_NAME must be, so it can name a zone and never smuggle anything else. */
export function isDnsLabel(text: string): boolean {
  return /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i.test(text);
}

/** A dotted DNS name of RFC 1123 labels (DNS_DOMAIN may have several). */
export function isDnsName(text: string): boolean {
  return text.length <= 253 && text.split('.').every(isDnsLabel);
}
