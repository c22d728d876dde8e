import t from 'tap';
import { parseInventory, inventoryZone, machineByMac, normalizeMac } from '../scripts/metal/inventory.js';
import { InputError } from '../agent/errors.js';
import { parse } from 'yaml';
import { networkConfig } from '../scripts/metal/boot-files.js';

const GOOD = `# the lab
cluster: demo
domain: lab.k8s
machines:
  - mac: 52:54:00:00:00:01
    hostname: m1
    address: 10.0.0.1
    role: master
  - {mac: 52-54-00-00-00-0A, hostname: N1, address: 10.0.0.2, role: minion}
  - {mac: 52:54:00:00:00:0b, hostname: n2, address: 10.0.0.3, role: minion}
`;

t.test('a valid inventory: normalized MACs and hostnames, line numbers, zone', async (t) => {
  const inv = parseInventory(GOOD, 'inv.yaml');
  t.equal(inv.cluster, 'demo');
  t.equal(inv.domain, 'lab.k8s');
  t.same(
    inv.machines.map((m) => [m.mac, m.hostname, m.address, m.role, m.line]),
    [
      ['52:54:00:00:00:01', 'm1', '10.0.0.1', 'master', 5],
      ['52:54:00:00:00:0a', 'n1', '10.0.0.2', 'minion', 9],
      ['52:54:00:00:00:0b', 'n2', '10.0.0.3', 'minion', 10],
    ],
  );
  t.equal(machineByMac(inv, '52-54-00-00-00-0A')?.hostname, 'n1', 'lookup accepts either MAC form and case');
  t.equal(machineByMac(inv, 'garbage'), undefined);
  const zone = inventoryZone(inv, 30);
  t.equal(zone.origin, 'demo.lab.k8s');
  t.same(zone.records.get('masters.demo.lab.k8s'), ['10.0.0.1']);
  t.same(zone.records.get('minions.demo.lab.k8s'), ['10.0.0.2', '10.0.0.3']);
  t.same(zone.records.get('n2.demo.lab.k8s'), ['10.0.0.3'], 'each host has its own name too');
  t.equal(normalizeMac('52:54:00:00:00'), undefined);
});

t.test('domain defaults to k8s; a role with no machines is an empty name, not a missing one', async (t) => {
  const inv = parseInventory('cluster: Demo\nmachines:\n  - {mac: "52:54:00:00:00:01", hostname: m1, address: 10.0.0.1, role: master}\n', 'i');
  t.equal(inv.domain, 'k8s');
  t.equal(inv.cluster, 'demo');
  t.same(inventoryZone(inv, 5).records.get('minions.demo.k8s'), []);
});

t.test('static network block', async (t) => {
  const inv = parseInventory(`cluster: demo\nnetwork: {prefix: 24, gateway: 10.0.0.254}\nmachines: []\n`, 'i');
  t.same(inv.network, { prefix: 24, gateway: '10.0.0.254' });
});

