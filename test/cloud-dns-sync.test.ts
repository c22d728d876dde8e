// dns-sync against the EC2 and Route53 doubles (aws-sdk-client-mock; AWS cannot be reached here),
// and the CLI as a child process for what an operator sees.
import t from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as net from 'node:net';
import * as path from 'node:path';
import type { DescribeInstancesCommandOutput, EC2Client } from '@aws-sdk/client-ec2';
import { ChangeResourceRecordSetsCommand, ListResourceRecordSetsCommand } from '@aws-sdk/client-route-53';
import { syncDns, type SyncOptions } from '../scripts/cloud/route53-sync.js';
import { repeatUntilStopped } from '../scripts/cloud/repeat-until-stopped.js';
import { syncForEvent } from '../scripts/cloud/dns-sync-lambda.js';
import { InputError } from '../agent/errors.js';
import { fleet, instance, startFleetDouble } from './fixtures/ec2-double.js';
import { awsError, startZoneDouble } from './fixtures/route53-double.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
const run = promisify(execFile);

function setup(instances: ReturnType<typeof fleet>, pageSize = 200, zone: Parameters<typeof startZoneDouble>[0] = { id: 'ZK8S', name: 'k8s' }) {
  const ec2 = startFleetDouble(instances, pageSize);
  const r53 = startZoneDouble(zone);
  const lines: string[] = [];
  const sleeps: number[] = [];
  const sync = (extra: Partial<SyncOptions> = {}) =>
    syncDns({
      ec2: ec2.client,
      route53: r53.client,
      log: (l) => lines.push(l),
      retry: { sleep: async (ms) => void sleeps.push(ms), random: () => 1 },
      ...extra,
    });
  const record = (name: string) => r53.records.get(`${name}.|A|`);
  return { ec2, r53, lines, sleeps, sync, record };
}

t.test('1500 running instances over 8 pages: the minimum batches, then nothing on a second run', async (t) => {
  // Five clusters of 3 masters + 297 minions. An UPSERT of 297 values counts 594 of the 1,000 allowed
  // per request, so no two minions records share a batch: 5 batches is the minimum, masters ride along.
  const instances = ['a', 'b', 'c', 'd', 'e'].flatMap((c, k) => [
    ...fleet(`${c}m`, 3, { KubernetesCluster: c, Role: 'master' }, k * 1000),
    ...fleet(`${c}n`, 297, { KubernetesCluster: c, Role: 'minion' }, k * 1000 + 3),
  ]);
  t.equal(instances.length, 1500);
  const { ec2, r53, sync, record } = setup(instances, 200);
  const first = await sync();
  t.equal(ec2.pagesServed, 8, 'every page of DescribeInstances was read');
  t.equal(first.members, 1500);
  t.equal(r53.batches.length, 5);
  t.equal(r53.mock.commandCalls(ChangeResourceRecordSetsCommand).length, 5);
  t.same(r53.batches.flat().map((c) => c.Action), Array(10).fill('UPSERT'));
  t.equal(record('minions.c.k8s')?.ResourceRecords?.length, 297);
  t.same(record('masters.a.k8s')?.ResourceRecords, [{ Value: '10.0.0.1' }, { Value: '10.0.0.2' }, { Value: '10.0.0.3' }]);
  t.equal(record('masters.a.k8s')?.TTL, 30);

  const second = await sync();
  t.same(second.changes, []);
  t.equal(r53.mock.commandCalls(ChangeResourceRecordSetsCommand).length, 5, 'a second run with the same membership sends nothing');

  // One minion of cluster b goes away: exactly one UPSERT, in one batch.
  ec2.instances = ec2.instances.filter((i) => i.InstanceId !== 'i-bn001100');
  await sync();
  t.equal(r53.batches.length, 6);
  t.same(r53.batches[5]!.map((c) => `${c.Action} ${c.ResourceRecordSet?.Name}`), ['UPSERT minions.b.k8s']);
  t.equal(record('minions.b.k8s')?.ResourceRecords?.length, 296);
});

