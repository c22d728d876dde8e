/**
 * Weave IPAM's start mode: which nodes form the ring (`--ipalloc-init consensus=N`) and which only join it
 * (`--ipalloc-init observer`). Deciding only: no DNS, no files, no clock; the weave phase does the I/O.
 *
 * API
 * - `parseMasterCount(text, where)` → N: the role file's MASTER_COUNT (1 to 5; `DEFAULT_MASTER_COUNT` 1 when
 *   unset). The role-file validation calls it, so a bad value never reaches a phase.
 * - `masterCountOf(config.vars)` → N for a validated role file (a blank or missing MASTER_COUNT is the default).
 * - `decideConsensus(input)` → `ConsensusDecision`. Input (`ConsensusInput`):
 *     role, masterCount (MASTER_COUNT), file (the role file, for messages), mastersRecord (`masters.<c>.<d>`),
 *     local (this node's IPv4 addresses), masters (the A answers of mastersRecord as received, or undefined
 *     when DNS gave no answer), minions (the other minions as peers.ts's `decidePeers` gives them, i.e.
 *     `PeerView.peers` of `minions.<c>.<d>`: usable, distinct, numeric order; [] when none),
 *     chosen (the `ConsensusSet` this node persisted at its first launch, if any).
 *   Output: mode ('consensus' | 'observer'), ipallocInit (the flag's value: `consensus=N` or `observer`),
 *     set (the `ConsensusSet` to persist; the same size as `chosen`, whose members it keeps, when given),
 *     peers (the router's peer arguments: the set's members and the listed masters in numeric order, then
 *     the minions in their order; each once, never this node), reason (why this mode, in words), contradiction (what DNS says against the set, or null).
 *   Throws InputError only for a first choice that DNS already shows unsafe: a master that sees more
 *   masters listed than MASTER_COUNT (they could form separate rings).
 * - `consensusStatus(decision)` → `ConsensusStatus` {mode, ipallocInit, consensus: {size, members}, reason,
 *   contradiction}: plain data for status.json, published as the fact `weaveConsensus` (typed in agent/status.ts,
 *   shown by `agent status` as a `weave:` row, and a `DNS disagrees:` line while contradiction is set).
 * - `parseConsensusSet(value)` → the persisted set, or undefined when the value is not one.
 * Wiring notes: persist `decision.set` (JSON) next to Weave's state and pass it back as `chosen` on every
 * later pass and boot; a node that has none yet (including one launched under the old minion-count rule) just
 * chooses, since weaver ignores --ipalloc-init once it has persisted IPAM data (ipam/allocator.go Start:
 * "Initialising with persisted data"). The range (--ipalloc-range) is `clusterCidrOf(config.vars)` from
 * agent/cluster-cidr.ts; the role-file validation has already refused a CLUSTER_CIDR that overlaps SERVICE_CIDR.
 *
 * The rule: the consensus set is the masters, and N is MASTER_COUNT, a value every node's role file carries
 * alike. Why the masters: they are few (1, 3 or 5), launched first and kept, and every node already knows them
 * through `masters.<c>.<d>`; Weave's guide for growing clusters asks exactly for "a fixed cluster" on
 * long-lived machines with every other peer an observer (rajch/weave operational-guide/autoscaling.md). Why
 * a count from the role file and not from DNS: a count read from a record depends on when it was read (nodes
 * booting while the record grows would pick 1, 2, 3…) and on bare metal the record lists machines that never
 * booted. Weave's quorum is N/2+1 (prog/weaver/main.go determineQuorum), so a majority of the masters forms
 * the ring once, the same majority etcd needs; a minority or the minions alone can never form a second ring.
 * Minions never count anyone and never wait to see themselves in a record: an observer only asks a peer
 * that has the ring for space.
 *
 * Once chosen the set does not change: N is kept whatever MASTER_COUNT says later, and a member address is
 * never dropped (Weave's guide: $PEERS "should include fixed peers which are temporarily offline"). Addresses
 * of masters not yet registered when the node chose are added as DNS lists them, up to N. When DNS later
 * disagrees (a member no longer listed, more masters than N, another count), the set is kept and the
 * disagreement is reported: re-initialising IPAM on one node is how a second ring, a split brain, starts.
 */
