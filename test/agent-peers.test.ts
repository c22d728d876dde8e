// Peer discovery against a real DNS server on loopback: who the other nodes are, what counts as this node,
// and what a master's weave phase waits on (its own record listing it, settled) before it starts Weave's ring.
// A minion waits on nothing: it reads the records once (the minions record over TCP when it is large).
import t from 'tap';
import fc from 'fast-check';
import type { AddressInfo } from 'node:net';
import DNS from 'dns2';
import { decidePeers, localIPv4, unusableReason, compareIPv4 } from '../agent/peers.js';
import { createWeavePhase, parseWeaveEnv, WEAVE_ENV } from '../agent/weave.js';
import { startDnsServer } from '../scripts/metal/dns-server.js';
import { startTestDns, manyAddresses, truncatingUdpServer } from './helpers/dns.js';
import { minionContext, NODE_INTERFACES } from './helpers/overlay.js';
import { holds } from './helpers/property.js';
import { until } from './helpers/until.js';

const RECORD = 'masters.demo.k8s';
/** A master of a cluster built with up to 5: every answer below fits, so the waits are what is tested. */
const MASTER = { role: 'master' as const, vars: { MASTER_COUNT: '5' } };
// dns2 takes about a second to encode a thousand-record answer on this machine: a generous DNS timeout.
const FAST = { interfaces: () => NODE_INTERFACES, pollMs: 10, settleMs: 10, timeoutMs: 20_000, dnsTimeoutMs: 8_000 };
const LOCAL = localIPv4(NODE_INTERFACES);

/** PEERS and the IPAM start mode of the weave.env the phase wrote. */
async function weaveEnv(root: string, ctx: Awaited<ReturnType<typeof minionContext>>) {
  const text = await ctx.host.readFile(WEAVE_ENV);
  const env = text === undefined ? undefined : parseWeaveEnv(text);
  return env && { peers: env.peers, init: env.init };
}

/** A node that ran its weave phase once against these records (a master of 5 unless `role` says otherwise). */
async function ranPhase(t: Parameters<typeof minionContext>[0], records: Record<string, string[]>, role: Parameters<typeof minionContext>[2] = MASTER) {
  const dns = await startTestDns('demo.k8s', records);
  t.teardown(() => dns.close());
  const ctx = await minionContext(t, dns.nameserver, role);
  await createWeavePhase(FAST).run(ctx);
  return { dns, ctx };
}

t.test('every IPv4 address of every interface is this node; IPv6 is not considered', async (t) => {
  t.same([...LOCAL].sort(), ['10.0.0.5', '127.0.0.1', '192.168.7.9']);
  t.same([...localIPv4({ eth0: [{ ...NODE_INTERFACES.eth0![0]!, family: 4 as never }] })], ['10.0.0.5'], "Node 18.0's numeric family");
  t.same([...localIPv4({ missing: undefined })], []);
});

t.test('addresses no peer can have are never peers', async (t) => {
  const cases: [string, string | undefined][] = [
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'unspecified'],
    ['127.0.0.1', 'loopback'],
    ['127.8.8.8', 'loopback'],
    ['169.254.10.1', 'link-local'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['240.0.0.1', 'reserved'],
    ['255.255.255.255', 'broadcast'],
    ['::1', 'not-ipv4'],
    ['::ffff:10.0.0.1', 'not-ipv4'],
    ['10.0.0.300', 'not-ipv4'],
    ['10.0.0.1', undefined],
    ['192.0.2.2', undefined],
    ['172.16.0.1', undefined],
    ['223.255.255.254', undefined],
  ];
  for (const [address, reason] of cases) t.equal(unusableReason(address), reason, address);
});

t.test('decidePeers: self on any interface, duplicates once, numeric order, unusable ignored', async (t) => {
  const view = decidePeers(
    ['10.0.0.10', '10.0.0.5', '10.0.0.9', '10.0.0.10', '192.168.7.9', '127.0.0.1', '::1', '169.254.1.1', '10.0.0.9'],
    LOCAL,
  );
  t.same(view.self, ['10.0.0.5', '192.168.7.9'], 'both of this node’s addresses are recognised');
  t.same(view.peers, ['10.0.0.9', '10.0.0.10'], 'numeric, not string, order');
  t.equal(view.members, 3, 'a node listed under two addresses is one member');
  t.same(view.duplicates, ['10.0.0.10', '10.0.0.9']);
  t.same(view.ignored, [
    { address: '127.0.0.1', reason: 'loopback' },
    { address: '::1', reason: 'not-ipv4' },
    { address: '169.254.1.1', reason: 'link-local' },
  ]);
  t.equal(decidePeers(['10.0.0.9'], LOCAL).members, 1, 'without this node the count is only the others');
});