t.test('one cluster of 1500: the record keeps the oldest 400 and one batch does it all', async (t) => {
  const instances = [...fleet('m', 3, { KubernetesCluster: 'big', Role: 'master' }), ...fleet('n', 1497, { KubernetesCluster: 'big', Role: 'minion' }, 3)];
  const { r53, sync, record, lines } = setup(instances, 1000);
  await sync();
  t.equal(r53.batches.length, 1);
  const values = record('minions.big.k8s')!.ResourceRecords!.map((r) => r.Value);
  t.equal(values.length, 400);
  t.ok(values.includes('10.0.0.4') && values.includes('10.0.1.147') && !values.includes('10.0.1.148'), 'the 400 launched first');
  t.ok(lines.includes('minions.big.k8s: 1497 members, publishing the oldest 400 (Route53 allows 400 values per record)'));
  await sync();
  t.equal(r53.batches.length, 1, 'no churn on the next run');
});

t.test('tags with odd case and spaces count; unusable instances are skipped and logged', async (t) => {
  const instances = [
    instance('i-1', { ' KubernetesCluster ': ' Demo ', role: 'Minion ' }, { ip: '10.0.0.1' }),
    instance('i-2', { kubernetescluster: 'demo', ' Role ': 'MASTER' }, { ip: '10.0.0.2' }),
    instance('i-3', { KubernetesCluster: 'demo', Role: 'minion' }, { ip: null }),
    instance('i-4', { KubernetesCluster: 'demo', Role: 'etcd' }, { ip: '10.0.0.4' }),
    instance('i-5', { KubernetesCluster: 'Not_A_Label', Role: 'minion' }, { ip: '10.0.0.5' }),
    instance('i-6', { Name: 'unrelated' }, { ip: '10.0.0.6' }),
    instance('i-7', { KubernetesCluster: 'demo', Role: 'minion' }, { ip: '10.0.0.7', state: 'stopped' }),
  ];
  const { sync, record, lines } = setup(instances);
  const result = await sync();
  t.equal(result.members, 2);
  t.same(record('minions.demo.k8s')?.ResourceRecords, [{ Value: '10.0.0.1' }]);
  t.same(record('masters.demo.k8s')?.ResourceRecords, [{ Value: '10.0.0.2' }]);
  t.ok(lines.includes('skip i-3: no private IP yet'));
  t.ok(lines.includes('skip i-4: Role tag "etcd" is not master or minion'));
  t.ok(lines.includes('skip i-5: KubernetesCluster tag "not_a_label" is not a DNS label'));
  t.notOk(lines.some((l) => /i-6|i-7/.test(l)), 'instances of no cluster, or not live, are not ours to mention');
});

t.test('drift is repaired: stale and foreign-looking records handled, others left alone', async (t) => {
  const { r53, sync, record } = setup(fleet('n', 2, { KubernetesCluster: 'demo', Role: 'minion' }), 200, {
    id: 'ZK8S',
    name: 'k8s',
    records: [
      { Name: 'minions.demo.k8s.', Type: 'A', TTL: 30, ResourceRecords: [{ Value: '10.9.9.9' }] },
      { Name: 'masters.gone.k8s.', Type: 'A', TTL: 30, ResourceRecords: [{ Value: '10.8.8.8' }] },
      { Name: 'masters.weighted.k8s.', Type: 'A', TTL: 30, SetIdentifier: 'blue', Weight: 1, ResourceRecords: [{ Value: '10.7.7.7' }] },
      { Name: 'db.demo.k8s.', Type: 'A', TTL: 30, ResourceRecords: [{ Value: '10.6.6.6' }] },
    ],
  });
  await sync();
  t.same(record('minions.demo.k8s')?.ResourceRecords, [{ Value: '10.0.0.1' }, { Value: '10.0.0.2' }]);
  t.notOk(record('masters.gone.k8s'), 'a cluster with no instances left loses its record');
  t.ok(r53.records.get('masters.weighted.k8s.|A|blue'), 'weighted records are someone else’s');
  t.ok(record('db.demo.k8s'));
  t.ok(r53.records.get('k8s.|SOA|'));
  // --cluster limits the scope: another cluster's stale record stays.
  r53.records.set('masters.other.k8s.|A|', { Name: 'masters.other.k8s.', Type: 'A', TTL: 30, ResourceRecords: [{ Value: '10.5.5.5' }] });
  const scoped = await sync({ clusters: ['demo'] });
  t.same(scoped.changes, []);
  t.ok(record('masters.other.k8s'));
});

