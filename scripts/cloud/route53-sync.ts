// Route53 bookkeeping: read membership from EC2 and the zone from Route53 (every page of both),
// plan with dns-plan.ts, and send only the batches that change something. Run from the CLI (once or
// --watch) or from the Lambda handler; every run repairs drift, whatever event triggered it.
import { DescribeInstancesCommand, type EC2Client, type Reservation } from '@aws-sdk/client-ec2';
import {
  ChangeResourceRecordSetsCommand,
  GetHostedZoneCommand,
  ListHostedZonesByNameCommand,
  ListResourceRecordSetsCommand,
  type ResourceRecordSet,
  type Route53Client,
} from '@aws-sdk/client-route-53';
import { DEFAULT_DNS_DOMAIN, isDnsName } from '../../agent/dns-names.js';
import { InputError } from '../../agent/errors.js';
import { addressesToDrop, desiredRecords, isManagedName, packBatches, planChanges, ROUTE53_LIMITS, type Change, type RecordSet } from './dns-plan.js';
import { CLUSTER_TAG_FILTER, membersFromReservations } from './members.js';
import { DEFAULT_RETRY, withRetry, type RetryPolicy } from './retry.js';

export interface SyncOptions {
  ec2: EC2Client;
  route53: Route53Client;
  /** the private zone's name without the trailing dot; ignored when zoneId is given */
  domain?: string;
  zoneId?: string;
  ttl?: number;
  /** restrict to these clusters (their records and instances); default: every cluster seen */
  clusters?: string[];
  dryRun?: boolean;
  log?: (line: string) => void;
  retry?: Partial<RetryPolicy>;
}

export interface SyncResult {
  zoneId: string;
  domain: string;
  members: number;
  changes: Change[];
  batches: number;
}

export interface Zone {
  id: string;
  domain: string;
}

