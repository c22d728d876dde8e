// Weave IPAM's start mode (agent/weave-consensus.ts): the masters form the ring with consensus=MASTER_COUNT,
// every minion joins as an observer, the set never changes once chosen, and DNS that later disagrees is
// reported, never obeyed.
import t from 'tap';
import fc from 'fast-check';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { cli } from '../agent/cli.js';
import { createHost } from '../agent/host.js';
import { InputError } from '../agent/errors.js';
import { decidePeers } from '../agent/peers.js';
import { initialStatus, writeStatus } from '../agent/status.js';
import {
  consensusStatus,
  decideConsensus,
  masterCountOf,
  parseConsensusSet,
  parseMasterCount,
  type ConsensusDecision,
  type ConsensusInput,
  type ConsensusSet,
} from '../agent/weave-consensus.js';
import { holds } from './helpers/property.js';

const FILE = '/etc/sysconfig/kubernetes-minions';
const RECORD = 'masters.demo.k8s';
const MASTERS = ['10.0.0.1', '10.0.0.2', '10.0.0.3'];

const input = (over: Partial<ConsensusInput> = {}): ConsensusInput => ({
  role: 'minion',
  masterCount: 3,
  file: FILE,
  mastersRecord: RECORD,
  local: new Set(['10.1.0.9', '127.0.0.1']),
  masters: MASTERS,
  minions: [],
  ...over,
});

/** The node's next decision with what it chose before fed back, as the weave phase persists it. */
const again = (before: ConsensusDecision, over: Partial<ConsensusInput>) => decideConsensus(input({ chosen: before.set, ...over }));

/** Minion number i of a large cluster: 10.1.0.0/16 onwards, one address each. */
const minionAddress = (i: number) => `10.1.${Math.floor(i / 250)}.${(i % 250) + 1}`;

t.test('masters start with consensus=MASTER_COUNT, minions as observers, and neither waits for a record to list it', async (t) => {
  const master = decideConsensus(input({ role: 'master', file: '/etc/sysconfig/kubernetes-masters', local: new Set(['10.0.0.2']) }));
  t.equal(master.mode, 'consensus');
  t.equal(master.ipallocInit, 'consensus=3');
  t.same(master.set, { size: 3, members: MASTERS });
  t.same(master.peers, ['10.0.0.1', '10.0.0.3'], 'the other masters are its peers, never itself');
  t.match(master.reason, /consensus set is the 3 masters \(10\.0\.0\.1, 10\.0\.0\.2, 10\.0\.0\.3\).*a majority \(2 of 3\) forms the ring once/);
  t.equal(master.contradiction, null);

  const minion = decideConsensus(input({ minions: decidePeers(['10.1.0.8', '10.1.0.9', '10.0.0.3', '10.1.0.7', '10.1.0.7', '127.0.0.5'], new Set(['10.1.0.9'])).peers }));
  t.equal(minion.mode, 'observer');
  t.equal(minion.ipallocInit, 'observer');
  t.same(minion.set, { size: 3, members: MASTERS }, 'the same set as the master computed');
  t.same(minion.peers, [...MASTERS, '10.1.0.7', '10.1.0.8'], 'the consensus set, then the other minions DNS lists, each once');
  t.match(minion.reason, /observer of the consensus set, the 3 masters.*how many minions DNS lists never matters/);

  const lone = decideConsensus(input({ role: 'master', masterCount: 1, masters: undefined, local: new Set(['10.0.0.1']) }));
  t.equal(lone.ipallocInit, 'consensus=1', 'a master with DNS down still decides: N comes from the role file');
  t.same(lone.set, { size: 1, members: [] });
  t.match(lone.reason, /the master \(none, 0 of them known\)/);
});