t.test('the zone is read over every page of ListResourceRecordSets', async (t) => {
  const filler = Array.from({ length: 700 }, (_, i) => ({ Name: `host${String(i).padStart(4, '0')}.k8s.`, Type: 'A' as const, TTL: 60, ResourceRecords: [{ Value: '10.1.1.1' }] }));
  const { r53, sync } = setup(fleet('n', 2, { KubernetesCluster: 'zz', Role: 'minion' }), 200, {
    id: 'ZK8S',
    name: 'k8s',
    records: [...filler, { Name: 'minions.zz.k8s.', Type: 'A', TTL: 30, ResourceRecords: [{ Value: '10.0.0.1' }, { Value: '10.0.0.2' }] }],
  });
  const result = await sync();
  t.ok(r53.mock.commandCalls(ListResourceRecordSetsCommand).length >= 3);
  t.same(result.changes, [], 'the record on the last page was found and is already right');
});

t.test('throttled calls are retried with exponential backoff; other errors are not', async (t) => {
  const { r53, sync, sleeps, lines, record } = setup(fleet('n', 3, { KubernetesCluster: 'demo', Role: 'minion' }));
  let throttles = 0;
  // Two throttles on the first Route53 write, one PriorRequestNotComplete, then success.
  const errors = [awsError('Throttling', 'Rate exceeded'), awsError('Throttling', 'Rate exceeded'), awsError('PriorRequestNotComplete', 'still processing')];
  const original = r53.client.send.bind(r53.client);
  r53.client.send = (async (command: unknown, ...rest: unknown[]) => {
    if (command instanceof ChangeResourceRecordSetsCommand && errors.length) {
      throttles++;
      throw errors.shift();
    }
    return (original as (...a: unknown[]) => unknown)(command, ...rest);
  }) as typeof r53.client.send;
  await sync();
  t.equal(throttles, 3);
  t.same(sleeps, [200, 400, 800], 'backoff doubles (jitter pinned at its maximum for the test)');
  t.equal(lines.filter((l) => l.startsWith('throttled: ChangeResourceRecordSets')).length, 3);
  t.equal(record('minions.demo.k8s')?.ResourceRecords?.length, 3, 'and the change landed');
});

t.test('EC2 throttling is retried; access denied is not', async (t) => {
  const { ec2, sync, sleeps } = setup(fleet('n', 1, { KubernetesCluster: 'demo', Role: 'minion' }));
  const send = ec2.client.send.bind(ec2.client);
  let calls = 0;
  let fail: Error | undefined = awsError('RequestLimitExceeded', 'Request limit exceeded.', 503);
  ec2.client.send = (async (command: unknown, ...rest: unknown[]) => {
    calls++;
    if (fail) {
      const e = fail;
      fail = undefined;
      throw e;
    }
    return (send as (...a: unknown[]) => unknown)(command, ...rest);
  }) as typeof ec2.client.send;
  const ok = await sync();
  t.equal(ok.members, 1);
  t.equal(calls, 2);
  t.same(sleeps, [200]);

  // A 5xx is the service's failure, not ours: asked again.
  calls = 0;
  fail = Object.assign(awsError('InternalError', 'An internal error has occurred', 500), { $fault: 'server' });
  t.equal((await sync()).members, 1);
  t.equal(calls, 2);

  calls = 0;
  fail = awsError('UnauthorizedOperation', 'You are not authorized to perform this operation.', 403);
  const err = await sync().catch((e) => e);
  t.equal(err.name, 'UnauthorizedOperation');
  t.equal(calls, 1, 'not retried');
});

t.test('throttling that never ends gives up after the last attempt', async (t) => {
  const { r53, sync, sleeps } = setup([]);
  r53.mock.on(ListResourceRecordSetsCommand).rejects(awsError('Throttling', 'Rate exceeded'));
  const err = await sync({ retry: { attempts: 4, sleep: async (ms) => void sleeps.push(ms), random: () => 0.5 } }).catch((e) => e);
  t.equal(err.name, 'Throttling');
  t.same(sleeps, [100, 200, 400]);
});

