// 6. dns-sync (Route53 bookkeeping): planning time and AWS API calls for 1000 and 5000 running
// instances, as clusters of 200 (3 masters + the rest minions), and 5000 in one cluster. Planning is the pure chain of
// scripts/cloud (members from the DescribeInstances pages, desired records, changes, batches); the
// calls are counted on syncDns itself against the EC2 and Route53 doubles of the tests
// (aws-sdk-client-mock, which enforce Route53's per-request limits): a first sync into an empty zone,
// then a second with nothing changed.
import { performance } from 'node:perf_hooks';
import type { Reservation } from '@aws-sdk/client-ec2';
import type { Bench } from './context.js';
import { formatSpread, spread, type Row } from './stats.js';
import { desiredRecords, packBatches, planChanges } from '../scripts/cloud/dns-plan.js';
import { syncDns } from '../scripts/cloud/route53-sync.js';
import { membersFromReservations } from '../scripts/cloud/members.js';
import { fleet, startFleetDouble } from '../test/fixtures/ec2-double.js';
import { startZoneDouble } from '../test/fixtures/route53-double.js';

const SHAPES = [
  { instances: 1000, perCluster: 200 },
  { instances: 5000, perCluster: 200 },
  { instances: 5000, perCluster: 5000 },
];

function instances(n: number, perCluster: number) {
  return Array.from({ length: n / perCluster }, (_, k) => [
    ...fleet(`c${k}m`, 3, { KubernetesCluster: `c${k}`, Role: 'master' }, k * perCluster),
    ...fleet(`c${k}n`, perCluster - 3, { KubernetesCluster: `c${k}`, Role: 'minion' }, k * perCluster + 3),
  ]).flat();
}

/** The mocked clients' calls per command name. */
function calls(...mocks: { calls(): { args: unknown[] }[] }[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of mocks)
    for (const c of m.calls()) {
      const name = (c.args[0] as { constructor: { name: string } }).constructor.name.replace(/Command$/, '');
      out[name] = (out[name] ?? 0) + 1;
    }
  return out;
}

const total = (c: Record<string, number>) => Object.values(c).reduce((a, b) => a + b, 0);
const describe = (c: Record<string, number>) => `${total(c)} (${Object.entries(c).map(([k, v]) => `${k} ${v}`).join(', ')})`;

export const dnsSync: Bench = {
  name: 'dns-sync',
  async run({ quick, log }) {
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
    const repeats = quick ? 5 : 20;
    const rows: Row[] = [];
    const data: Record<string, unknown> = {};
    for (const { instances: n, perCluster } of SHAPES) {
      const clusters = n / perCluster;
      const label = `${n} instances in ${clusters} cluster${clusters === 1 ? '' : 's'}`;
      const fleetNow = instances(n, perCluster);
      const reservations: Reservation[] = fleetNow.map((i) => ({ ReservationId: `r-${i.InstanceId}`, Instances: [i] }));
      const plan = (current: Map<string, { name: string; ttl: number; values: string[] }>) => {
        const desired = desiredRecords(membersFromReservations(reservations).members, 'k8s', 30);
        return { desired, batches: packBatches(planChanges(desired.records, current)) };
      };
      const firstMs: number[] = [];
      const steadyMs: number[] = [];
      const synced = plan(new Map()).desired.records; // also the warm-up
      for (let i = 0; i < repeats; i++) {
        let t = performance.now();
        plan(new Map());
        firstMs.push(performance.now() - t);
        t = performance.now();
        plan(synced);
        steadyMs.push(performance.now() - t);
      }

      const ec2 = startFleetDouble(fleetNow, 1000);
      const r53 = startZoneDouble({ id: 'ZK8S', name: 'k8s' });
      const opts = { ec2: ec2.client, route53: r53.client, log: () => {}, retry: { sleep: async () => {} } };
      let t = performance.now();
      const first = await syncDns(opts);
      const firstSyncMs = performance.now() - t;
      const firstCalls = calls(ec2.mock, r53.mock);
      ec2.mock.resetHistory();
      r53.mock.resetHistory();
      t = performance.now();
      const second = await syncDns(opts);
      const secondSyncMs = performance.now() - t;
      const secondCalls = calls(ec2.mock, r53.mock);
      ec2.mock.restore();
      r53.mock.restore();
      log(`dns-sync: ${label}: ${first.changes.length} changes in ${first.batches} batches, then ${second.changes.length}`);

      rows.push({ bench: 'dns-sync', what: `${label}: plan, empty zone`, result: formatSpread(spread(firstMs), 'ms'), goal: '', met: null });
      rows.push({ bench: 'dns-sync', what: `${label}: plan, zone already right`, result: formatSpread(spread(steadyMs), 'ms'), goal: '', met: null });
      rows.push({ bench: 'dns-sync', what: `${label}: API calls, first sync (${first.changes.length} records)`, result: describe(firstCalls), goal: '', met: null });
      rows.push({ bench: 'dns-sync', what: `${label}: API calls, nothing changed`, result: describe(secondCalls), goal: '', met: null });
      data[label] = { clusters, planEmptyMs: firstMs, planSteadyMs: steadyMs, firstSync: { ms: firstSyncMs, calls: firstCalls, changes: first.changes.length, batches: first.batches }, secondSync: { ms: secondSyncMs, calls: secondCalls, changes: second.changes.length } };
    }
    return {
      rows,
      data: { repeats, shapes: data },
      method: `pure planner chain timed ${repeats} times in-process; syncDns against test/fixtures EC2/Route53 doubles (aws-sdk-client-mock, DescribeInstances pages of 1000), calls counted per command`,
    };
  },
};