import type { Role } from './dns-names.js';
import { InputError, type Where } from './errors.js';
import { ipv4Number } from './ipv4-cidr.js';
import { unusableReason } from './peers.js';

export const DEFAULT_MASTER_COUNT = 1;
export const MAX_MASTER_COUNT = 5;

/** MASTER_COUNT: how many masters the cluster is built with, the same on every node. */
export function parseMasterCount(text: string, where: Where = {}): number {
  const n = /^[1-9]$/.test(text) ? Number(text) : NaN;
  if (!(n <= MAX_MASTER_COUNT))
    throw new InputError(`MASTER_COUNT ${JSON.stringify(text)} is not a whole number from 1 to ${MAX_MASTER_COUNT}`, { ...where, value: text });
  return n;
}

/**
 * The role-file values that tell every node how many masters the cluster has: MASTER_COUNT, left unset for
 * the default (one master keeps etcd on loopback, as a cluster without the key always has).
 */
export function masterCountVars(count: number): Record<string, string> {
  return count === DEFAULT_MASTER_COUNT ? {} : { MASTER_COUNT: String(count) };
}

/** N from a validated role file's values: blank or missing means the default, as for every optional key. */
export function masterCountOf(vars: Readonly<Record<string, string>>): number {
  return vars.MASTER_COUNT ? parseMasterCount(vars.MASTER_COUNT) : DEFAULT_MASTER_COUNT;
}

/** What a node chose at its first launch: kept (persisted) for the life of its Weave state. */
export interface ConsensusSet {
  /** N of `consensus=N`: MASTER_COUNT when the node first chose. */
  size: number;
  /** The masters' addresses known so far, numeric order, at most `size`; never shrinks. */
  members: string[];
}

export interface ConsensusInput {
  role: Role;
  masterCount: number;
  /** The role file, named in messages. */
  file: string;
  /** `masters.<cluster>.<domain>`, named in messages. */
  mastersRecord: string;
  local: ReadonlySet<string>;
  /** The masters record's A answers as received; undefined when DNS gave no answer (down, timeout). */
  masters: readonly string[] | undefined;
  /** The other minions: `PeerView.peers` of the minions record (usable, distinct, numeric order); [] when none. */
  minions: readonly string[];
  chosen?: ConsensusSet | undefined;
}

export type ConsensusMode = 'consensus' | 'observer';

export interface ConsensusDecision {
  mode: ConsensusMode;
  /** The value of the router's `--ipalloc-init`. */
  ipallocInit: string;
  set: ConsensusSet;
  peers: string[];
  reason: string;
  contradiction: string | null;
}

/** `agent status`'s view of the decision (status.json `weaveConsensus`). */
export interface ConsensusStatus {
  mode: ConsensusMode;
  ipallocInit: string;
  consensus: ConsensusSet;
  reason: string;
  contradiction: string | null;
}

/** Distinct usable addresses, numeric order: round-robin order and duplicates mean nothing. */
function usable(addresses: readonly string[]): string[] {
  // Keyed once, not per comparison: a minion's answer can hold thousands of addresses.
  const keyed = [...new Set(addresses)].filter((a) => !unusableReason(a)).map((a) => ({ a, n: ipv4Number(a) }));
  return keyed.sort((x, y) => x.n - y.n).map(({ a }) => a);
}

const list = (addresses: readonly string[]) => addresses.join(', ') || 'none';

function describeSet(set: ConsensusSet): string {
  const known = set.members.length === set.size ? '' : `, ${set.members.length} of them known`;
  return `the ${set.size === 1 ? 'master' : `${set.size} masters`} (${list(set.members)}${known})`;
}