t.test('decidePeers property: peers are distinct, usable, sorted, never local, and order-independent', async (t) => {
  const octet = fc.integer({ min: 0, max: 255 });
  const address = fc.oneof(
    fc.tuple(octet, octet, octet, octet).map((o) => o.join('.')),
    fc.constantFrom('10.0.0.5', '192.168.7.9', '127.0.0.1', '::1', 'fe80::5'),
  );
  await holds(
    t,
    'peers are unique, usable, sorted and independent of record order',
    fc.property(fc.array(address, { maxLength: 60 }), (addresses) => {
      const view = decidePeers(addresses, LOCAL);
      const reversed = decidePeers([...addresses].reverse(), LOCAL);
      return (
        new Set(view.peers).size === view.peers.length &&
        view.peers.every((p) => !LOCAL.has(p) && unusableReason(p) === undefined && addresses.includes(p)) &&
        view.peers.every((p, i) => i === 0 || compareIPv4(view.peers[i - 1]!, p) < 0) &&
        JSON.stringify(reversed.peers) === JSON.stringify(view.peers) &&
        view.members === view.peers.length + (view.self.length ? 1 : 0)
      );
    }),
  );
});

t.test('3 master records, one of them this node: PEERS are the other two, consensus=MASTER_COUNT', async (t) => {
  const { ctx } = await ranPhase(t, { [RECORD]: ['10.0.0.7', '10.0.0.5', '10.0.0.6'] });
  t.same(await weaveEnv(ctx.root, ctx), { peers: ['10.0.0.6', '10.0.0.7'], init: 'consensus=5' });
  t.equal((await ctx.host.stat(WEAVE_ENV))?.mode, 0o600);
  const facts = ctx.facts();
  t.same(facts.peers, ['10.0.0.6', '10.0.0.7']);
  t.match(facts.overlay, { records: [RECORD, 'minions.demo.k8s'], self: ['10.0.0.5'], ipallocInit: 'consensus=5', dns: { state: 'ok', transport: 'udp' } });
});

t.test('this node listed under its second interface is found too', async (t) => {
  const { ctx } = await ranPhase(t, { [RECORD]: ['10.0.0.6', '192.168.7.9', '10.0.0.7'] });
  t.same(await weaveEnv(ctx.root, ctx), { peers: ['10.0.0.6', '10.0.0.7'], init: 'consensus=5' });
});

t.test('a minion: 1000 minion records come over TCP; PEERS are the master and the 999 others', async (t) => {
  const addresses = manyAddresses(1000); // includes 10.0.0.5, this node
  t.ok(addresses.includes('10.0.0.5'));
  const { dns, ctx } = await ranPhase(t, { [RECORD]: ['192.168.200.1'], 'minions.demo.k8s': addresses }, {});
  const env = await weaveEnv(ctx.root, ctx);
  t.equal(env?.peers.length, 1000);
  t.equal(env?.init, 'observer');
  t.notOk(env?.peers.includes('10.0.0.5'));
  t.same(new Set(env?.peers), new Set(['192.168.200.1', ...addresses.filter((a) => a !== '10.0.0.5')]));
  t.ok(dns.queries.some((q) => q.transport === 'tcp'), 'asked again over TCP after the truncated UDP answer');
  t.match(ctx.facts().overlay, { ipallocInit: 'observer', dns: { transport: 'tcp' } });
});

t.test('an NXDOMAIN, then empty, record is waited on (and reported), not taken as zero peers', async (t) => {
  const dns = await startTestDns('demo.k8s', {});
  t.teardown(() => dns.close());
  const ctx = await minionContext(t, dns.nameserver, MASTER);
  const running = createWeavePhase(FAST).run(ctx);
  await until('a wait naming NXDOMAIN', () => ctx.reports.some((r) => /NXDOMAIN/.test(r.waitingOn ?? '')));
  dns.records.set(RECORD, []);
  await until('a wait naming "no usable A records"', () => ctx.reports.some((r) => /no usable A records/.test(r.waitingOn ?? '')));
  t.equal(await ctx.host.readFile(WEAVE_ENV), undefined, 'nothing written while waiting');
  dns.records.set(RECORD, ['10.0.0.5', '10.0.0.8']);
  await running;
  t.same(await weaveEnv(ctx.root, ctx), { peers: ['10.0.0.8'], init: 'consensus=5' });
  t.equal(ctx.reports.at(-2)?.waitingOn, null, 'the wait is cleared in the status');
  t.ok(ctx.logs.some((l) => l.startsWith('waiting ') && l.includes('NXDOMAIN')));
});

t.test('this node absent from the answer: waited on, bounded, and the error names what was missing', async (t) => {
  const dns = await startTestDns('demo.k8s', { [RECORD]: ['10.0.0.6', '10.0.0.7'] });
  t.teardown(() => dns.close());
  const ctx = await minionContext(t, dns.nameserver, MASTER);
  const err = await createWeavePhase({ ...FAST, timeoutMs: 200 })
    .run(ctx)
    .catch((e: Error) => e);
  t.match(err, { message: /gave up after .* waiting for masters\.demo\.k8s to list this node \(10\.0\.0\.5, 192\.168\.7\.9; 2 other nodes listed\)/ });
  t.equal(await ctx.host.readFile(WEAVE_ENV), undefined, 'nothing written');
  t.match(ctx.reports[0], { waitingOn: /to list this node/ });
});