t.test('a zone that does not exist is a clear error, and nothing is written', async (t) => {
  const { r53, sync } = setup(fleet('n', 1, { KubernetesCluster: 'demo', Role: 'minion' }), 200, {
    id: 'ZPUB',
    name: 'k8s',
    private: false,
    otherZones: [{ Id: '/hostedzone/ZOTHER', Name: 'k9s.', private: true }],
  });
  const noPrivate = await sync().catch((e) => e);
  t.type(noPrivate, InputError);
  t.equal(noPrivate.message, 'hosted zone k8s. exists but is public: create a private zone for k8s or pass --zone-id');
  const missing = await sync({ domain: 'corp.k8s' }).catch((e) => e);
  t.equal(missing.message, 'no private hosted zone named corp.k8s. (create it, or pass --zone-id)');
  const badId = await sync({ zoneId: 'ZNOPE' }).catch((e) => e);
  t.type(badId, InputError);
  t.equal(badId.message, 'hosted zone ZNOPE does not exist');
  t.equal(r53.batches.length, 0);
});

t.test('--dry-run plans and prints, sends nothing', async (t) => {
  const { r53, sync, lines } = setup(fleet('n', 2, { KubernetesCluster: 'demo', Role: 'minion' }));
  const result = await sync({ dryRun: true });
  t.equal(result.changes.length, 1);
  t.equal(r53.mock.commandCalls(ChangeResourceRecordSetsCommand).length, 0);
  t.ok(lines.includes('zone ZK8S (k8s): 2 members, 1 change in 1 batch (dry run)'));
  t.ok(lines.includes('  UPSERT minions.demo.k8s (2 addresses, ttl 30)'));
});

t.test('two runs interleaved: the one whose EC2 read is older never drops an instance the other published', async (t) => {
  const x = instance('i-x', { KubernetesCluster: 'demo', Role: 'minion' }, { ip: '10.0.0.1' });
  const y = instance('i-y', { KubernetesCluster: 'demo', Role: 'minion' }, { ip: '10.0.0.2', launched: 1000 });
  const { ec2, r53, lines, sync, record } = setup([x, y]);
  // Run A's first read of EC2 was taken before i-y launched; while its answer is on the way, run B (which
  // sees both) completes. A then reads the zone, plans and writes.
  let first = true;
  const staleEc2 = {
    send: async (command: Parameters<typeof ec2.client.send>[0]) => {
      const answer = (await ec2.client.send(command)) as DescribeInstancesCommandOutput;
      if (!first) return answer;
      first = false;
      await sync();
      t.same(record('minions.demo.k8s')?.ResourceRecords, [{ Value: '10.0.0.1' }, { Value: '10.0.0.2' }], 'run B published both');
      return { ...answer, Reservations: answer.Reservations?.filter((r) => r.Instances?.[0]?.InstanceId !== 'i-y') };
    },
  } as unknown as EC2Client;
  await sync({ ec2: staleEc2 });
  t.same(record('minions.demo.k8s')?.ResourceRecords, [{ Value: '10.0.0.1' }, { Value: '10.0.0.2' }], 'run A kept i-y');
  t.ok(lines.includes('keep 10.0.0.2 (i-y): live, though the first read of EC2 did not list it'));

  ec2.instances = [x];
  await sync();
  t.same(record('minions.demo.k8s')?.ResourceRecords, [{ Value: '10.0.0.1' }], 'once i-y is really gone, the next pass drops it');
});

t.test('an instance still pending when its launch event is handled is published', async (t) => {
  const { sync, record } = setup([
    instance('i-a', { KubernetesCluster: 'demo', Role: 'minion' }, { ip: '10.0.0.1' }),
    instance('i-b', { KubernetesCluster: 'demo', Role: 'minion' }, { ip: '10.0.0.2', state: 'pending' }),
    instance('i-c', { KubernetesCluster: 'demo', Role: 'minion' }, { ip: '10.0.0.3', state: 'shutting-down' }),
  ]);
  await sync();
  t.same(record('minions.demo.k8s')?.ResourceRecords, [{ Value: '10.0.0.1' }, { Value: '10.0.0.2' }]);
});