t.test('10,000 minions, a record capped at 400 values: minion 9,000 joins as an observer of the same set', async (t) => {
  const CAP = 400;
  const TOTAL = 10_000;
  // The record as a DNS server that cannot hold everyone serves it: the first 400 registered minions.
  const registered: string[] = [];
  const sets = new Map<string, number>();
  let observers = 0;
  let nine: ConsensusDecision | undefined;
  let view = { answer: [] as string[], peers: [] as string[] };
  for (let i = 0; i < TOTAL; i++) {
    const self = minionAddress(i);
    registered.push(self);
    // What the weave phase passes in: the record's other minions (peers.ts), worked out once per distinct answer.
    if (registered.length <= CAP) view = { answer: registered.slice(), peers: decidePeers(registered, new Set()).peers };
    const d = decideConsensus(input({ local: new Set([self]), minions: view.peers.filter((a) => a !== self) }));
    if (d.mode === 'observer' && d.ipallocInit === 'observer') observers++;
    const key = JSON.stringify(d.set);
    sets.set(key, (sets.get(key) ?? 0) + 1);
    if (i === 9_000) {
      nine = d;
      // The scenario bites: under the old rule this node waited for the record to list it, forever.
      t.same(decidePeers(view.answer, new Set([self])).self, [], 'the capped record does not list minion 9,000');
      t.equal(view.answer.length, CAP);
    }
  }
  t.equal(observers, TOTAL, 'every minion is an observer');
  t.same([...sets.keys()], [JSON.stringify({ size: 3, members: MASTERS })], 'every minion computed the one consensus set');
  t.ok(nine, 'minion 9,000 decided');
  t.equal(nine!.ipallocInit, 'observer');
  t.same(nine!.peers.slice(0, 3), MASTERS, 'its peers start with the consensus set');
  t.equal(nine!.peers.length, 3 + CAP, 'plus whatever the record lists');
});

t.test('the set never changes once chosen, whatever DNS and the role file say afterwards', async (t) => {
  const POOL = [...MASTERS, '10.0.0.4', '10.0.0.9', '10.0.0.2', '0.0.0.0', '224.0.0.1', 'fe80::1'];
  const view = fc.option(fc.subarray(POOL), { nil: undefined, freq: 4 });
  const step = fc.record({ masters: view, masterCount: fc.integer({ min: 1, max: 5 }) });
  await holds(
    t,
    'size and mode fixed, members only added, at most size of them',
    fc.property(fc.constantFrom('master', 'minion') as fc.Arbitrary<'master' | 'minion'>, step, fc.array(step, { maxLength: 12 }), (role, first, later) => {
      let d: ConsensusDecision;
      try {
        d = decideConsensus(input({ role, ...first }));
      } catch (err) {
        // Only the unsafe first choice is refused: a master seeing more masters than MASTER_COUNT.
        return err instanceof InputError && role === 'master' && (first.masters?.length ?? 0) > first.masterCount;
      }
      const chosen = d;
      for (const s of later) {
        const next = again(d, { role, ...s });
        if (next.set.size !== chosen.set.size || next.mode !== chosen.mode || next.ipallocInit !== chosen.ipallocInit) return false;
        if (!d.set.members.every((a) => next.set.members.includes(a)) || next.set.members.length > next.set.size) return false;
        if (!next.set.members.every((a) => next.peers.includes(a) || input().local.has(a))) return false;
        d = next;
      }
      return true;
    }),
  );
});

t.test('nodes booting in any order while the masters register agree on one set, and only masters form the ring', async (t) => {
  const node = fc.record({ role: fc.constantFrom('master', 'minion') as fc.Arbitrary<'master' | 'minion'>, boot: fc.nat(6) });
  await holds(
    t,
    'one N for every elector, electors are masters only, every set ends as the masters',
    fc.property(fc.integer({ min: 1, max: 5 }), fc.array(fc.nat(6), { minLength: 5, maxLength: 5 }), fc.array(node, { maxLength: 12 }), (n, joins, nodes) => {
      const masters = Array.from({ length: n }, (_, i) => `10.0.0.${i + 1}`);
      // Each master shows up in the record at its own time; nodes boot at theirs, then follow the record.
      const recordAt = (time: number) => masters.filter((_, i) => joins[i]! <= time);
      const finals = nodes.map(({ role, boot }, k) => {
        const local = new Set([role === 'master' ? masters[k % n]! : `10.1.0.${k + 1}`]);
        let d = decideConsensus(input({ role, masterCount: n, local, masters: recordAt(boot) }));
        for (let time = boot + 1; time <= 7; time++) d = again(d, { role, masterCount: n, local, masters: recordAt(time) });
        return d;
      });
      const electors = finals.filter((d) => d.mode === 'consensus');
      return (
        electors.every((d) => d.ipallocInit === `consensus=${n}`) &&
        finals.every((d, k) => (d.mode === 'consensus') === (nodes[k]!.role === 'master')) &&
        finals.every((d) => JSON.stringify(d.set) === JSON.stringify({ size: n, members: masters }) && d.contradiction === null)
      );
    }),
  );
});