t.test('duplicates count once; unusable answers are logged and never peers', async (t) => {
  const { ctx } = await ranPhase(t, {
    [RECORD]: ['10.0.0.6', '10.0.0.6', '10.0.0.5', '10.0.0.5', '127.0.0.1', '169.254.9.9', '0.0.0.0', '255.255.255.255', '224.0.0.5', '10.0.0.7'],
  });
  t.same(await weaveEnv(ctx.root, ctx), { peers: ['10.0.0.6', '10.0.0.7'], init: 'consensus=5' });
  const ignored: [string, string][] = [
    ['127.0.0.1', 'loopback'],
    ['169.254.9.9', 'link-local'],
    ['0.0.0.0', 'unspecified'],
    ['255.255.255.255', 'broadcast'],
    ['224.0.0.5', 'multicast'],
  ];
  for (const [address, reason] of ignored)
    t.ok(ctx.logs.includes(`peer-ignored record=${RECORD} address=${address} reason=${reason}`), address);
  t.ok(ctx.logs.includes(`peer-duplicates record=${RECORD} addresses=10.0.0.6,10.0.0.5`));
});

t.test('IPv6 answers (AAAA records in the answer to an A query) are not peers', async (t) => {
  const { Packet } = DNS;
  const server = DNS.createServer({
    udp: true,
    handle: (request, send) => {
      const response = Packet.createResponseFromRequest(request);
      const name = request.questions[0]!.name;
      const record = (type: number, address: string) => ({ name, type, class: Packet.CLASS.IN, ttl: 30, address }) as DNS.Packet.Resource;
      response.answers.push(
        record(Packet.TYPE.A, '10.0.0.5'),
        record(Packet.TYPE.AAAA, 'fd00::6'),
        record(Packet.TYPE.A, '10.0.0.6'),
        record(Packet.TYPE.AAAA, '::ffff:10.0.0.9'),
      );
      void send(response);
    },
  });
  const listening = await server.listen({ udp: { port: 0, address: '127.0.0.1' } });
  t.teardown(() => server.close());
  const ctx = await minionContext(t, `127.0.0.1:${(listening.udp as AddressInfo).port}`, MASTER);
  await createWeavePhase(FAST).run(ctx);
  t.same(await weaveEnv(ctx.root, ctx), { peers: ['10.0.0.6'], init: 'consensus=5' });
});

t.test('an answer that changes between two queries is not taken until two agree', async (t) => {
  const answers = [
    ['10.0.0.5', '10.0.0.6'],
    ['10.0.0.5', '10.0.0.6', '10.0.0.7'],
    ['10.0.0.5', '10.0.0.6', '10.0.0.7', '10.0.0.8'],
  ];
  let n = 0;
  const server = await startDnsServer({
    zone: () => ({ origin: 'demo.k8s', records: new Map([[RECORD, answers[Math.min(n++, answers.length - 1)]!]]), ttl: 5 }),
  });
  t.teardown(() => server.close());
  const ctx = await minionContext(t, `127.0.0.1:${server.port}`, MASTER);
  await createWeavePhase(FAST).run(ctx);
  t.same(await weaveEnv(ctx.root, ctx), { peers: ['10.0.0.6', '10.0.0.7', '10.0.0.8'], init: 'consensus=5' });
  t.equal(n, 5, 'asked until two answers in a row agreed, then once for the minions record');
  t.equal(ctx.logs.filter((l) => l.startsWith('peers-unsettled')).length, 2);
  t.ok(ctx.reports.some((r) => /to settle/.test(r.waitingOn ?? '')));
});

t.test('a truncated answer with TCP refused: waited on as DNS down, never a partial peer list', async (t) => {
  const sock = await truncatingUdpServer(t);
  const ctx = await minionContext(t, `127.0.0.1:${sock}`, MASTER);
  const err = await createWeavePhase({ ...FAST, timeoutMs: 300 })
    .run(ctx)
    .catch((e: Error) => e);
  t.match(err, { message: /waiting for DNS for masters\.demo\.k8s \(DNS query to 127\.0\.0\.1:\d+ over tcp failed: ECONNREFUSED\)/ });
  t.equal(await ctx.host.readFile(WEAVE_ENV), undefined);
});

t.test('SIGTERM ends the wait promptly', async (t) => {
  const dns = await startTestDns('demo.k8s', {});
  t.teardown(() => dns.close());
  const ctx = await minionContext(t, dns.nameserver, MASTER);
  const abort = new AbortController();
  const running = createWeavePhase({ ...FAST, pollMs: 60_000 }).run({ ...ctx, signal: abort.signal });
  await until('the first wait report', () => ctx.reports.length > 0);
  abort.abort();
  await t.rejects(running, { name: 'Interrupted' });
});