/** The first choice, or the kept one with the masters DNS newly lists added (up to its size). */
function chooseSet(input: ConsensusInput, listed: readonly string[] | undefined): ConsensusSet {
  const { chosen, masterCount } = input;
  if (!chosen) return { size: masterCount, members: (listed ?? []).slice(0, masterCount) };
  const members = [...chosen.members];
  for (const address of listed ?? []) if (members.length < chosen.size && !members.includes(address)) members.push(address);
  return { size: chosen.size, members: usable(members) };
}

/** What DNS and the role file now say that the kept set does not, or null. */
function contradictionOf(input: ConsensusInput, set: ConsensusSet, listed: readonly string[] | undefined): string | null {
  const found: string[] = [];
  if (input.chosen && input.masterCount !== set.size)
    found.push(`MASTER_COUNT is ${input.masterCount} in ${input.file}, but this node chose consensus=${set.size} at its first launch`);
  if (listed) {
    const gone = set.members.filter((a) => !listed.includes(a));
    const extra = listed.filter((a) => !set.members.includes(a));
    if (gone.length) found.push(`${input.mastersRecord} no longer lists ${gone.length === 1 ? 'member' : 'members'} ${list(gone)}`);
    if (extra.length) found.push(`${input.mastersRecord} lists ${list(extra)}, beyond the ${set.size} of the set`);
  }
  if (!found.length) return null;
  return `${found.join('; ')} (DNS lists ${listed ? list(listed) : 'nothing'}); kept the consensus set, ${describeSet(set)}: Weave's ring forms once, and starting it again on some nodes would split the overlay`;
}

export function decideConsensus(input: ConsensusInput): ConsensusDecision {
  const listed = input.masters && usable(input.masters);
  const master = input.role === 'master';
  if (master && !input.chosen && listed && listed.length > input.masterCount)
    throw new InputError(
      `${input.mastersRecord} lists ${listed.length} masters (${list(listed)}), more than MASTER_COUNT=${input.masterCount}: ` +
        `with consensus=${input.masterCount} they could form separate rings; set MASTER_COUNT=${listed.length} in every node's role file`,
      { file: input.file, value: String(input.masterCount) },
    );
  const set = chooseSet(input, listed);
  const quorum = Math.floor(set.size / 2) + 1;
  const mode: ConsensusMode = master ? 'consensus' : 'observer';
  const reason = master
    ? `a master: the consensus set is ${describeSet(set)}, so it starts with consensus=${set.size}; a majority (${quorum} of ${set.size}) forms the ring once`
    : `a minion: it joins as an observer of the consensus set, ${describeSet(set)}; how many minions DNS lists never matters`;
  // The consensus set first (it holds the ring), then the minions as peers.ts already cleaned them: sorting
  // thousands of minion addresses again at every pass would buy nothing.
  const masterPeers = usable([...set.members, ...(listed ?? [])]).filter((a) => !input.local.has(a));
  const taken = new Set([...masterPeers, ...input.local]);
  const peers = [...masterPeers, ...input.minions.filter((a) => !taken.has(a))];
  return {
    mode,
    ipallocInit: master ? `consensus=${set.size}` : 'observer',
    set,
    peers,
    reason,
    contradiction: contradictionOf(input, set, listed),
  };
}

export function consensusStatus(decision: ConsensusDecision): ConsensusStatus {
  const { mode, ipallocInit, set, reason, contradiction } = decision;
  return { mode, ipallocInit, consensus: { size: set.size, members: [...set.members] }, reason, contradiction };
}

/** A persisted set, checked: undefined when it is not one this module wrote. */
export function parseConsensusSet(value: unknown): ConsensusSet | undefined {
  const v = value as Partial<ConsensusSet> | null | undefined;
  if (!v || !Number.isInteger(v.size) || v.size! < 1 || v.size! > MAX_MASTER_COUNT) return undefined;
  if (!Array.isArray(v.members) || v.members.length > v.size!) return undefined;
  if (!v.members.every((a) => typeof a === 'string' && !unusableReason(a))) return undefined;
  return { size: v.size!, members: usable(v.members) };
}