t.test('the minions record (however large, capped, or full of machines that never booted) never moves the decision', async (t) => {
  const minions = fc.uniqueArray(fc.integer({ min: 0, max: 9_999 }), { maxLength: 50 }).map((ns) => decidePeers(ns.map(minionAddress), new Set()).peers);
  await holds(
    t,
    'mode, --ipalloc-init and the set are the same for any two minion views',
    fc.property(fc.constantFrom('master', 'minion') as fc.Arbitrary<'master' | 'minion'>, fc.integer({ min: 3, max: 5 }), minions, minions, (role, n, a, b) => {
      const [x, y] = [a, b].map((view) => decideConsensus(input({ role, masterCount: n, minions: view })));
      return x!.mode === y!.mode && x!.ipallocInit === y!.ipallocInit && JSON.stringify(x!.set) === JSON.stringify(y!.set);
    }),
  );
});

t.test('DNS that later contradicts the set: the set is kept and agent status says what DNS says against it', async (t) => {
  const first = decideConsensus(input());

  const gone = again(first, { masters: ['10.0.0.1', '10.0.0.3'] });
  t.same(gone.set, first.set, 'a member no longer listed stays a member');
  t.equal(gone.ipallocInit, 'observer');
  t.ok(gone.peers.includes('10.0.0.2'), 'and a peer: Weave keeps trying it (a fixed peer may be offline)');
  t.equal(
    gone.contradiction,
    "masters.demo.k8s no longer lists member 10.0.0.2 (DNS lists 10.0.0.1, 10.0.0.3); kept the consensus set, the 3 masters (10.0.0.1, 10.0.0.2, 10.0.0.3): Weave's ring forms once, and starting it again on some nodes would split the overlay",
  );

  const other = again(first, { masters: ['10.0.0.7', '10.0.0.8', '10.0.0.9'] });
  t.same(other.set, first.set, 'a wholly different set in DNS changes nothing chosen');
  t.match(other.contradiction, /no longer lists members 10\.0\.0\.1, 10\.0\.0\.2, 10\.0\.0\.3; masters\.demo\.k8s lists 10\.0\.0\.7, 10\.0\.0\.8, 10\.0\.0\.9, beyond the 3 of the set \(DNS lists 10\.0\.0\.7, 10\.0\.0\.8, 10\.0\.0\.9\)/);
  t.same(other.peers, ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.7', '10.0.0.8', '10.0.0.9'], 'the set and what DNS lists are both peers');

  const empty = again(first, { masters: [] });
  t.match(empty.contradiction, /no longer lists members 10\.0\.0\.1, 10\.0\.0\.2, 10\.0\.0\.3 \(DNS lists none\)/);

  const down = again(first, { masters: undefined });
  t.equal(down.contradiction, null, 'no answer is not a contradiction (the weave phase reports DNS down itself)');
  t.same(down.set, first.set);

  const recount = again(first, { masterCount: 5 });
  t.equal(recount.ipallocInit, 'observer');
  t.same(recount.set.size, 3, 'N is kept');
  t.match(recount.contradiction, new RegExp(`^MASTER_COUNT is 5 in ${FILE}, but this node chose consensus=3 at its first launch`));

  const master = decideConsensus(input({ role: 'master', local: new Set(['10.0.0.1']) }));
  const masterLater = again(master, { role: 'master', local: new Set(['10.0.0.1']), masterCount: 1, masters: ['10.0.0.1'] });
  t.equal(masterLater.ipallocInit, 'consensus=3', 'a master never re-initialises with another count');
  t.match(masterLater.contradiction, /MASTER_COUNT is 1 .*; masters\.demo\.k8s no longer lists members 10\.0\.0\.2, 10\.0\.0\.3/);

  // `agent status` itself, on a status document as the agent writes it.
  const root = await mkdtemp(path.join(tmpdir(), 'consensus-status-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const host = createHost({ root });
  const show = async (decision: ConsensusDecision) => {
    const status = { ...(await initialStatus(host, '0.1.0', new Date())), state: 'ready' as const, weaveConsensus: consensusStatus(decision) };
    await writeStatus(host, status);
    let out = '';
    const code = await cli(['status', '--root', root], { out: (text) => (out += `${text}\n`), err: (text) => (out += `${text}\n`), signal: new AbortController().signal, version: '0.1.0' });
    return { code, out };
  };
  const shown = await show(gone);
  t.equal(shown.code, 0, 'a disagreement is no failure: the node keeps working on the kept set');
  t.match(shown.out, /^weave: {4}observer: a minion: it joins as an observer of the consensus set, the 3 masters/m, 'agent status names the mode and why');
  t.match(shown.out, /^ {10}DNS disagrees: masters\.demo\.k8s no longer lists member 10\.0\.0\.2 \(DNS lists 10\.0\.0\.1, 10\.0\.0\.3\); kept/m);
  t.notMatch((await show(first)).out, /DNS disagrees/, 'nothing to say when DNS agrees');
});

t.test('masters not yet registered when a node chose are added as DNS lists them, up to N', async (t) => {
  const early = decideConsensus(input({ masters: ['10.0.0.2'] }));
  t.same(early.set, { size: 3, members: ['10.0.0.2'] });
  t.match(early.reason, /the 3 masters \(10\.0\.0\.2, 1 of them known\)/);
  const later = again(early, { masters: ['10.0.0.3', '10.0.0.2', '10.0.0.1'] });
  t.same(later.set, { size: 3, members: MASTERS });
  t.equal(later.contradiction, null, 'a master registering late is not a contradiction');
  const beyond = again(later, { masters: [...MASTERS, '10.0.0.4'] });
  t.same(beyond.set, later.set, 'a fourth master is no member of a set of 3');
  t.match(beyond.contradiction, /lists 10\.0\.0\.4, beyond the 3 of the set/);
});

t.test('a first choice DNS already shows unsafe is refused for a master, reported for a minion', async (t) => {
  const master = () =>
    decideConsensus(input({ role: 'master', masterCount: 1, file: '/etc/sysconfig/kubernetes-masters', local: new Set(['10.0.0.1']) }));
  t.throws(master, {
    name: 'InputError',
    file: '/etc/sysconfig/kubernetes-masters',
    value: '1',
    message:
      "masters.demo.k8s lists 3 masters (10.0.0.1, 10.0.0.2, 10.0.0.3), more than MASTER_COUNT=1: with consensus=1 they could form separate rings; set MASTER_COUNT=3 in every node's role file",
  });
  const minion = decideConsensus(input({ masterCount: 1 }));
  t.equal(minion.ipallocInit, 'observer', 'an observer can never form a ring, so a minion goes on');
  t.same(minion.set, { size: 1, members: ['10.0.0.1'] });
  t.match(minion.contradiction, /lists 10\.0\.0\.2, 10\.0\.0\.3, beyond the 1 of the set/);
});

t.test('MASTER_COUNT and the persisted set are checked', async (t) => {
  t.equal(parseMasterCount('3'), 3);
  for (const bad of ['0', '6', '03', '3.0', 'three', ' 3', '-1'])
    t.throws(() => parseMasterCount(bad, { file: FILE, line: 4 }), { file: FILE, line: 4, value: bad, message: `MASTER_COUNT ${JSON.stringify(bad)} is not a whole number from 1 to 5` });
  t.equal(masterCountOf({}), 1, 'unset: one master, as the project builds today');
  t.equal(masterCountOf({ MASTER_COUNT: '' }), 1, 'blank means unset');
  t.equal(masterCountOf({ MASTER_COUNT: '5' }), 5);

  const set: ConsensusSet = { size: 3, members: ['10.0.0.2', '10.0.0.1'] };
  t.same(parseConsensusSet(JSON.parse(JSON.stringify(set))), { size: 3, members: ['10.0.0.1', '10.0.0.2'] });
  for (const bad of [null, 3, {}, { size: 0, members: [] }, { size: 6, members: [] }, { size: 1, members: ['10.0.0.1', '10.0.0.2'] }, { size: 2, members: ['127.0.0.1'] }, { size: 2, members: 'x' }])
    t.equal(parseConsensusSet(bad), undefined, `refused: ${JSON.stringify(bad)}`);
});
