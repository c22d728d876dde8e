// The pure planning step, no AWS at all: desired records, the diff, and batch packing.
import t from 'tap';
import { desiredRecords, isManagedName, packBatches, planChanges, ROUTE53_LIMITS, type Change, type Member, type RecordSet } from '../scripts/cloud/dns-plan.js';

const member = (n: number, role: 'master' | 'minion', cluster = 'demo'): Member => ({
  instanceId: `i-${String(n).padStart(5, '0')}`,
  cluster,
  role,
  privateIp: `10.0.${n >> 8}.${n & 255}`,
  launchTime: n * 1000,
});

t.test('one record per cluster and role, addresses sorted numerically', async (t) => {
  const { records, capped } = desiredRecords([member(10, 'minion'), member(9, 'minion'), member(1, 'master'), member(300, 'minion', 'other')], 'k8s', 30);
  t.same([...records.keys()].sort(), ['masters.demo.k8s', 'minions.demo.k8s', 'minions.other.k8s']);
  t.same(records.get('minions.demo.k8s'), { name: 'minions.demo.k8s', ttl: 30, values: ['10.0.0.9', '10.0.0.10'] });
  t.same(capped, []);
});

t.test('a role larger than one record publishes its oldest 400, so newcomers never churn it', async (t) => {
  const members = Array.from({ length: 1000 }, (_, i) => member(1000 - i, 'minion'));
  const { records, capped } = desiredRecords(members, 'k8s', 30);
  const values = records.get('minions.demo.k8s')!.values;
  t.equal(values.length, ROUTE53_LIMITS.valuesPerRecord);
  t.same(new Set(values), new Set(Array.from({ length: 400 }, (_, i) => member(i + 1, 'minion').privateIp)));
  t.same(capped, [{ name: 'minions.demo.k8s', members: 1000, kept: 400 }]);
  const grown = desiredRecords([...members, member(5000, 'minion')], 'k8s', 30);
  t.same(planChanges(grown.records, records), [], 'one more minion: nothing to change');
});

t.test('planChanges: UPSERT when values or TTL differ, DELETE for orphans, nothing when equal in any order', async (t) => {
  const rec = (name: string, values: string[], ttl = 30): RecordSet => ({ name, ttl, values });
  const desired = new Map([
    ['masters.demo.k8s', rec('masters.demo.k8s', ['10.0.0.1', '10.0.0.2'])],
    ['minions.demo.k8s', rec('minions.demo.k8s', ['10.0.0.3'])],
    ['minions.b.k8s', rec('minions.b.k8s', ['10.0.0.4'])],
  ]);
  const current = new Map([
    ['masters.demo.k8s', rec('masters.demo.k8s', ['10.0.0.2', '10.0.0.1'])],
    ['minions.demo.k8s', rec('minions.demo.k8s', ['10.0.0.3'], 300)],
    ['minions.gone.k8s', rec('minions.gone.k8s', ['10.0.0.9'])],
  ]);
  t.same(
    planChanges(desired, current).map((c) => `${c.action} ${c.record.name}`),
    ['UPSERT minions.demo.k8s', 'UPSERT minions.b.k8s', 'DELETE minions.gone.k8s'],
  );
  t.same(planChanges(desired, desired), []);
});

t.test('isManagedName: masters/minions of a cluster under the domain, nothing else', async (t) => {
  t.ok(isManagedName('masters.demo.k8s', 'k8s'));
  t.ok(isManagedName('MINIONS.Demo.K8s', 'k8s'));
  t.ok(isManagedName('minions.demo.corp.k8s', 'corp.k8s'));
  t.notOk(isManagedName('db.demo.k8s', 'k8s'));
  t.notOk(isManagedName('masters.k8s', 'k8s'));
  t.notOk(isManagedName('masters.a.b.k8s', 'k8s'));
  t.notOk(isManagedName('masters.demo.k8s', 'corp.k8s'));
  t.notOk(isManagedName('masters.demo.k8s', 'k8s', ['other']), 'outside the chosen clusters');
});

t.test('packBatches respects every per-request limit, counting UPSERT twice', async (t) => {
  const change = (action: Change['action'], name: string, n: number, len = 10): Change => ({
    action,
    record: { name, ttl: 30, values: Array.from({ length: n }, (_, i) => `${i}`.padStart(len, '1')) },
  });
  // 5 UPSERTs of 100 values weigh 200 each: exactly 1000, one batch.
  t.equal(packBatches(Array.from({ length: 5 }, (_, i) => change('UPSERT', `m${i}`, 100))).length, 1);
  // DELETEs count once: ten of 100 fit in one batch.
  t.equal(packBatches(Array.from({ length: 10 }, (_, i) => change('DELETE', `m${i}`, 100))).length, 1);
  // Two 400-value UPSERTs (800 each) never share a batch; the small ones fill the gaps.
  const mixed = [change('UPSERT', 'a', 400), change('UPSERT', 'b', 400), change('UPSERT', 'c', 3), change('DELETE', 'd', 150)];
  const batches = packBatches(mixed);
  t.equal(batches.length, 2);
  t.same(batches.flat().map((c) => c.record.name).sort(), ['a', 'b', 'c', 'd'], 'every change sent once');
  // Characters: 15-character values make 400 UPSERTed values weigh 12,000; 3 of them would be 36,000.
  const chars = packBatches([change('UPSERT', 'x', 400, 15), change('UPSERT', 'y', 400, 15), change('UPSERT', 'z', 400, 15)], {
    ...ROUTE53_LIMITS,
    recordsPerBatch: 10_000,
  });
  t.equal(chars.length, 2, 'the 32,000-character limit splits what the record limit would allow');
  // Change count: 150 one-value DELETEs need two batches of at most 100.
  const many = packBatches(Array.from({ length: 150 }, (_, i) => change('DELETE', `n${i}`, 1)));
  t.same(many.map((b) => b.length), [100, 50]);
  t.throws(() => packBatches([change('UPSERT', 'huge', 501)]), /exceeds Route53's per-request limits/);
});
