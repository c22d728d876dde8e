// The etcd cluster's health as `agent status` and cluster-check show it: every member asked on its own client
// URL, and the quorum from the member count. Deciding (pure) is apart from asking, so the wording is tested
// without a cluster.
import { memberHealth, type EtcdTls } from './etcd-client.js';
import { memberName, urlAddress, type EtcdMember } from './etcd-membership.js';

export interface MemberHealth {
  name: string;
  id: string;
  clientUrl?: string;
  healthy: boolean;
  reason?: string;
}

export interface EtcdHealth {
  /** healthy: every member answers; degraded: some do not but a quorum does; lost: no quorum (the store is read-only or down). */
  state: 'healthy' | 'degraded' | 'lost';
  members: MemberHealth[];
  quorum: { needed: number; healthy: number };
  /** One line, naming the members that do not answer. */
  summary: string;
}

/** A member's name, or its address while it has been added but not started (etcd gives it no name yet). */
export function displayName(m: EtcdMember): string {
  if (m.name) return m.name;
  const url = m.peerURLs?.[0];
  return url ? memberName(urlAddress(url)) : m.ID;
}

export function summarizeHealth(members: readonly MemberHealth[]): EtcdHealth {
  const healthy = members.filter((m) => m.healthy).length;
  const needed = Math.floor(members.length / 2) + 1;
  const down = members.filter((m) => !m.healthy);
  const state = down.length === 0 ? 'healthy' : healthy >= needed ? 'degraded' : 'lost';
  const lost = down.map((m) => `${m.name} (${m.reason ?? 'no answer'})`).join(', ');
  const summary =
    state === 'healthy'
      ? `healthy: ${healthy} of ${members.length} members, quorum ${needed}`
      : `${state}: ${healthy} of ${members.length} members healthy, quorum ${needed} ${state === 'degraded' ? 'kept' : 'lost'}; not answering: ${lost}`;
  return { state, members: [...members], quorum: { needed, healthy }, summary };
}

/** Asks every member of `members` for /health on its first client URL. */
export async function probeHealth(members: readonly EtcdMember[], tls: EtcdTls, timeoutMs = 2000): Promise<EtcdHealth> {
  const results = await Promise.all(
    members.map(async (m): Promise<MemberHealth> => {
      const url = m.clientURLs?.[0];
      const base = { name: displayName(m), id: m.ID, ...(url ? { clientUrl: url } : {}) };
      if (!url) return { ...base, healthy: false, reason: 'not started (no client URL yet)' };
      return { ...base, ...(await memberHealth(url, tls, timeoutMs)) };
    }),
  );
  return summarizeHealth(results);
}
