// Pure planning for the Route53 bookkeeping: who should be in masters/minions.<cluster>.<domain>,
// what the zone has, and the fewest ChangeResourceRecordSets batches that turn one into the other.
//
// Route53 limits (Amazon Route 53 Developer Guide, "Quotas", DNSLimitations.html, sections
// "Quotas on records" and "Maximums on API requests"; API reference of ChangeResourceRecordSets):
// - Values in a record: 400 per record.
// - A request cannot contain more than 1,000 ResourceRecord elements; with Action UPSERT each
//   ResourceRecord element counts twice.
// - The sum of characters in all Value elements in a request cannot exceed 32,000; with UPSERT each
//   character counts twice.
// - A request cannot contain more than 100 Change elements.
import { roleRecordName, ROLES, type Role } from '../../agent/dns-names.js';

export const ROUTE53_LIMITS = {
  valuesPerRecord: 400,
  recordsPerBatch: 1000,
  charsPerBatch: 32000,
  changesPerBatch: 100,
} as const;
export type Route53Limits = { readonly [K in keyof typeof ROUTE53_LIMITS]: number };

export interface Member {
  instanceId: string;
  cluster: string;
  role: Role;
  privateIp: string;
  /** ms since epoch; the oldest members are kept when a role outgrows one record */
  launchTime: number;
}

export interface RecordSet {
  /** as Route53 spells it, without the trailing dot */
  name: string;
  ttl: number;
  values: string[];
}

export interface Change {
  action: 'UPSERT' | 'DELETE';
  record: RecordSet;
}

export interface Desired {
  records: Map<string, RecordSet>;
  /** roles with more members than one record can hold: only the oldest `kept` are published */
  capped: { name: string; members: number; kept: number }[];
}

/**
 * One A record per (cluster, role) that has members. Weave and the agent need a stable subset of
 * peers, not all of them, so a role larger than Route53's 400 values publishes its oldest members:
 * newcomers never push out a published peer, and the record changes only when one of those leaves.
 */
export function desiredRecords(members: Member[], domain: string, ttl: number, limits: Route53Limits = ROUTE53_LIMITS): Desired {
  const groups = new Map<string, Member[]>();
  for (const m of members) {
    const name = roleRecordName(m.role, m.cluster, domain);
    const group = groups.get(name);
    if (group) group.push(m); // in place: copying the group per member made planning quadratic in cluster size
    else groups.set(name, [m]);
  }
  const records = new Map<string, RecordSet>();
  const capped: Desired['capped'] = [];
  for (const [name, group] of groups) {
    const ordered = [...group].sort((a, b) => a.launchTime - b.launchTime || (a.instanceId < b.instanceId ? -1 : 1));
    const ips = [...new Set(ordered.map((m) => m.privateIp))];
    const kept = ips.slice(0, limits.valuesPerRecord);
    if (kept.length < ips.length) capped.push({ name, members: ips.length, kept: kept.length });
    records.set(name, { name, ttl, values: sortIps(kept) });
  }
  return { records, capped };
}

function sortIps(ips: string[]): string[] {
  const key = (ip: string) => ip.split('.').map((n) => n.padStart(3, '0')).join('.');
  return [...ips].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

/** The record names dns-sync owns in a zone: masters/minions of any (or the given) clusters. */
export function isManagedName(name: string, domain: string, clusters?: readonly string[]): boolean {
  const suffix = `.${domain.toLowerCase()}`;
  const lower = name.toLowerCase();
  if (!lower.endsWith(suffix)) return false;
  const labels = lower.slice(0, -suffix.length).split('.');
  if (labels.length !== 2) return false;
  const [role, cluster] = labels as [string, string];
  return ROLES.some((r) => `${r}s` === role) && (clusters === undefined || clusters.includes(cluster));
}

function sameRecord(a: RecordSet, b: RecordSet): boolean {
  if (a.ttl !== b.ttl || a.values.length !== b.values.length) return false;
  const set = new Set(a.values);
  return b.values.every((v) => set.has(v));
}

/** Addresses the zone publishes that the desired records leave out, each once: what a plan would drop. */
export function addressesToDrop(desired: Map<string, RecordSet>, current: Map<string, RecordSet>): string[] {
  const dropped = new Set<string>();
  for (const [name, have] of current) {
    const keep = new Set(desired.get(name)?.values ?? []);
    for (const ip of have.values) if (!keep.has(ip)) dropped.add(ip);
  }
  return [...dropped];
}

/** UPSERT what is missing or different, DELETE managed records nobody is behind; nothing when equal. */
export function planChanges(desired: Map<string, RecordSet>, current: Map<string, RecordSet>): Change[] {
  const changes: Change[] = [];
  for (const [name, want] of desired) {
    const have = current.get(name);
    if (!have || !sameRecord(want, have)) changes.push({ action: 'UPSERT', record: want });
  }
  for (const [name, have] of current) {
    if (!desired.has(name)) changes.push({ action: 'DELETE', record: have });
  }
  return changes;
}

function weight(c: Change): { records: number; chars: number } {
  const factor = c.action === 'UPSERT' ? 2 : 1;
  return {
    records: c.record.values.length * factor,
    chars: c.record.values.reduce((n, v) => n + v.length, 0) * factor,
  };
}

/**
 * First-fit decreasing over the three per-request limits, heaviest (most counted records) first: the
 * classic bin-packing heuristic, never more than 11/9 of the optimum (+1). With at most 400 values per
 * record a single change always fits (800 counted records, 12,000 counted characters for IPv4), so a
 * few clusters' worth of changes go out in one batch.
 */
export function packBatches(changes: Change[], limits: Route53Limits = ROUTE53_LIMITS): Change[][] {
  const sorted = [...changes].sort((a, b) => weight(b).records - weight(a).records || (a.record.name < b.record.name ? -1 : 1));
  const bins: { changes: Change[]; records: number; chars: number }[] = [];
  for (const c of sorted) {
    const w = weight(c);
    if (w.records > limits.recordsPerBatch || w.chars > limits.charsPerBatch) {
      throw new Error(`${c.record.name}: one change exceeds Route53's per-request limits`);
    }
    const bin = bins.find(
      (b) =>
        b.changes.length < limits.changesPerBatch &&
        b.records + w.records <= limits.recordsPerBatch &&
        b.chars + w.chars <= limits.charsPerBatch,
    );
    if (bin) {
      bin.changes.push(c);
      bin.records += w.records;
      bin.chars += w.chars;
    } else bins.push({ changes: [c], records: w.records, chars: w.chars });
  }
  return bins.map((b) => b.changes);
}