const stripDot = (name: string) => name.replace(/\.$/, '');
/** Route53 returns ids as `/hostedzone/Z123`; requests take either form. */
const bareId = (id: string) => id.replace(/^\/hostedzone\//, '');

export async function findZone(route53: Route53Client, want: { domain?: string; zoneId?: string }, retry: RetryPolicy): Promise<Zone> {
  if (want.zoneId) {
    const zoneId = want.zoneId;
    const out = await withRetry('GetHostedZone', () => route53.send(new GetHostedZoneCommand({ Id: zoneId })), retry).catch((err: Error) => {
      if (err.name === 'NoSuchHostedZone') throw new InputError(`hosted zone ${zoneId} does not exist`, { value: zoneId });
      throw err;
    });
    if (!out.HostedZone?.Config?.PrivateZone) throw new InputError(`hosted zone ${zoneId} is public; dns-sync writes private addresses only to a private zone`, { value: zoneId });
    return { id: bareId(out.HostedZone.Id ?? zoneId), domain: stripDot(out.HostedZone.Name ?? '').toLowerCase() };
  }
  const domain = (want.domain ?? DEFAULT_DNS_DOMAIN).toLowerCase();
  if (!isDnsName(domain)) throw new InputError(`bad DNS domain ${JSON.stringify(domain)}`, { value: domain });
  // Zones come back sorted by name, starting at the one asked for: the first page holds all of ours.
  const out = await withRetry('ListHostedZonesByName', () => route53.send(new ListHostedZonesByNameCommand({ DNSName: `${domain}.`, MaxItems: 100 })), retry);
  const named = (out.HostedZones ?? []).filter((z) => stripDot(z.Name ?? '').toLowerCase() === domain);
  const privateZones = named.filter((z) => z.Config?.PrivateZone);
  if (privateZones.length === 0) {
    throw new InputError(
      named.length ? `hosted zone ${domain}. exists but is public: create a private zone for ${domain} or pass --zone-id` : `no private hosted zone named ${domain}. (create it, or pass --zone-id)`,
      { value: domain },
    );
  }
  if (privateZones.length > 1) {
    throw new InputError(`${privateZones.length} private hosted zones are named ${domain}.; pick one with --zone-id (${privateZones.map((z) => bareId(z.Id ?? '')).join(', ')})`, { value: domain });
  }
  return { id: bareId(privateZones[0]!.Id!), domain };
}

/**
 * States in which an instance counts as live. `pending` too: an instance whose own launch event is
 * handled before it reaches `running` would otherwise be left out until something else triggers a run.
 */
export const LIVE_STATES = ['pending', 'running'];

/** Live cluster instances (every page); `privateIps` narrows the read to those addresses. */
export async function listReservations(ec2: EC2Client, retry: RetryPolicy, privateIps?: string[]): Promise<Reservation[]> {
  const reservations: Reservation[] = [];
  let NextToken: string | undefined;
  do {
    const page = await withRetry(
      'DescribeInstances',
      () =>
        ec2.send(
          new DescribeInstancesCommand({
            Filters: [
              { Name: 'instance-state-name', Values: LIVE_STATES },
              { Name: 'tag-key', Values: CLUSTER_TAG_FILTER },
              ...(privateIps ? [{ Name: 'private-ip-address', Values: privateIps }] : []),
            ],
            MaxResults: 1000,
            NextToken,
          }),
        ),
      retry,
    );
    reservations.push(...(page.Reservations ?? []));
    NextToken = page.NextToken;
  } while (NextToken);
  return reservations;
}

/** The A records dns-sync owns, as the zone has them now (every page). */
export async function listManagedRecords(route53: Route53Client, zone: Zone, clusters: string[] | undefined, retry: RetryPolicy): Promise<Map<string, RecordSet>> {
  const records = new Map<string, RecordSet>();
  let start: { StartRecordName?: string; StartRecordType?: ResourceRecordSet['Type']; StartRecordIdentifier?: string } = {};
  for (;;) {
    const page = await withRetry(
      'ListResourceRecordSets',
      () => route53.send(new ListResourceRecordSetsCommand({ HostedZoneId: zone.id, MaxItems: 300, ...start })),
      retry,
    );
    for (const rr of page.ResourceRecordSets ?? []) {
      const name = stripDot(rr.Name ?? '');
      // Weighted/latency/alias records under these names were made by someone else: leave them.
      if (rr.Type !== 'A' || rr.SetIdentifier || rr.AliasTarget || !isManagedName(name, zone.domain, clusters)) continue;
      records.set(name.toLowerCase(), { name, ttl: rr.TTL ?? 0, values: (rr.ResourceRecords ?? []).map((r) => r.Value ?? '') });
    }
    if (!page.IsTruncated) return records;
    start = {
      ...(page.NextRecordName !== undefined && { StartRecordName: page.NextRecordName }),
      ...(page.NextRecordType !== undefined && { StartRecordType: page.NextRecordType }),
      ...(page.NextRecordIdentifier !== undefined && { StartRecordIdentifier: page.NextRecordIdentifier }),
    };
  }
}

function describeChange(c: Change): string {
  const n = c.record.values.length;
  return `${c.action} ${c.record.name} (${n} address${n === 1 ? '' : 'es'}, ttl ${c.record.ttl})`;
}

export async function syncDns(opts: SyncOptions): Promise<SyncResult> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const retry: RetryPolicy = { ...DEFAULT_RETRY, log, ...opts.retry };
  const ttl = opts.ttl ?? 30;
  const clusters = opts.clusters?.map((c) => c.toLowerCase());
  const zone = await findZone(opts.route53, { ...(opts.domain !== undefined && { domain: opts.domain }), ...(opts.zoneId !== undefined && { zoneId: opts.zoneId }) }, retry);

  const { members: all, skipped } = membersFromReservations(await listReservations(opts.ec2, retry));
  for (const s of skipped) log(`skip ${s.instanceId}: ${s.reason}`);
  const members = clusters ? all.filter((m) => clusters.includes(m.cluster)) : all;
  let desired = desiredRecords(members, zone.domain, ttl);
  for (const c of desired.capped) {
    log(`${c.name}: ${c.members} members, publishing the oldest ${c.kept} (Route53 allows ${ROUTE53_LIMITS.valuesPerRecord} values per record)`);
  }
  const current = await listManagedRecords(opts.route53, zone, clusters, retry);
  // Another run (or a newer event) may have published an instance this run's EC2 read is too old to
  // have seen: an address is only dropped once a fresh read confirms no live instance holds it.
  const unseen = addressesToDrop(desired.records, current);
  if (unseen.length) {
    const reads = [];
    // Bounded filters: a scale-in of a thousand minions is checked a few hundred addresses per request.
    for (let i = 0; i < unseen.length; i += 200) reads.push(...(await listReservations(opts.ec2, retry, unseen.slice(i, i + 200))));
    const { members: late } = membersFromReservations(reads);
    const kept = late.filter((m) => (clusters ? clusters.includes(m.cluster) : true) && !members.some((s) => s.instanceId === m.instanceId));
    for (const m of kept) log(`keep ${m.privateIp} (${m.instanceId}): live, though the first read of EC2 did not list it`);
    members.push(...kept);
    if (kept.length) desired = desiredRecords(members, zone.domain, ttl);
  }
  const changes = planChanges(desired.records, current);
  const batches = packBatches(changes);
  log(`zone ${zone.id} (${zone.domain}): ${members.length} members, ${changes.length} change${changes.length === 1 ? '' : 's'} in ${batches.length} batch${batches.length === 1 ? '' : 'es'}${opts.dryRun ? ' (dry run)' : ''}`);
  for (const [i, batch] of batches.entries()) {
    for (const c of batch) log(`  ${describeChange(c)}`);
    if (opts.dryRun) continue;
    await withRetry(
      'ChangeResourceRecordSets',
      () =>
        opts.route53.send(
          new ChangeResourceRecordSetsCommand({
            HostedZoneId: zone.id,
            ChangeBatch: {
              Comment: `kubeseed dns-sync batch ${i + 1}/${batches.length}`,
              Changes: batch.map((c) => ({
                Action: c.action,
                ResourceRecordSet: { Name: c.record.name, Type: 'A', TTL: c.record.ttl, ResourceRecords: c.record.values.map((Value) => ({ Value })) },
              })),
            },
          }),
        ),
      retry,
    );
  }
  return { zoneId: zone.id, domain: zone.domain, members: members.length, changes, batches: batches.length };
}
