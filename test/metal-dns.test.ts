// The metal DNS server against raw packets on loopback: what the RFCs say an authoritative server answers,
// drops and refuses, over UDP and TCP (RFC 1035, 6891 EDNS, 7766 TCP, 8482 ANY), its limits and its
// counters; and, for the same queries, real dnsmasq serving the same names agrees on rcode and flags.
import t, { type Test } from 'tap';
import { execFile, spawn } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { startDnsServer, type DnsLimits, type DnsServer, type Zone } from '../scripts/metal/dns-server.js';
import { askUdp, frame, parseResponse, rawQuery, tcpClient, udpClient, type RawQuery, type RawResponse } from './helpers/dns-raw.js';
import { manyAddresses } from './helpers/dns.js';

const A = 1;
const NS = 2;
const SOA = 6;
const AAAA = 28;
const IXFR = 251;
const AXFR = 252;
const ANY = 255;
const NOERROR = 0;
const FORMERR = 1;
const NXDOMAIN = 3;
const NOTIMP = 4;
const REFUSED = 5;
const BADVERS = 16;

const RECORDS: Record<string, string[]> = {
  'masters.lab.k8s': manyAddresses(3, 1),
  'mid.lab.k8s': manyAddresses(50, 100), // 800 bytes of answers: past 512, within 1232
  'minions.lab.k8s': manyAddresses(1000, 1000),
  'a.b.lab.k8s': ['10.9.9.9'], // makes b.lab.k8s an empty non-terminal
  'empty.lab.k8s': [],
  'huge.lab.k8s': manyAddresses(5000, 20000), // 80 KB of answers: more than one message holds
};
const ZONE: Zone = { origin: 'lab.k8s', records: new Map(Object.entries(RECORDS)), ttl: 17 };

async function serve(t: Test, limits: DnsLimits = {}, zone: () => Zone = () => ZONE): Promise<DnsServer> {
  const server = await startDnsServer({ zone, limits });
  t.teardown(() => server.close());
  return server;
}

t.test('A records: QR and AA set, RA clear, ID, RD, CD and the asker\'s letter case echoed', async (t) => {
  const { port } = await serve(t);
  const r = await askUdp(port, { id: 777, flags: 0x0110, name: 'MaStErs.Lab.K8s' });
  t.match(r, { id: 777, qr: true, opcode: 0, aa: true, tc: false, rd: true, ra: false, cd: true, rcode: NOERROR, qdcount: 1, question: 'MaStErs.Lab.K8s', opt: undefined });
  t.same(r.answers, RECORDS['masters.lab.k8s']!.map((data) => ({ type: A, ttl: 17, data })));
  const norec = await askUdp(port, { flags: 0, name: 'masters.lab.k8s' });
  t.equal(norec.rd, false);
});

t.test('names: NXDOMAIN and NODATA carry the SOA; empty non-terminals and empty roles are NODATA; outside the zone REFUSED', async (t) => {
  const { port } = await serve(t);
  for (const [q, rcode, aa, authority] of [
    [{ name: 'nobody.lab.k8s' }, NXDOMAIN, true, [SOA]],
    [{ name: 'x.masters.lab.k8s' }, NXDOMAIN, true, [SOA]],
    [{ name: 'masters.lab.k8s', type: AAAA }, NOERROR, true, [SOA]],
    [{ name: 'b.lab.k8s' }, NOERROR, true, [SOA]],
    [{ name: 'empty.lab.k8s' }, NOERROR, true, [SOA]],
    [{ name: 'example.com' }, REFUSED, false, []],
    [{ name: 'lab.k8s.evil' }, REFUSED, false, []],
    [{ name: '' }, REFUSED, false, []],
  ] as const) {
    const r = await askUdp(port, q);
    t.match(r, { rcode, aa, answers: [] }, JSON.stringify(q));
    t.same(r.authority.map((x) => x.type), authority, `${JSON.stringify(q)}: authority`);
  }
  const apex = await askUdp(port, { name: 'lab.k8s', type: SOA });
  t.same(apex.answers.map((x) => x.type), [SOA]);
  t.same((await askUdp(port, { name: 'lab.k8s', type: NS })).answers.map((x) => x.type), [NS]);
});

