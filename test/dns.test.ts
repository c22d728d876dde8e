import t from 'tap';
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { queryA, parseNameserver, nameserverFromResolvConf, DnsError } from '../agent/dns.js';
import { startTestDns, manyAddresses, truncatingUdpServer } from './helpers/dns.js';

t.test('masters resolve over UDP with TTL', async (t) => {
  const dns = await startTestDns('demo.k8s', { 'masters.demo.k8s': ['127.0.0.1', '127.0.0.2'] }, 30);
  t.teardown(() => dns.close());
  const a = await queryA('masters.demo.k8s', parseNameserver(dns.nameserver));
  t.same(a, { rcode: 'NOERROR', addresses: ['127.0.0.1', '127.0.0.2'], ttl: 30, transport: 'udp' });
  const upper = await queryA('MASTERS.Demo.K8s', parseNameserver(dns.nameserver));
  t.same(upper.addresses, ['127.0.0.1', '127.0.0.2'], 'names are case-insensitive');
});

t.test('a thousand minions come back whole over TCP after a truncated UDP answer', async (t) => {
  const addrs = manyAddresses(1000);
  const dns = await startTestDns('demo.k8s', { 'minions.demo.k8s': addrs });
  t.teardown(() => dns.close());
  const a = await queryA('minions.demo.k8s', parseNameserver(dns.nameserver));
  t.equal(a.transport, 'tcp');
  t.equal(a.addresses.length, 1000);
  t.same(new Set(a.addresses), new Set(addrs));
  t.same(dns.queries.map((q) => q.transport), ['udp', 'tcp']);
});

t.test('NXDOMAIN inside the zone, REFUSED outside it', async (t) => {
  const dns = await startTestDns('demo.k8s', { 'masters.demo.k8s': ['127.0.0.1'] });
  t.teardown(() => dns.close());
  const ns = parseNameserver(dns.nameserver);
  t.match(await queryA('minions.demo.k8s', ns), { rcode: 'NXDOMAIN', addresses: [] });
  t.match(await queryA('example.com', ns), { rcode: 'REFUSED', addresses: [] });
});

t.test('a silent server times out with a DnsError naming it', async (t) => {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  t.teardown(() => sock.close());
  const port = (sock.address() as net.AddressInfo).port;
  const err = await queryA('masters.demo.k8s', { host: '127.0.0.1', port }, { timeoutMs: 200 }).catch((e) => e);
  t.type(err, DnsError);
  t.equal(err.reason, 'timeout');
  t.match(err.message, `127.0.0.1:${port}`);
});

t.test('truncated answer with TCP refused is an unreachable error, not a partial answer', async (t) => {
  const port = await truncatingUdpServer(t);
  const err = await queryA('minions.demo.k8s', { host: '127.0.0.1', port }, { timeoutMs: 500 }).catch((e) => e);
  t.type(err, DnsError);
  t.equal(err.reason, 'unreachable');
  t.match(err.message, /over tcp.*ECONNREFUSED/);
});

t.test('nameserver parsing', async (t) => {
  t.same(parseNameserver('10.0.0.2'), { host: '10.0.0.2', port: 53 });
  t.same(parseNameserver('127.0.0.1:5353'), { host: '127.0.0.1', port: 5353 });
  t.same(parseNameserver('[::1]:53'), { host: '::1', port: 53 });
  for (const bad of ['', 'dns.example', '1.2.3.4:0', '1.2.3.4:99999', '$(id)', '1.2.3.4:53;x'])
    t.throws(() => parseNameserver(bad, '--nameserver'), { name: 'InputError', message: /--nameserver/ }, bad);
  t.same(nameserverFromResolvConf('# x\nsearch a\nnameserver 10.1.2.3\nnameserver 8.8.8.8\n'), { host: '10.1.2.3', port: 53 });
  t.equal(nameserverFromResolvConf('search a\n'), undefined);
});

t.test('more addresses than one DNS message holds: a clear error, not an empty answer', async (t) => {
  const dns = await startTestDns('demo.k8s', { 'minions.demo.k8s': manyAddresses(5000) });
  t.teardown(() => dns.close());
  const err = await queryA('minions.demo.k8s', parseNameserver(dns.nameserver), { timeoutMs: 5000 }).catch((e) => e);
  t.type(err, DnsError);
  t.equal(err.reason, 'too-large');
  t.match(err.message, /minions\.demo\.k8s does not fit in one DNS message even over TCP \(\d{4} records sent\)/);
});

t.test('NAMESERVER=[::1]: answers over UDP, and a truncated answer comes back whole over TCP', async (t) => {
  const addrs = manyAddresses(60);
  const dns = await startTestDns('demo.k8s', { 'masters.demo.k8s': ['10.0.0.1'], 'minions.demo.k8s': addrs }, 5, '::1');
  t.teardown(() => dns.close());
  const ns = parseNameserver(dns.nameserver);
  t.same(ns.host, '::1');
  t.same(await queryA('masters.demo.k8s', ns), { rcode: 'NOERROR', addresses: ['10.0.0.1'], ttl: 5, transport: 'udp' });
  const a = await queryA('minions.demo.k8s', ns, { timeoutMs: 2000 });
  t.equal(a.transport, 'tcp');
  t.same(new Set(a.addresses), new Set(addrs));
  t.same(dns.queries.map((q) => q.transport), ['udp', 'udp', 'tcp']);
});

t.test('a TCP query that times out closes its connection', async (t) => {
  // Truncates every UDP answer; over TCP it accepts and never answers.
  const port = await truncatingUdpServer(t);
  const closed: Promise<void>[] = [];
  const tcp = net.createServer((socket) => {
    closed.push(new Promise<void>((r) => socket.on('close', () => r())));
    socket.resume(); // read, so the client's FIN is seen
  });
  await new Promise<void>((r) => tcp.listen(port, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => tcp.close(() => r())));
  const err = await queryA('minions.demo.k8s', { host: '127.0.0.1', port }, { timeoutMs: 200 }).catch((e) => e);
  t.type(err, DnsError);
  t.equal(err.reason, 'timeout');
  t.match(err.message, `127.0.0.1:${port} over tcp timed out`);
  t.equal(closed.length, 1, 'one connection was made');
  const shut = await Promise.race([closed[0]!.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 2000))]);
  t.ok(shut, 'the client closed its TCP connection within 2 s of timing out');
});

t.test('an IPv6 nameserver is named with brackets in errors', async (t) => {
  const err = await queryA('masters.demo.k8s', { host: '::1', port: 9 }, { timeoutMs: 200 }).catch((e) => e);
  t.type(err, DnsError);
  t.match(err.message, /\[::1\]:9 over udp/);
});
