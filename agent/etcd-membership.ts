// Which etcd cluster a master belongs to, decided from what it can see: the masters record (two looks), its
// own address, whether its data dir exists, and the member list a running cluster answered with. Pure: the
// etcd phase gathers the inputs and carries the decision out.
//
// The rule that keeps one cluster: a master forms a *new* cluster only when no listed master answers with an
// existing one, the last two looks at the record agree, list this master, and list exactly the number of
// masters the role file expects (MASTER_COUNT). A record still filling up (2 of 3 listed) or changing between
// looks means wait, never "form with what is there": two masters seeing {A,B} and {A,B,C} would otherwise
// each bootstrap a cluster. Masters that formed with the same list compute the same member and cluster IDs
// (etcd derives them from the peer URLs and the token), so they are one cluster even if they started at
// different times. Every later master finds that cluster and joins it (member add, then `existing`).

/** One member as etcd's member list gives it (the JSON gateway spells the 64-bit ID as a decimal string). */
export interface EtcdMember {
  ID: string;
  /** Empty while the member has been added but has not started yet. */
  name?: string;
  peerURLs?: string[];
  clientURLs?: string[];
}

export interface EtcdPorts {
  client: number;
  peer: number;
}

export const ETCD_PORTS: EtcdPorts = { client: 2379, peer: 2380 };

export interface MembershipInput {
  /** This master's address, as the masters record lists it. */
  self: string;
  /** The last looks at the masters record (usable addresses), oldest first; two agreeing ones are needed to form. */
  looks: readonly (readonly string[])[];
  /** MASTER_COUNT from the role file: how many masters the cluster is made with. */
  expected: number;
  /** Whether this master's etcd data dir holds a member already. */
  dataDir: boolean;
  /** The members a running cluster answered with (asked through a listed master), or undefined when none answered. */
  existing: readonly EtcdMember[] | undefined;
  ports?: EtcdPorts;
}

export type Membership =
  /** The data dir knows the cluster and this member: etcd ignores (and needs no) initial-cluster flags. */
  | { kind: 'restart'; name: string }
  /** Bootstrap a cluster of exactly `members` (this one included). */
  | { kind: 'new'; name: string; members: string[]; initialCluster: string }
  /**
   * Join the running cluster: `add` when this peer URL is not a member yet (member add first, through an
   * existing member's client API), `remove` the ID of this address's old member whose data is gone.
   */
  | { kind: 'join'; name: string; initialCluster: string; add: boolean; remove?: string }
  | { kind: 'wait'; reason: string };

export const peerUrl = (address: string, ports: EtcdPorts = ETCD_PORTS) => `https://${address}:${ports.peer}`;
export const clientUrl = (address: string, ports: EtcdPorts = ETCD_PORTS) => `https://${address}:${ports.client}`;

/** A member's name is its address: what the masters record lists, so status and logs name the machine. */
export const memberName = (address: string) => address;

/** The address in a peer or client URL (`https://10.0.0.5:2380` → `10.0.0.5`). */
export function urlAddress(url: string): string {
  return new URL(url).hostname.replace(/^\[|\]$/g, '');
}

const sorted = (list: readonly string[]) => [...new Set(list)].sort();
const sameSet = (a: readonly string[], b: readonly string[]) => {
  const x = sorted(a);
  const y = sorted(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
};

/** etcd's --initial-cluster: `name=peerURL,...`, in a stable order. */
export function initialCluster(entries: readonly { name: string; peerUrl: string }[]): string {
  return [...entries]
    .sort((a, b) => (a.peerUrl < b.peerUrl ? -1 : a.peerUrl > b.peerUrl ? 1 : 0))
    .map((e) => `${e.name}=${e.peerUrl}`)
    .join(',');
}

export function decideMembership(input: MembershipInput): Membership {
  const ports = input.ports ?? ETCD_PORTS;
  const name = memberName(input.self);
  const mine = peerUrl(input.self, ports);
  if (input.dataDir) return { kind: 'restart', name };

  if (input.existing) {
    const own = input.existing.find((m) => m.peerURLs?.includes(mine));
    // A started member at this address whose data dir is gone cannot come back as itself (its log is lost):
    // it is removed and this master joins as a new member.
    const replace = own?.name ? own : undefined;
    const others = input.existing.filter((m) => m !== own);
    const entries = others.flatMap((m) =>
      (m.peerURLs ?? []).map((u) => ({ name: m.name || memberName(urlAddress(u)), peerUrl: u })),
    );
    entries.push({ name, peerUrl: mine });
    return {
      kind: 'join',
      name,
      initialCluster: initialCluster(entries),
      add: !own || replace !== undefined,
      ...(replace ? { remove: replace.ID } : {}),
    };
  }

  const [before, last] = input.looks.slice(-2);
  if (!before || !last) return { kind: 'wait', reason: 'a second look at the masters record' };
  if (!sameSet(before, last)) return { kind: 'wait', reason: 'the masters record to settle (it changed between two looks)' };
  if (!last.includes(input.self)) return { kind: 'wait', reason: `the masters record to list this master (${input.self})` };
  const members = sorted(last);
  if (members.length !== input.expected) {
    return {
      kind: 'wait',
      reason: `the masters record to list ${input.expected} masters (MASTER_COUNT=${input.expected}); it lists ${members.length}: ${members.join(', ')}`,
    };
  }
  return {
    kind: 'new',
    name,
    members,
    initialCluster: initialCluster(members.map((a) => ({ name: memberName(a), peerUrl: peerUrl(a, ports) }))),
  };
}
