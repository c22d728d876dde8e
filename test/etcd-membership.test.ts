// Which etcd cluster a master belongs to (agent/etcd-membership.ts), decided alone: the rule that makes one
// cluster out of masters that look at DNS at different moments, checked as properties over many pictures.
import t from 'tap';
import fc from 'fast-check';
import { decideMembership, initialCluster, peerUrl, type EtcdMember } from '../agent/etcd-membership.js';
import { renderEtcdEnv, renderEtcdServersEnv } from '../agent/etcd-files.js';
import { envFileVars } from '../agent/contract/env-file.js';
import { holds } from './helpers/property.js';

const M = ['10.0.0.1', '10.0.0.2', '10.0.0.3'];
const base = { looks: [M, M], expected: 3, dataDir: false, existing: undefined };

t.test('three masters that saw the same list twice form one cluster with it', async (t) => {
  const decisions = M.map((self) => decideMembership({ ...base, self }));
  for (const d of decisions) t.match(d, { kind: 'new', members: M });
  const lists = new Set(decisions.map((d) => (d.kind === 'new' ? d.initialCluster : '')));
  t.same([...lists], ['10.0.0.1=https://10.0.0.1:2380,10.0.0.2=https://10.0.0.2:2380,10.0.0.3=https://10.0.0.3:2380'], 'the same --initial-cluster on each');
  t.match(decideMembership({ ...base, self: '10.0.0.2', looks: [M, [...M].reverse()] }), { kind: 'new' }, 'round-robin order is not a change');
});

t.test('anything short of two agreeing looks that list this master and MASTER_COUNT masters is a wait', async (t) => {
  const wait = (input: Partial<Parameters<typeof decideMembership>[0]>) => decideMembership({ ...base, self: '10.0.0.1', ...input });
  t.match(wait({ looks: [M] }), { kind: 'wait', reason: 'a second look at the masters record' });
  t.match(wait({ looks: [M.slice(0, 2), M] }), { kind: 'wait', reason: /changed between two looks/ });
  t.match(wait({ self: '10.0.0.9' }), { kind: 'wait', reason: /to list this master \(10\.0\.0\.9\)/ });
  t.match(wait({ looks: [M.slice(0, 2), M.slice(0, 2)] }), { kind: 'wait', reason: 'the masters record to list 3 masters (MASTER_COUNT=3); it lists 2: 10.0.0.1, 10.0.0.2' });
  t.match(wait({ looks: [[...M, '10.0.0.4'], [...M, '10.0.0.4']] }), { kind: 'wait', reason: /it lists 4/ }, 'more than expected is no cluster either');
});

t.test('a data dir means restart as the member it was, whatever DNS or the cluster says', async (t) => {
  t.same(decideMembership({ ...base, self: '10.0.0.2', looks: [], dataDir: true }), { kind: 'restart', name: '10.0.0.2' });
  const env = envFileVars(renderEtcdEnv({ cluster: 'demo', self: '10.0.0.2', membership: { kind: 'restart', name: '10.0.0.2' }, ports: { client: 2379, peer: 2380 } }), 'etcd.env');
  t.same(env, {
    ETCD_NAME: '10.0.0.2',
    ETCD_LISTEN_CLIENT_URLS: 'https://10.0.0.2:2379,https://127.0.0.1:2379',
    ETCD_ADVERTISE_CLIENT_URLS: 'https://10.0.0.2:2379',
    ETCD_LISTEN_PEER_URLS: 'https://10.0.0.2:2380',
    ETCD_INITIAL_ADVERTISE_PEER_URLS: 'https://10.0.0.2:2380',
  }, 'no initial-cluster settings: the data dir knows the cluster');
});

const member = (id: string, address: string, started = true): EtcdMember => ({
  ID: id,
  ...(started ? { name: address, clientURLs: [`https://${address}:2379`] } : {}),
  peerURLs: [peerUrl(address)],
});