const machine = (fields: string) => `cluster: demo\nmachines:\n  - {mac: "52:54:00:00:00:01", hostname: m1, address: 10.0.0.1, role: master}\n  - ${fields}\n`;
const BAD: [string, string, number, RegExp][] = [
  ['duplicate MAC', machine('{mac: "52-54-00-00-00-01", hostname: m2, address: 10.0.0.2, role: minion}'), 4, /duplicate MAC 52:54:00:00:00:01 \(first used on line 3\)/],
  ['duplicate hostname', machine('{mac: "52:54:00:00:00:02", hostname: M1, address: 10.0.0.2, role: minion}'), 4, /duplicate hostname m1/],
  ['duplicate address', machine('{mac: "52:54:00:00:00:02", hostname: m2, address: 10.0.0.1, role: minion}'), 4, /duplicate address 10\.0\.0\.1/],
  ['unknown role', machine('{mac: "52:54:00:00:00:02", hostname: m2, address: 10.0.0.2, role: worker}'), 4, /unknown role "worker" \(expected master or minion\)/],
  ['bad MAC', machine('{mac: "52:54:00:00:02", hostname: m2, address: 10.0.0.2, role: minion}'), 4, /bad MAC address "52:54:00:00:02"/],
  ['bad address', machine('{mac: "52:54:00:00:00:02", hostname: m2, address: 10.0.0.256, role: minion}'), 4, /bad address "10\.0\.0\.256"/],
  ['IPv6 address', machine('{mac: "52:54:00:00:00:02", hostname: m2, address: "::1", role: minion}'), 4, /bad address "::1" \(expected an IPv4 address\)/],
  ['bad hostname', machine('{mac: "52:54:00:00:00:02", hostname: "m_2", address: 10.0.0.2, role: minion}'), 4, /bad hostname "m_2"/],
  ['reserved hostname', machine('{mac: "52:54:00:00:00:02", hostname: masters, address: 10.0.0.2, role: minion}'), 4, /would shadow/],
  ['missing field', machine('{mac: "52:54:00:00:00:02", hostname: m2, role: minion}'), 4, /missing address/],
  ['typo in a key', machine('{mac: "52:54:00:00:00:02", hostname: m2, adress: 10.0.0.2, role: minion}'), 4, /unknown key "adress"/],
  ['bad cluster label', 'domain: k8s\ncluster: "demo;rm -rf"\nmachines: []\n', 2, /cluster must be a DNS label/],
  ['missing cluster', 'machines: []\n', 1, /cluster is required/],
  ['bad domain', 'cluster: demo\ndomain: "a..b"\nmachines: []\n', 2, /domain must be a DNS name/],
  ['machines not a list', 'cluster: demo\nmachines: {}\n', 2, /machines must be a list/],
  ['bad prefix', 'cluster: demo\nnetwork:\n  prefix: 33\nmachines: []\n', 3, /network.prefix must be 1..32/],
  ['YAML syntax', 'cluster: demo\nmachines: [\n  {mac: x\n', 4, /not valid YAML/],
];

for (const [what, text, line, message] of BAD) {
  t.test(`error names the line: ${what}`, async (t) => {
    const err = (() => {
      try {
        parseInventory(text, 'inv.yaml');
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    t.type(err, InputError);
    const e = err as InputError;
    t.match(e.message, message);
    t.equal(e.line, line, `line of: ${e.describe()}`);
    t.match(e.describe(), new RegExp(`^inv\\.yaml:${line}: `));
  });
}

t.test('metal network-config points the system resolver at the metal DNS server, so the kubelet resolves the masters name', async (t) => {
  const inv = parseInventory('cluster: demo\ndomain: lab.k8s\nnetwork: {prefix: 24, gateway: 10.0.0.254}\nmachines:\n  - {mac: "52:54:00:00:00:01", hostname: m1, address: 10.0.0.1, role: master}\n', 'i');
  const machine = inv.machines[0]!;
  const cfg = (ns?: { host: string; port: number }) => parse(networkConfig(inv, machine, ns)).ethernets.boot;
  t.same(cfg({ host: '10.0.0.250', port: 53 }).nameservers, { addresses: ['10.0.0.250'], search: ['demo.lab.k8s'] });
  t.same(cfg({ host: '10.0.0.250', port: 53 }).addresses, ['10.0.0.1/24'], 'the static address is still there');
  const dhcp = parseInventory('cluster: demo\nmachines: []\n', 'i');
  t.same(parse(networkConfig(dhcp, machine, { host: '10.0.0.250', port: 53 })).ethernets.boot.nameservers.addresses, ['10.0.0.250'], 'with DHCP too');
  t.equal(cfg({ host: '10.0.0.250', port: 5353 }).nameservers, undefined, 'glibc asks port 53 only: a server elsewhere cannot be named');
  t.equal(cfg().nameservers, undefined);
});
