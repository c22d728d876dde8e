// Cluster membership from EC2: which running instances belong to which cluster and role, read from
// the `KubernetesCluster` and `Role` tags. People type tags by hand, so keys and values are compared
// trimmed and case-insensitively ('role', ' Role ', 'Minion '); anything still unusable is reported,
// not guessed.
import type { Reservation } from '@aws-sdk/client-ec2';
import { isDnsLabel, ROLES, type Role } from '../../agent/dns-names.js';
import type { Member } from './dns-plan.js';

export const CLUSTER_TAG = 'KubernetesCluster';
export const ROLE_TAG = 'Role';

export interface Skipped {
  instanceId: string;
  reason: string;
}

function tag(tags: { Key?: string; Value?: string }[] | undefined, key: string): string | undefined {
  const want = key.toLowerCase();
  return tags?.find((t) => t.Key?.trim().toLowerCase() === want)?.Value?.trim();
}

export function membersFromReservations(reservations: Reservation[]): { members: Member[]; skipped: Skipped[] } {
  const members: Member[] = [];
  const skipped: Skipped[] = [];
  for (const instance of reservations.flatMap((r) => r.Instances ?? [])) {
    const instanceId = instance.InstanceId ?? '?';
    const cluster = tag(instance.Tags, CLUSTER_TAG)?.toLowerCase();
    const role = tag(instance.Tags, ROLE_TAG)?.toLowerCase();
    const skip = (reason: string) => skipped.push({ instanceId, reason });
    if (cluster === undefined) continue; // not ours: the tag-key filter is a wildcard and may match lookalikes
    if (!isDnsLabel(cluster)) skip(`${CLUSTER_TAG} tag ${JSON.stringify(cluster)} is not a DNS label`);
    else if (!role || !ROLES.includes(role as Role)) skip(`${ROLE_TAG} tag ${JSON.stringify(role ?? '')} is not master or minion`);
    else if (!instance.PrivateIpAddress) skip('no private IP yet');
    else {
      members.push({
        instanceId,
        cluster,
        role: role as Role,
        privateIp: instance.PrivateIpAddress,
        launchTime: instance.LaunchTime ? new Date(instance.LaunchTime).getTime() : 0,
      });
    }
  }
  return { members, skipped };
}

/**
 * EC2 filters are case-sensitive and have no character classes, so the server-side tag-key filter
 * names the spellings people use, with `*` around them to absorb stray spaces; the exact,
 * case-insensitive match happens above.
 */
export const CLUSTER_TAG_FILTER = ['KubernetesCluster', 'kubernetescluster', 'kubernetesCluster', 'Kubernetescluster', 'KUBERNETESCLUSTER'].map(
  (k) => `*${k}*`,
);