t.test('ANY gets one RRset (RFC 8482): the A records of a name, the SOA at the apex', async (t) => {
  const { port } = await serve(t);
  const apex = await askUdp(port, { name: 'lab.k8s', type: ANY });
  t.match(apex, { rcode: NOERROR, aa: true });
  t.same(apex.answers.map((x) => x.type), [SOA]);
  const masters = await askUdp(port, { name: 'masters.lab.k8s', type: ANY });
  t.same(masters.answers.map((x) => x.data), RECORDS['masters.lab.k8s']);
});

t.test('zone transfers, other classes, other opcodes and two questions are refused or not implemented', async (t) => {
  const { port } = await serve(t);
  t.match(await askUdp(port, { name: 'lab.k8s', type: AXFR }), { rcode: REFUSED, answers: [] }, 'AXFR over UDP');
  t.match(await askUdp(port, { name: 'lab.k8s', type: IXFR }), { rcode: REFUSED, answers: [] }, 'IXFR');
  const tcp = await tcpClient(port);
  tcp.socket.write(frame(rawQuery({ name: 'lab.k8s', type: AXFR })));
  t.match(parseResponse(await tcp.next('AXFR')), { rcode: REFUSED, answers: [] }, 'AXFR over TCP');
  tcp.socket.destroy();
  t.match(await askUdp(port, { name: 'masters.lab.k8s', class: 3 }), { rcode: REFUSED, aa: false, answers: [] }, 'class CH is not answered with IN data');
  t.match(await askUdp(port, { name: 'version.bind', type: 16, class: 3 }), { rcode: REFUSED, answers: [] }, 'CH version.bind');
  t.match(await askUdp(port, { name: 'masters.lab.k8s', class: 4 }), { rcode: REFUSED }, 'class HS');
  for (const [opcode, what] of [
    [1, 'IQUERY'],
    [2, 'STATUS'],
    [4, 'NOTIFY'],
    [5, 'UPDATE'],
  ] as const) {
    const r = await askUdp(port, { id: 99, flags: opcode << 11, name: 'lab.k8s', type: SOA });
    t.match(r, { id: 99, qr: true, opcode, rcode: NOTIMP, answers: [] }, what);
  }
  t.match(await askUdp(port, { questions: 2 }), { qr: true, rcode: FORMERR, qdcount: 0, answers: [] }, 'two questions');
  t.match(await askUdp(port, { questions: 0 }), { qr: true, rcode: FORMERR, answers: [] }, 'no question');
});

t.test('EDNS: our OPT (1232 bytes, DO echoed) in every EDNS answer, BADVERS for version 1, FORMERR for two OPTs', async (t) => {
  const { port } = await serve(t);
  for (const q of [{ name: 'masters.lab.k8s' }, { name: 'nobody.lab.k8s' }, { name: 'example.com' }, { name: 'lab.k8s', type: AXFR }, { flags: 5 << 11 }] as RawQuery[]) {
    const r = await askUdp(port, { ...q, edns: { payload: 4096 } });
    t.same(r.opt, { payload: 1232, version: 0, dnssecOk: false }, `OPT in the answer to ${JSON.stringify(q)}`);
  }
  t.same((await askUdp(port, { edns: { dnssecOk: true } })).opt, { payload: 1232, version: 0, dnssecOk: true });
  const badvers = await askUdp(port, { edns: { version: 1 } });
  t.match(badvers, { rcode: BADVERS, answers: [], opt: { version: 0, payload: 1232 } });
  t.match(await askUdp(port, { edns: { count: 2 } }), { rcode: FORMERR, answers: [] });
});

t.test('UDP size: 512 bytes without EDNS, up to 1232 with it; past that TC and the question only; TCP carries 1000 records', async (t) => {
  const { port } = await serve(t);
  const plain = await askUdp(port, { name: 'mid.lab.k8s' });
  t.match(plain, { tc: true, aa: true, rcode: NOERROR, answers: [], question: 'mid.lab.k8s' });
  t.ok(plain.size <= 512);
  const edns = await askUdp(port, { name: 'mid.lab.k8s', edns: { payload: 4096 } });
  t.match(edns, { tc: false, opt: { payload: 1232 } });
  t.equal(edns.answers.length, 50);
  const small = await askUdp(port, { name: 'mid.lab.k8s', edns: { payload: 100 } });
  t.equal(small.tc, true, 'an offer under 512 counts as 512');
  const big = await askUdp(port, { name: 'minions.lab.k8s', edns: { payload: 65000 } });
  t.match(big, { tc: true, answers: [] }, 'we never send more than our own 1232 over UDP');
  t.ok(big.size <= 1232);

  const tcp = await tcpClient(port);
  tcp.socket.write(frame(rawQuery({ name: 'minions.lab.k8s' })));
  const whole = parseResponse(await tcp.next('1000 records'));
  t.match(whole, { tc: false, rcode: NOERROR });
  t.same(whole.answers.map((a) => a.data), RECORDS['minions.lab.k8s']);
  tcp.socket.write(frame(rawQuery({ name: 'huge.lab.k8s' })));
  const part = parseResponse(await tcp.next('5000 records'));
  t.match(part, { tc: true, rcode: NOERROR }, 'more than one message holds: what fits, with TC, even over TCP');
  t.ok(part.answers.length > 4000 && part.size <= 65535, `${part.answers.length} records in ${part.size} bytes`);
  t.match(await askUdp(port, { name: 'huge.lab.k8s', edns: {} }), { tc: true, answers: [] }, 'and over UDP the question only');
  tcp.socket.destroy();
});