t.test('a running cluster is joined, never formed again', async (t) => {
  const existing = M.map((a, i) => member(String(i + 1), a));
  const join = decideMembership({ ...base, self: '10.0.0.4', looks: [], existing });
  t.same(join, {
    kind: 'join',
    name: '10.0.0.4',
    add: true,
    initialCluster: initialCluster([...M, '10.0.0.4'].map((a) => ({ name: a, peerUrl: peerUrl(a) }))),
  });
  const env = envFileVars(renderEtcdEnv({ cluster: 'demo', self: '10.0.0.4', membership: join as never, ports: { client: 2379, peer: 2380 } }), 'etcd.env');
  t.equal(env.ETCD_INITIAL_CLUSTER_STATE, 'existing');
  t.equal(env.ETCD_INITIAL_CLUSTER_TOKEN, 'kubeseed-demo');

  const addedBefore = decideMembership({ ...base, self: '10.0.0.4', existing: [...existing, member('9', '10.0.0.4', false)] });
  t.match(addedBefore, { kind: 'join', add: false }, 'added by an earlier run that stopped before etcd started: not added twice');
  t.notOk('remove' in addedBefore);

  const lostDisk = decideMembership({ ...base, self: '10.0.0.2', existing });
  t.match(lostDisk, { kind: 'join', add: true, remove: '2' }, 'a member whose data dir is gone is replaced by a new one');
  t.equal(lostDisk.kind === 'join' && lostDisk.initialCluster.split(',').length, 3, 'the old member is not in the new list twice');
});

t.test('the API server is given every member, each once, in a stable order', async (t) => {
  const env = envFileVars(renderEtcdServersEnv(['https://10.0.0.2:2379', 'https://10.0.0.1:2379', 'https://10.0.0.2:2379']), 'etcd-servers.env');
  t.same(env, { ETCD_SERVERS: 'https://10.0.0.1:2379,https://10.0.0.2:2379' });
});

// The pictures masters can see while the record fills up: each look lists some of the cluster's masters
// (registration order is random, and DNS answers in any order).
const growth = fc
  .record({ expected: fc.integer({ min: 1, max: 5 }), extra: fc.integer({ min: 0, max: 2 }) })
  .chain(({ expected, extra }) => {
    const all = Array.from({ length: expected }, (_, i) => `10.0.0.${i + 1}`);
    const subset = fc.subarray(all).chain((s) => fc.shuffledSubarray(s, { minLength: s.length, maxLength: s.length }));
    return fc.record({
      expected: fc.constant(expected),
      all: fc.constant(all),
      masters: fc.array(fc.record({ self: fc.constantFrom(...all), looks: fc.array(subset, { minLength: 0, maxLength: 3 }) }), { minLength: 1, maxLength: 6 }),
      extra: fc.constant(extra),
    });
  });

t.test('properties', async (t) => {
  await holds(
    t,
    'while the record lists only the cluster\'s masters, every master that forms, forms with the same full list',
    fc.property(growth, ({ expected, all, masters }) => {
      const formed = masters
        .map((m) => decideMembership({ self: m.self, looks: m.looks, expected, dataDir: false, existing: undefined }))
        .filter((d) => d.kind === 'new');
      return formed.every((d) => d.kind === 'new' && JSON.stringify(d.members) === JSON.stringify(all));
    }),
  );
  const address = fc.integer({ min: 1, max: 9 }).map((n) => `10.0.0.${n}`);
  await holds(
    t,
    'forming needs two looks with the same masters, this one among them, exactly MASTER_COUNT of them',
    fc.property(fc.array(fc.array(address, { maxLength: 6 }), { maxLength: 3 }), address, fc.integer({ min: 1, max: 5 }), (looks, self, expected) => {
      const d = decideMembership({ self, looks, expected, dataDir: false, existing: undefined });
      if (d.kind !== 'new') return d.kind === 'wait';
      const [x = [], y = []] = looks.slice(-2).map((l) => [...new Set(l)].sort());
      return looks.length >= 2 && JSON.stringify(x) === JSON.stringify(y) && JSON.stringify(d.members) === JSON.stringify(x) && d.members.includes(self) && d.members.length === expected;
    }),
  );
  await holds(
    t,
    'a master never forms when a cluster answered, and always restarts with a data dir',
    fc.property(growth, fc.boolean(), ({ expected, all, masters }, dataDir) => {
      const existing = all.slice(0, 1).map((a) => member('1', a));
      return masters.every((m) => {
        const d = decideMembership({ self: m.self, looks: m.looks, expected, dataDir, existing });
        return dataDir ? d.kind === 'restart' : d.kind === 'join';
      });
    }),
  );
});
