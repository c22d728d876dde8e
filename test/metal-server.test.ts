// The metal server against real clients: dns2 over UDP/TCP, node's HTTP client, real files.
import t from 'tap';
import { mkdir, mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { request } from 'node:http';
import DNS from 'dns2';
import { queryA } from '../agent/dns.js';
import { renderUserData } from '../cloud-init/render.js';
import { startMetalServer, type MetalServer } from '../scripts/metal/server.js';
import { manyAddresses } from './helpers/dns.js';
import { SECRET_FILES } from '../agent/secrets-layout.js';
import { writeServingCert } from './helpers/secrets.js';

interface Entry {
  mac: string;
  hostname: string;
  address: string;
  role: string;
}

function inventoryYaml(cluster: string, machines: Entry[]): string {
  return [`cluster: ${cluster}`, 'machines:', ...machines.map((m) => `  - {mac: "${m.mac}", hostname: ${m.hostname}, address: ${m.address}, role: ${m.role}}`), ''].join('\n');
}

const mac = (i: number) => `52:54:00:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;

const LAB: Entry[] = [
  { mac: '52:54:00:aa:00:01', hostname: 'm1', address: '192.168.100.11', role: 'master' },
  { mac: '52:54:00:aa:00:03', hostname: 'n1', address: '192.168.100.21', role: 'minion' },
];

const KERNEL = Buffer.from(Array.from({ length: 70000 }, (_, i) => (i * 7) & 255));

async function setUp(t: { teardown(fn: () => unknown): void }, machines: Entry[] = LAB, extra: Partial<Parameters<typeof startMetalServer>[0]> = {}) {
  const dir = await mkdtemp(path.join(tmpdir(), 'metal-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const inventory = path.join(dir, 'inventory.yaml');
  await writeFile(inventory, inventoryYaml('lab', machines));
  const imageDir = path.join(dir, 'image');
  await mkdir(imageDir);
  await writeFile(path.join(imageDir, 'vmlinuz'), KERNEL);
  await writeFile(path.join(imageDir, 'initrd'), 'initrd bytes\n');
  const logs: string[] = [];
  const server = await startMetalServer({ inventory, imageDir, dnsPort: 0, httpPort: 0, log: (l) => logs.push(l), ...extra });
  t.teardown(() => server.close());
  return { server, logs, inventory, dir, ns: { host: '127.0.0.1', port: server.dnsPort } };
}

async function get(server: MetalServer, urlPath: string, headers: Record<string, string> = {}) {
  const res = await fetch(`http://127.0.0.1:${server.httpPort}${urlPath}`, { headers });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

t.test('DNS: masters and minions answer with the inventory addresses; one log line per query with logQueries', async (t) => {
  const { ns, logs } = await setUp(t, LAB, { logQueries: true });
  t.same(await queryA('masters.lab.k8s', ns), { rcode: 'NOERROR', addresses: ['192.168.100.11'], ttl: 30, transport: 'udp' });
  t.match(await queryA('minions.lab.k8s', ns), { rcode: 'NOERROR', addresses: ['192.168.100.21'] });
  t.match(await queryA('n1.lab.k8s', ns), { rcode: 'NOERROR', addresses: ['192.168.100.21'] });
  t.match(await queryA('nobody.lab.k8s', ns), { rcode: 'NXDOMAIN', addresses: [] });
  t.match(await queryA('example.com', ns), { rcode: 'REFUSED', addresses: [] });
  t.match(await queryA('masters.lab.k8s.evil.com', ns), { rcode: 'REFUSED' });
  t.ok(logs.includes('dns udp masters.lab.k8s A NOERROR answers=1'), 'one log line per query');
  t.ok(logs.includes('dns udp example.com A REFUSED answers=0'));
});

t.test('DNS: no per-query log by default; the counters say what was answered', async (t) => {
  const { server, ns, logs } = await setUp(t);
  await queryA('masters.lab.k8s', ns);
  await queryA('nobody.lab.k8s', ns);
  t.same(logs.filter((l) => l.startsWith('dns ')), []);
  t.match(await server.dnsCounters(), { queries: 2, answers: { NOERROR: 1, NXDOMAIN: 1 } });
});

t.test('DNS: SOA and NS at the apex, and ns. is this server', async (t) => {
  const { ns } = await setUp(t);
  const udp = DNS.UDPClient({ dns: ns.host, port: ns.port });
  const soa = await udp('lab.k8s', 'SOA');
  t.equal(soa.header.aa, 1, 'authoritative');
  t.match(soa.answers, [{ type: DNS.Packet.TYPE.SOA, primary: 'ns.lab.k8s', admin: 'hostmaster.lab.k8s' }]);
  const nsAnswer = await udp('lab.k8s', 'NS');
  t.match(nsAnswer.answers, [{ type: DNS.Packet.TYPE.NS, ns: 'ns.lab.k8s' }]);
  t.match(await queryA('ns.lab.k8s', ns), { addresses: ['127.0.0.1'] });
  const nx = await udp('nobody.lab.k8s', 'A');
  t.equal(nx.header.rcode, 3);
  t.match(nx.authorities, [{ type: DNS.Packet.TYPE.SOA }], 'NXDOMAIN carries the SOA for negative caching');
});

t.test('DNS: 1000 minions come back whole over TCP after a truncated UDP answer', async (t) => {
  const addresses = manyAddresses(1000);
  const machines = [LAB[0]!, ...addresses.map((address, i) => ({ mac: mac(i + 1), hostname: `n${i}`, address, role: 'minion' }))];
  const { ns, logs } = await setUp(t, machines, { logQueries: true });
  const udp = DNS.UDPClient({ dns: ns.host, port: ns.port, retryOverTCP: false } as never);
  const truncated = await udp('minions.lab.k8s', 'A');
  t.equal(truncated.header.tc, 1, 'the UDP answer is truncated');
  const a = await queryA('minions.lab.k8s', ns);
  t.equal(a.transport, 'tcp');
  t.equal(a.addresses.length, 1000);
  t.same(new Set(a.addresses), new Set(addresses));
  t.ok(logs.includes('dns tcp minions.lab.k8s A NOERROR answers=1000'));
});

t.test('HTTP: /boot.ipxe chains to the per-MAC script', async (t) => {
  const { server } = await setUp(t);
  const res = await get(server, '/boot.ipxe');
  t.equal(res.status, 200);
  t.equal(res.body.toString(), `#!ipxe\nchain ${server.baseUrl}/ipxe?mac=\${net0/mac}\n`);
});

t.test('HTTP: the iPXE script of a known MAC loads the kernel, the initrd and that machine\'s seed', async (t) => {
  const { server, logs } = await setUp(t, LAB, { extraKernelArgs: ['net.ifnames=0', 'ip={address}::0.0.0.0:255.255.255.0:{hostname}:eth1:off'] });
  const base = server.baseUrl;
  const res = await get(server, '/ipxe?mac=52:54:00:AA:00:03');
  t.equal(res.status, 200);
  const script = res.body.toString();
  t.match(script, /^#!ipxe\n/);
  const kernel = script.split('\n').find((l) => l.startsWith('kernel '));
  t.ok(kernel, 'has a kernel line');
  const [, kernelUrl, ...args] = kernel!.split(' ');
  t.equal(kernelUrl, `${base}/image/vmlinuz`);
  t.ok(args.includes(`ds=nocloud-net;s=${base}/nocloud/52-54-00-aa-00-03/`), 'seed URL is one argument');
  t.ok(args.includes('console=ttyS0,115200n8'));
  t.ok(args.includes('net.ifnames=0'), 'extra kernel args are passed');
  t.ok(args.includes('ip=192.168.100.21::0.0.0.0:255.255.255.0:n1:eth1:off'), "placeholders become the machine's own values");
  t.match(script, `\ninitrd --name initrd ${base}/image/initrd\n`);
  t.match(script, /\nboot\n$/);
  t.ok(logs.includes('http 127.0.0.1 GET /ipxe?mac=52:54:00:AA:00:03 200 host=n1 role=minion'), 'logged with the machine');

  // Follow the seed URL the script names, as cloud-init would.
  const seed = args.find((a) => a.startsWith('ds='))!.split(';s=')[1]!.replace(base, '');
  const userData = await get(server, `${seed}user-data`);
  t.equal(userData.status, 200);
  t.equal(
    userData.body.toString(),
    await renderUserData({ role: 'minion', cluster: 'lab', domain: 'k8s', vars: { NAMESERVER: `127.0.0.1:${server.dnsPort}` } }),
    "user-data is the minion role user-data, pointed at this server's DNS",
  );
  const master = await get(server, '/nocloud/52-54-00-aa-00-01/user-data');
  t.match(master.body.toString(), /path: \/etc\/sysconfig\/kubernetes-masters/);
  const meta = await get(server, `${seed}meta-data`);
  t.equal(meta.body.toString(), 'instance-id: kubeseed-lab-n1\nlocal-hostname: n1\n');
  const vendor = await get(server, `${seed}vendor-data`);
  t.equal(vendor.status, 200, 'vendor-data exists (a 404 costs cloud-init retries)');
  t.equal(vendor.body.length, 0);
  const net = await get(server, `${seed}network-config`);
  t.match(net.body.toString(), /macaddress: "52:54:00:aa:00:03"\n {4}dhcp4: true/);
  t.notMatch(net.body.toString(), /nameservers:/, 'DNS on a port other than 53: glibc cannot ask it, so it is not named');
});

t.test('DNS on port 53: network-config makes it the system resolver, so the kubelet resolves the masters name', async (t) => {
  const { server } = await setUp(t, LAB, { dnsPort: 53 });
  const net = (await get(server, '/nocloud/52-54-00-aa-00-03/network-config')).body.toString();
  t.match(net, /\n {4}nameservers:\n {6}addresses: \["127\.0\.0\.1"\]\n {6}search: \["lab\.k8s"\]\n/);
});

t.test('HTTP: unknown MACs get 404 and a log line', async (t) => {
  const { server, logs } = await setUp(t);
  t.equal((await get(server, '/ipxe?mac=52:54:00:ff:ff:ff')).status, 404);
  t.equal((await get(server, '/ipxe')).status, 404);
  t.equal((await get(server, '/nocloud/52-54-00-ff-ff-ff/user-data')).status, 404);
  t.equal((await get(server, '/nocloud/52-54-00-aa-00-01/secrets')).status, 404, 'only the four seed files');
  // fetch() would normalize the dots away: send the path as written.
  const traversal = await new Promise<number | undefined>((resolve, reject) =>
    request({ host: '127.0.0.1', port: server.httpPort, path: '/image/../inventory.yaml' }, (res) => {
      res.resume();
      resolve(res.statusCode);
    })
      .on('error', reject)
      .end(),
  );
  t.equal(traversal, 404, 'nothing outside the image files');
  t.ok(logs.includes('http 127.0.0.1 GET /ipxe?mac=52:54:00:ff:ff:ff 404 unknown-mac="52:54:00:ff:ff:ff"'));
  t.ok(logs.includes('http 127.0.0.1 GET /nocloud/52-54-00-ff-ff-ff/user-data 404 unknown-mac="52-54-00-ff-ff-ff"'));
});

t.test('HTTP: kernel and initrd with range requests', async (t) => {
  const { server, logs } = await setUp(t);
  const whole = await get(server, '/image/vmlinuz');
  t.equal(whole.status, 200);
  t.equal(whole.headers.get('accept-ranges'), 'bytes');
  t.ok(whole.body.equals(KERNEL));
  const part = await get(server, '/image/vmlinuz', { Range: 'bytes=1000-1999' });
  t.equal(part.status, 206);
  t.equal(part.headers.get('content-range'), `bytes 1000-1999/${KERNEL.length}`);
  t.ok(part.body.equals(KERNEL.subarray(1000, 2000)));
  const tail = await get(server, '/image/vmlinuz', { Range: 'bytes=-100' });
  t.equal(tail.status, 206);
  t.ok(tail.body.equals(KERNEL.subarray(KERNEL.length - 100)));
  const open = await get(server, '/image/vmlinuz', { Range: 'bytes=69990-' });
  t.ok(open.body.equals(KERNEL.subarray(69990)));
  const past = await get(server, '/image/vmlinuz', { Range: `bytes=${KERNEL.length}-` });
  t.equal(past.status, 416);
  t.equal(past.headers.get('content-range'), `bytes */${KERNEL.length}`);
  const initrd = await get(server, '/image/initrd');
  t.equal(initrd.body.toString(), 'initrd bytes\n');
  t.ok(logs.includes(`http 127.0.0.1 GET /image/vmlinuz 206 bytes=1000-1999/${KERNEL.length}`));
});

t.test('reload: a new inventory is served at once; a bad one keeps the old and says why', async (t) => {
  const { server, inventory, ns, logs } = await setUp(t);
  await writeFile(inventory, inventoryYaml('lab', [...LAB, { mac: '52:54:00:aa:00:04', hostname: 'n2', address: '192.168.100.22', role: 'minion' }]));
  await server.reload();
  t.same((await queryA('minions.lab.k8s', ns)).addresses, ['192.168.100.21', '192.168.100.22']);
  t.equal((await get(server, '/ipxe?mac=52:54:00:aa:00:04')).status, 200);

  await writeFile(inventory, inventoryYaml('lab', [...LAB, { mac: '52:54:00:aa:00:05', hostname: 'n3', address: '192.168.100.23', role: 'boss' }]));
  await t.rejects(server.reload(), { name: 'InputError', message: /unknown role "boss"/ });
  t.same((await queryA('minions.lab.k8s', ns)).addresses, ['192.168.100.21', '192.168.100.22'], 'still the previous zone');
  t.equal((await get(server, '/ipxe?mac=52:54:00:aa:00:04')).status, 200);
  t.ok(logs.some((l) => l.startsWith('metal reload failed, still serving the previous inventory: ') && l.includes('inventory.yaml:5: unknown role')));
});

t.test('advertise address goes into every URL and into NAMESERVER', async (t) => {
  const { server } = await setUp(t, LAB, { advertise: '10.0.2.2' });
  t.equal(server.baseUrl, `http://10.0.2.2:${server.httpPort}`);
  t.match((await get(server, '/ipxe?mac=52:54:00:aa:00:01')).body.toString(), `ds=nocloud-net;s=http://10.0.2.2:${server.httpPort}/nocloud/52-54-00-aa-00-01/`);
  const master = (await get(server, '/nocloud/52-54-00-aa-00-01/user-data')).body.toString();
  t.match(master, `NAMESERVER="10.0.2.2:${server.dnsPort}"`);
  t.notMatch(master, 'MASTER_COUNT', 'one master: MASTER_COUNT unset, as before');
});

t.test('three masters in the inventory: every node is told MASTER_COUNT=3', async (t) => {
  const three: Entry[] = [
    ...['11', '12', '13'].map((n, i) => ({ mac: `52:54:00:aa:01:0${i + 1}`, hostname: `m${i + 1}`, address: `192.168.100.${n}`, role: 'master' as const })),
    LAB[1]!,
  ];
  const { server, ns } = await setUp(t, three);
  t.same((await queryA('masters.lab.k8s', ns)).addresses.sort(), ['192.168.100.11', '192.168.100.12', '192.168.100.13']);
  for (const m of three.slice(0, 3)) t.match((await get(server, `/nocloud/${m.mac.replaceAll(':', '-')}/user-data`)).body.toString(), 'MASTER_COUNT="3"', `${m.hostname}`);
  t.match((await get(server, '/nocloud/52-54-00-aa-00-03/user-data')).body.toString(), 'MASTER_COUNT="3"', 'the minion too');
});

t.test('bad options are refused before anything listens', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'metal-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const inventory = path.join(dir, 'inventory.yaml');
  await writeFile(inventory, inventoryYaml('lab', LAB));
  await t.rejects(startMetalServer({ inventory, imageDir: dir, listen: '0.0.0.0', dnsPort: 0, httpPort: 0 }), { message: /--advertise/ });
  await t.rejects(startMetalServer({ inventory, imageDir: dir, dnsPort: 0, httpPort: 0, extraKernelArgs: ['a ${x}'] }), { message: /kernel argument/ });
  await t.rejects(startMetalServer({ inventory, imageDir: dir, dnsPort: 0, httpPort: 0, secretsDir: path.join(dir, 'no-secrets') }), {
    name: 'InputError',
    message: /cannot read secret/,
  });
  await t.rejects(startMetalServer({ inventory, imageDir: dir, dnsPort: 0, httpPort: 0, userDataVars: { 'bad key': 'x' } }), { message: /invalid variable name "bad key"/ });
  await writeFile(inventory, 'cluster: lab\nmachines:\n  - {mac: nope, hostname: a, address: 10.0.0.1, role: master}\n');
  await t.rejects(startMetalServer({ inventory, imageDir: dir, dnsPort: 0, httpPort: 0 }), { name: 'InputError', line: 3 });
});

t.test('with --secrets, each role gets its share of the secrets in user-data, and no secret reaches the log', async (t) => {
  const secrets = await mkdtemp(path.join(tmpdir(), 'metal-secrets-'));
  t.teardown(() => rm(secrets, { recursive: true, force: true }));
  for (const { name } of SECRET_FILES) await writeFile(path.join(secrets, name), `SECRET-${name}-CONTENT\n`);
  writeServingCert(secrets, 'DNS:masters.lab.k8s');
  const { server, logs } = await setUp(t, LAB, { secretsDir: secrets });
  const master = (await get(server, '/nocloud/52-54-00-aa-00-01/user-data')).body.toString();
  const minion = (await get(server, '/nocloud/52-54-00-aa-00-03/user-data')).body.toString();
  t.match(master, 'SECRET-ca.key-CONTENT', 'the master gets the CA key');
  t.notMatch(minion, 'SECRET-ca.key-CONTENT', 'a minion does not');
  t.match(minion, 'SECRET-bootstrap-token-CONTENT', 'a minion gets its bootstrap token');
  t.notMatch(logs.join('\n'), /SECRET-/);

  await rm(path.join(secrets, 'ca.key'));
  const broken = await get(server, '/nocloud/52-54-00-aa-00-01/user-data');
  t.equal(broken.status, 500, 'a missing secret is a server error, not a user-data without it');
  t.ok(logs.some((l) => l.includes('GET /nocloud/52-54-00-aa-00-01/user-data 500') && l.includes('cannot read secret ca.key')), 'and the log says which');
});