t.test('responses (QR=1) and malformed packets get no answer; the server keeps answering', async (t) => {
  const server = await serve(t);
  const client = await udpClient(server.port);
  t.teardown(() => client.close());
  const response = rawQuery({ id: 1, flags: 0x8400 });
  const cut = rawQuery({ id: 2 }).subarray(0, 20); // the question stops mid-name
  const tiny = Buffer.from([0, 3, 1, 0, 0]);
  const pointerLoop = Buffer.concat([rawQuery({ id: 4 }).subarray(0, 12), Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
  const badOpt = Buffer.concat([rawQuery({ id: 5, edns: {} }).subarray(0, -2), Buffer.from([0, 9])]); // RDLENGTH past the end
  for (const bad of [response, cut, tiny, pointerLoop, badOpt]) {
    client.send(bad);
    client.send(rawQuery({ id: 200 }));
    t.equal(parseResponse(await client.next('the good query after a bad one')).id, 200, `no answer to ${bad.toString('hex')}`);
  }
  t.match(server.counters().dropped, { response: 1, malformed: 4 });
  t.equal(server.counters().answers.NOERROR, 5);
});

t.test('a query from source port 0 is dropped, and the process lives on (needs root: a raw socket)', async (t) => {
  const server = await serve(t);
  // Only a raw socket can send from port 0: python3 writes the UDP header itself.
  const script = `import socket,sys,struct
payload=bytes.fromhex(sys.argv[2])
s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_UDP)
s.sendto(struct.pack('!HHHH',0,int(sys.argv[1]),8+len(payload),0)+payload,('127.0.0.1',0))`;
  await promisify(execFile)('python3', ['-c', script, String(server.port), rawQuery().toString('hex')], { timeout: 10_000 });
  for (let i = 0; i < 100 && server.counters().dropped.badSource === 0; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(server.counters().dropped.badSource, 1, 'counted as dropped');
  t.match(await askUdp(server.port, {}), { rcode: NOERROR }, 'and the next query is answered');
});

t.test('TCP (RFC 7766): one connection for many queries, pipelined, split across reads; answers in order', async (t) => {
  const { port } = await serve(t);
  const tcp = await tcpClient(port);
  t.teardown(() => tcp.socket.destroy());
  tcp.socket.write(frame(rawQuery({ id: 1 })));
  t.equal(parseResponse(await tcp.next('first query')).id, 1);
  tcp.socket.write(frame(rawQuery({ id: 2 })));
  t.equal(parseResponse(await tcp.next('second query on the same connection')).id, 2);
  tcp.socket.write(Buffer.concat([frame(rawQuery({ id: 3, name: 'minions.lab.k8s' })), frame(rawQuery({ id: 4, name: 'nobody.lab.k8s' })), frame(rawQuery({ id: 5 }))]));
  const pipelined = [parseResponse(await tcp.next('pipelined 3')), parseResponse(await tcp.next('pipelined 4')), parseResponse(await tcp.next('pipelined 5'))];
  t.same(pipelined.map((r) => [r.id, r.rcode, r.answers.length]), [
    [3, NOERROR, 1000],
    [4, NXDOMAIN, 0],
    [5, NOERROR, 3],
  ]);
  const split = frame(rawQuery({ id: 6 }));
  for (const byte of split) {
    tcp.socket.write(Buffer.from([byte]));
    await new Promise((r) => setImmediate(r));
  }
  t.equal(parseResponse(await tcp.next('a query sent byte by byte')).id, 6);
});

t.test('TCP limits: idle connections and byte-dribblers closed, queries per connection, connections in all', async (t) => {
  const server = await serve(t, { tcpIdleMs: 300, tcpQueriesPerConnection: 3, tcpConnections: 2 });
  const idle = await tcpClient(server.port);
  const opened = Date.now();
  const closedAt = await idle.closed('an idle connection', 3000);
  t.ok(closedAt - opened >= 250, `closed after the idle time (${closedAt - opened} ms)`);

  const dribbler = await tcpClient(server.port);
  const half = frame(rawQuery());
  let sent = 0;
  const drip = setInterval(() => sent < half.length - 1 && dribbler.socket.write(half.subarray(sent, ++sent)), 50);
  t.teardown(() => clearInterval(drip));
  await dribbler.closed('a connection sending one byte every 50 ms', 3000);
  clearInterval(drip);

  // 2000 answers of 16 KB are more than the kernel's buffers hold: the server's own output backs up.
  const roomy = await serve(t, { tcpIdleMs: 300 });
  const deaf = await tcpClient(roomy.port);
  deaf.socket.pause();
  deaf.socket.write(Buffer.concat(Array.from({ length: 2000 }, (_, id) => frame(rawQuery({ id, name: 'minions.lab.k8s' })))));
  // The client reads nothing, so it would not see the close either: ask the server.
  for (let i = 0; i < 250 && roomy.counters().tcp.open > 0; i++) await new Promise((r) => setTimeout(r, 20));
  t.match(roomy.counters().tcp, { open: 0, idleClosed: 1 }, 'a connection that never reads its answers is closed within 5 s');
  deaf.socket.destroy();

  const busy = await tcpClient(server.port);
  busy.socket.write(Buffer.concat([1, 2, 3, 4].map((id) => frame(rawQuery({ id })))));
  for (const id of [1, 2, 3]) t.equal(parseResponse(await busy.next(`query ${id}`)).id, id);
  await busy.closed('a connection past 3 queries');

  const one = await tcpClient(server.port);
  const two = await tcpClient(server.port);
  const three = await tcpClient(server.port);
  await three.closed('the third connection over a cap of 2');
  one.socket.write(frame(rawQuery({ id: 11 })));
  t.equal(parseResponse(await one.next('a query on a connection within the cap')).id, 11);
  t.match(server.counters().tcp, { refused: 1, open: 2 });
  t.ok(server.counters().tcp.idleClosed >= 2);
  one.socket.destroy();
  two.socket.destroy();
});

t.test('per-source rate: queries past the limit in one second are dropped and counted', async (t) => {
  const server = await serve(t, { queriesPerSecond: 5 });
  const client = await udpClient(server.port);
  t.teardown(() => client.close());
  for (let id = 0; id < 10; id++) client.send(rawQuery({ id }));
  const ids: number[] = [];
  for (let i = 0; i < 5; i++) ids.push(parseResponse(await client.next(`answer ${i}`)).id);
  t.same(ids, [0, 1, 2, 3, 4]);
  for (let i = 0; i < 100 && server.counters().dropped.rateLimited < 5; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(server.counters().dropped.rateLimited, 5);
  await t.rejects(client.next('a 6th answer', 300), /no UDP reply/, 'nothing more was answered');
});

t.test('counters: queries, answers by rcode, TCP connections', async (t) => {
  const server = await serve(t);
  await askUdp(server.port, {});
  await askUdp(server.port, { name: 'nobody.lab.k8s' });
  await askUdp(server.port, { name: 'example.com' });
  const tcp = await tcpClient(server.port);
  tcp.socket.write(frame(rawQuery()));
  await tcp.next('one query');
  t.match(server.counters(), { queries: 4, answers: { NOERROR: 2, NXDOMAIN: 1, REFUSED: 1 }, tcp: { open: 1, accepted: 1 } });
  tcp.socket.destroy();
});

t.test('a new zone is served from its first query on', async (t) => {
  let zone = ZONE;
  const { port } = await serve(t, {}, () => zone);
  t.equal((await askUdp(port, {})).answers.length, 3);
  zone = { ...ZONE, records: new Map([['masters.lab.k8s', ['10.5.5.5']]]) };
  t.same((await askUdp(port, {})).answers.map((a) => a.data), ['10.5.5.5']);
});

t.test('close() ends idle TCP connections at once', async (t) => {
  const server = await startDnsServer({ zone: () => ZONE });
  const idle = await tcpClient(server.port);
  idle.socket.write(frame(rawQuery()));
  await idle.next('a query before close');
  const started = Date.now();
  await server.close();
  await idle.closed('an idle connection at close', 1000);
  t.ok(Date.now() - started < 1000, `closed in ${Date.now() - started} ms`);
});

t.test('dnsmasq serving the same names agrees on rcode and flags', async (t) => {
  const ours = await serve(t);
  const theirs = await startDnsmasq(t);
  // What both must agree on. dnsmasq is a forwarder: it sets RA, and it is not authoritative for names it
  // does not have (NXDOMAIN/NODATA without AA), so AA is compared only on answers with records.
  // dnsmasq departs from the RFCs where this server follows them: it answers NOTIFY/UPDATE REFUSED (we say
  // NOTIMP), an unknown EDNS version NOERROR (RFC 6891: BADVERS), AXFR NOERROR (we refuse transfers), and
  // class CH for our names NOERROR (we REFUSE); those cases are asserted above against the RFCs.
  const cases: RawQuery[] = [
    { name: 'masters.lab.k8s' },
    { name: 'MASTERS.lab.k8s', flags: 0 },
    { name: 'masters.lab.k8s', edns: { payload: 4096 } },
    { name: 'masters.lab.k8s', type: AAAA },
    { name: 'nobody.lab.k8s' },
    { name: 'example.com' },
    { name: 'mid.lab.k8s' },
    { name: 'mid.lab.k8s', edns: { payload: 4096 } },
    { name: 'minions.lab.k8s', edns: { payload: 4096 } },
  ];
  const flags = (r: RawResponse, aa: boolean) => ({ qr: r.qr, opcode: r.opcode, tc: r.tc, rd: r.rd, rcode: r.rcode, opt: !!r.opt, ...(aa && { aa: r.aa }) });
  for (const q of cases) {
    const [a, b] = [await askUdp(ours.port, q), await askUdp(theirs, q)];
    const withRecords = b.answers.length > 0;
    t.same(flags(a, withRecords), flags(b, withRecords), `UDP ${JSON.stringify(q)}`);
  }
  for (const q of [{ name: 'minions.lab.k8s' }, { name: 'nobody.lab.k8s' }]) {
    const [a, b] = await Promise.all([ours.port, theirs].map(async (port) => {
      const tcp = await tcpClient(port);
      tcp.socket.write(frame(rawQuery(q)));
      const r = parseResponse(await tcp.next(`TCP ${q.name} from ${port}`));
      tcp.socket.destroy();
      return r;
    }));
    t.same(flags(a!, false), flags(b!, false), `TCP ${q.name}`);
    t.equal(a!.answers.length, b!.answers.length, `TCP ${q.name}: the same number of records`);
  }
  t.equal((await askUdp(ours.port, { name: 'masters.lab.k8s', edns: {} })).opt?.payload, (await askUdp(theirs, { name: 'masters.lab.k8s', edns: {} })).opt?.payload, 'the same UDP payload size');
});

/** Real dnsmasq with the test zone's names, authoritative for nothing else (`--local`), on a free port. */
async function startDnsmasq(t: Test): Promise<number> {
  const dir = await mkdtemp(path.join(tmpdir(), 'metal-dns-dnsmasq-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const hosts = path.join(dir, 'hosts');
  await writeFile(hosts, Object.entries(RECORDS).flatMap(([name, addrs]) => addrs.map((a) => `${a} ${name}\n`)).join(''));
  await chmod(dir, 0o755); // dnsmasq reads it as nobody
  const probe = await startDnsServer({ zone: () => ZONE }); // a port free for UDP and TCP right now
  const port = probe.port;
  await probe.close();
  const child = spawn('dnsmasq', ['--keep-in-foreground', '--log-facility=-', `--port=${port}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts', `--addn-hosts=${hosts}`, '--local=/lab.k8s/', '--pid-file=', '--local-ttl=17', '--conf-file=/dev/null'], { stdio: 'ignore' });
  t.teardown(() => child.kill('SIGTERM'));
  for (let i = 0; i < 50; i++) {
    if (child.exitCode !== null) throw new Error(`dnsmasq exited ${child.exitCode}`);
    const answered = await askUdp(port, {}, 200).then(() => true, () => false);
    if (answered) return port;
  }
  throw new Error(`dnsmasq did not answer on port ${port} within 50 tries`);
}