t.test('the Lambda handler syncs the whole zone on any state-change event', async (t) => {
  const { ec2, r53, record } = setup(fleet('n', 2, { KubernetesCluster: 'demo', Role: 'minion' }));
  const logged: string[] = [];
  const log = console.log;
  console.log = (line: string) => void logged.push(line);
  t.teardown(() => {
    console.log = log;
  });
  const result = await syncForEvent(
    { 'detail-type': 'EC2 Instance State-change Notification', detail: { 'instance-id': 'i-n000002', state: 'running' } },
    { ec2: ec2.client, route53: r53.client },
    { DNS_DOMAIN: 'k8s', RECORD_TTL: '60' },
  );
  console.log = log;
  t.equal(result.batches, 1);
  t.equal(record('minions.demo.k8s')?.TTL, 60);
  t.equal(logged[0], 'event EC2 Instance State-change Notification instance=i-n000002 state=running');
});

t.test('CLI: missing region or credentials is one plain line, no stack trace', async (t) => {
  const home = await mkdtemp(path.join(os.tmpdir(), 'kubeseed-noaws-'));
  t.teardown(() => rm(home, { recursive: true, force: true }));
  const tsx = path.resolve('node_modules/.bin/tsx');
  // A clean environment: no AWS variables, an empty HOME (no ~/.aws), no instance metadata.
  const env = { PATH: process.env.PATH!, HOME: home, AWS_EC2_METADATA_DISABLED: 'true', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };
  for (const script of ['scripts/dns-sync.ts', 'scripts/launch.ts']) {
    const args = script.endsWith('launch.ts') ? ['--role', 'minion', '--cluster', 'demo', '--image', 'ami-12345678'] : [];
    const noRegion = await run(tsx, [script, ...args], { env }).catch((e) => e);
    t.equal(noRegion.code, 1, `${script}: exit 1`);
    t.equal(noRegion.stderr, `${path.basename(script, '.ts')}: no AWS region: set AWS_REGION (or a region in your AWS profile) or pass --region\n`);
    const noCreds = await run(tsx, [script, ...args], { env: { ...env, AWS_REGION: 'eu-west-1' } }).catch((e) => e);
    t.equal(noCreds.code, 1);
    t.match(noCreds.stderr, /^(dns-sync|launch): no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID\/AWS_SECRET_ACCESS_KEY, or run with an instance role \(.+\)\n$/);
    t.notMatch(noCreds.stderr, /\n\s+at /, 'no stack trace');
  }
  // Credentials, but AWS unreachable (a port nobody listens on): a plain line, not retried forever.
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as net.AddressInfo).port;
  await new Promise((r) => closed.close(r));
  const unreachable = await run(tsx, ['scripts/dns-sync.ts'], {
    env: { ...env, AWS_REGION: 'eu-west-1', AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE', AWS_SECRET_ACCESS_KEY: 'x', AWS_ENDPOINT_URL: `http://127.0.0.1:${port}` },
  }).catch((e) => e);
  t.equal(unreachable.code, 1);
  t.equal(unreachable.stderr, `dns-sync: cannot reach AWS: connect ECONNREFUSED 127.0.0.1:${port}\n`);
  const usage = await run(tsx, ['scripts/dns-sync.ts', '--watch', 'soon'], { env }).catch((e) => e);
  t.equal(usage.code, 2);
  t.match(usage.stderr, /^dns-sync: --watch must be a whole number of seconds of at least 1, got "soon"\nusage: /);
});

t.test('--watch: keeps going after an AWS error, stops on bad input or when aborted', async (t) => {
  const { sync, r53, ec2 } = setup(fleet('n', 1, { KubernetesCluster: 'demo', Role: 'minion' }));
  const stop = new AbortController();
  const errors: string[] = [];
  let passes = 0;
  await repeatUntilStopped(
    async () => {
      passes++;
      if (passes === 1) throw awsError('ServiceUnavailable', 'Service Unavailable', 503);
      if (passes === 2) ec2.instances.push(...fleet('x', 1, { KubernetesCluster: 'demo', Role: 'minion' }, 50));
      await sync();
      if (passes === 3) stop.abort();
    },
    1,
    stop.signal,
    (l) => errors.push(l),
  );
  t.equal(passes, 3);
  t.same(errors, ['error: AWS ServiceUnavailable: Service Unavailable (next pass in 0 s)']);
  t.equal(r53.batches.length, 1, 'pass 2 wrote the record, pass 3 found it right');

  const bad = await repeatUntilStopped(() => sync({ domain: 'nope.k8s' }), 1, new AbortController().signal, () => undefined).catch((e) => e);
  t.type(bad, InputError, 'a zone that does not exist ends the watch');
});
