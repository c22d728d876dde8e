// Overlay peer discovery: who the other minions are, from `minions.<cluster>.<domain>`. The cncf/demo
// wrapper dropped this node's address only when it came first and only for eth0; here every address of
// every interface is this node, duplicates count once, and addresses no peer can have are never peers.
import type { NetworkInterfaceInfo } from 'node:os';
import { isIPv4 } from 'node:net';
import { queryA, DnsError, type Nameserver } from './dns.js';
import { abortable, monotonicMs, sleep } from './abort.js';
import type { PhaseContext } from './phase.js';

export type Interfaces = NodeJS.Dict<NetworkInterfaceInfo[]>;

export type Unusable = 'not-ipv4' | 'unspecified' | 'loopback' | 'link-local' | 'multicast' | 'reserved' | 'broadcast';

/** Why an address can never be a peer's, or undefined when it can. */
export function unusableReason(address: string): Unusable | undefined {
  if (!isIPv4(address)) return 'not-ipv4';
  const [a = 0, b = 0] = address.split('.').map(Number);
  if (a === 0) return 'unspecified';
  if (a === 127) return 'loopback';
  if (a === 169 && b === 254) return 'link-local';
  if (a >= 224 && a <= 239) return 'multicast';
  if (address === '255.255.255.255') return 'broadcast';
  if (a >= 240) return 'reserved';
  return undefined;
}

/** Every IPv4 address on every interface of this node (Node 18.0-18.3 spell the family as a number). */
export function localIPv4(interfaces: Interfaces): Set<string> {
  const found = new Set<string>();
  for (const infos of Object.values(interfaces))
    for (const info of infos ?? []) if (info.family === 'IPv4' || (info.family as unknown) === 4) found.add(info.address);
  return found;
}

export interface PeerView {
  /** This node's addresses that the record lists. */
  self: string[];
  /** The other minions: distinct, usable, in numeric order (round-robin reordering is not a change). */
  peers: string[];
  /** Distinct minions including this node: Weave's consensus count. */
  members: number;
  /** Answers that can never be a peer's address, with the reason. */
  ignored: { address: string; reason: Unusable }[];
  /** Addresses listed more than once (counted once). */
  duplicates: string[];
}

/** What an answer means for this node. Pure. */
export function decidePeers(addresses: readonly string[], local: ReadonlySet<string>): PeerView {
  const seen = new Set<string>();
  const duplicates = new Set<string>();
  const ignored: PeerView['ignored'] = [];
  const self: string[] = [];
  const peers: string[] = [];
  for (const address of addresses) {
    if (seen.has(address)) {
      duplicates.add(address);
      continue;
    }
    seen.add(address);
    const reason = unusableReason(address);
    if (reason) ignored.push({ address, reason });
    else if (local.has(address)) self.push(address);
    else peers.push(address);
  }
  peers.sort(compareIPv4);
  return { self, peers, members: peers.length + (self.length ? 1 : 0), ignored, duplicates: [...duplicates] };
}

export function compareIPv4(x: string, y: string): number {
  const n = (a: string) => a.split('.').reduce((acc, part) => acc * 256 + Number(part), 0);
  return n(x) - n(y);
}

export function samePeers(x: readonly string[], y: readonly string[]): boolean {
  return x.length === y.length && x.every((a, i) => a === y[i]);
}

/** One look at the record, classified. Only `ok` may change what Weave is told. */
export type Lookup =
  | { kind: 'ok'; view: PeerView; ttl: number | undefined; transport: 'udp' | 'tcp' }
  | { kind: 'empty'; rcode: string; view: PeerView }
  | { kind: 'absent'; view: PeerView }
  | { kind: 'dns-down'; error: string };

export async function lookupPeers(
  name: string,
  ns: Nameserver,
  local: ReadonlySet<string>,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<Lookup> {
  let answer;
  try {
    answer = await abortable(queryA(name, ns, { timeoutMs }), signal);
  } catch (err) {
    if (err instanceof DnsError) return { kind: 'dns-down', error: err.message };
    throw err;
  }
  const view = decidePeers(answer.addresses, local);
  if (answer.rcode !== 'NOERROR' && answer.rcode !== 'NXDOMAIN') return { kind: 'dns-down', error: `${name}: ${answer.rcode}` };
  if (view.self.length + view.peers.length === 0) return { kind: 'empty', rcode: answer.rcode, view };
  if (!view.self.length) return { kind: 'absent', view };
  return { kind: 'ok', view, ttl: answer.ttl, transport: answer.transport };
}

/** What a lookup that is not `ok` is waiting for, in words for `agent status`. */
export function describeLookup(name: string, lookup: Exclude<Lookup, { kind: 'ok' }>, local: ReadonlySet<string>): string {
  switch (lookup.kind) {
    case 'empty':
      return `${name} to list any node (${lookup.rcode === 'NXDOMAIN' ? 'NXDOMAIN' : 'no usable A records'})`;
    case 'absent':
      return `${name} to list this node (${[...local].filter((a) => !unusableReason(a)).join(', ') || 'no usable local IPv4 address'}; ${lookup.view.peers.length} other nodes listed)`;
    case 'dns-down':
      return `DNS for ${name} (${lookup.error})`;
  }
}

export interface WaitOptions {
  /** Between looks while the record is empty, lacks this node, or DNS is down. */
  pollMs: number;
  /** Between a first good answer and the look that must confirm it. */
  settleMs: number;
  /** Give up (the phase fails, naming what it waited for) after this long. */
  timeoutMs: number;
  dnsTimeoutMs: number;
}

export type GoodLookup = Extract<Lookup, { kind: 'ok' }>;

/**
 * Waits until the record lists this node, and two looks in a row agree on the other minions: the
 * member count becomes Weave's consensus value, which can never be changed afterwards, so an answer
 * still moving between two queries (minions registering) is not taken. Bounded, and each new reason
 * for waiting is reported, so `agent status` says what the node is waiting on.
 */
export async function awaitMembership(
  ctx: Pick<PhaseContext, 'host' | 'nameserver' | 'signal' | 'report'>,
  name: string,
  local: ReadonlySet<string>,
  opts: WaitOptions,
): Promise<GoodLookup> {
  const deadline = monotonicMs() + opts.timeoutMs;
  let candidate: GoodLookup | undefined;
  let waitingOn: string | undefined;
  const wait = async (what: string) => {
    if (what === waitingOn) return;
    waitingOn = what;
    ctx.host.log('waiting', { on: what });
    await ctx.report({ waitingOn: what });
  };
  for (;;) {
    const lookup = await lookupPeers(name, ctx.nameserver, local, opts.dnsTimeoutMs, ctx.signal);
    let delay = opts.pollMs;
    if (lookup.kind !== 'ok') {
      candidate = undefined;
      await wait(describeLookup(name, lookup, local));
    } else if (candidate && samePeers(candidate.view.peers, lookup.view.peers)) {
      if (waitingOn) await ctx.report({ waitingOn: null });
      return lookup;
    } else {
      if (candidate) {
        ctx.host.log('peers-unsettled', { record: name, before: candidate.view.peers.length, now: lookup.view.peers.length });
        await wait(`${name} to settle (the answer changed between two queries)`);
      }
      candidate = lookup;
      delay = opts.settleMs;
    }
    const left = deadline - monotonicMs();
    if (left <= 0) throw new Error(`gave up after ${Math.round(opts.timeoutMs / 1000)} s waiting for ${waitingOn ?? `${name} to settle`}`);
    await sleep(Math.min(delay, left), ctx.signal);
  }
}
