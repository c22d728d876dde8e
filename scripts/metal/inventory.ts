// The bare-metal inventory: the one file that says which machine (by MAC) is which node. The PXE
// scripts, the NoCloud seeds and the cluster's DNS zone are all derived from it, so a mistake here
// is reported with the line it is on and nothing is served from a half-valid file.
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node as YamlNode, type YAMLMap } from 'yaml';
import { DEFAULT_DNS_DOMAIN, isDnsLabel, isDnsName, roleRecordName, ROLES, zoneName, type Role } from '../../agent/dns-names.js';
import { InputError } from '../../agent/errors.js';
import { masterCountVars } from '../../agent/weave-consensus.js';
import type { Zone } from './dns-server.js';

export interface Machine {
  /** Lower-case, colon-separated: `52:54:00:12:34:56`. */
  mac: string;
  hostname: string;
  address: string;
  role: Role;
  /** Where the entry starts in the inventory file, for messages about it. */
  line: number;
}

/** A static address for every machine's boot NIC; without it the NIC keeps using DHCP. */
export interface StaticNetwork {
  prefix: number;
  gateway?: string;
}

export interface Inventory {
  file: string;
  cluster: string;
  domain: string;
  network?: StaticNetwork;
  machines: Machine[];
}

const MACHINE_KEYS = ['mac', 'hostname', 'address', 'role'] as const;
const TOP_KEYS = ['cluster', 'domain', 'network', 'machines'];
const NETWORK_KEYS = ['prefix', 'gateway'];
/** Names the zone itself publishes: `masters.`, `minions.`, and `ns.` (the SOA's primary). */
const RESERVED_HOSTNAMES = [...ROLES.map((r) => `${r}s`), 'ns'];

/** `52:54:00:AB:cd:ef` or `52-54-00-ab-cd-ef` → `52:54:00:ab:cd:ef`; undefined when it is not a MAC. */
export function normalizeMac(text: string): string | undefined {
  return /^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$/i.test(text) ? text.toLowerCase().replaceAll('-', ':') : undefined;
}

export function parseInventory(text: string, file: string): Inventory {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true });
  const lineOf = (node: YamlNode | null | undefined) => (node?.range ? lines.linePos(node.range[0]).line : undefined);
  const fail = (message: string, node?: YamlNode | null, value?: unknown): never => {
    throw new InputError(message, { file, line: lineOf(node), value: value === undefined ? undefined : String(value) });
  };
  const syntax = doc.errors[0];
  if (syntax) throw new InputError(`not valid YAML: ${syntax.message.split(/ at line \d/)[0]}`, { file, line: syntax.linePos?.[0].line });
  const root = doc.contents;
  if (!isMap(root)) return fail('expected a mapping with cluster, domain and machines', root);

  checkKeys(root, TOP_KEYS, fail);
  const scalar = (map: YAMLMap, key: string, what: string): { text: string; node: YamlNode } | undefined => {
    const node = map.get(key, true) as YamlNode | undefined;
    if (node === undefined || (isScalar(node) && node.value === null)) return undefined;
    if (!isScalar(node) || typeof node.value === 'object') return fail(`${what} must be a single value`, node ?? map);
    return { text: String(node.value).trim(), node };
  };

  const cluster = scalar(root, 'cluster', 'cluster') ?? fail('cluster is required', root);
  if (!isDnsLabel(cluster.text)) fail(`cluster must be a DNS label (letters, digits, '-'), got ${JSON.stringify(cluster.text)}`, cluster.node, cluster.text);
  const domain = scalar(root, 'domain', 'domain');
  if (domain && !isDnsName(domain.text)) fail(`domain must be a DNS name, got ${JSON.stringify(domain.text)}`, domain.node, domain.text);

  let network: StaticNetwork | undefined;
  const networkNode = root.get('network', true) as YamlNode | undefined;
  if (networkNode !== undefined) {
    if (!isMap(networkNode)) return fail('network must be a mapping with prefix and an optional gateway', networkNode);
    checkKeys(networkNode, NETWORK_KEYS, fail);
    const prefix = scalar(networkNode, 'prefix', 'network.prefix') ?? fail('network.prefix is required', networkNode);
    const bits = Number(prefix.text);
    if (!/^\d+$/.test(prefix.text) || bits < 1 || bits > 32) fail(`network.prefix must be 1..32, got ${JSON.stringify(prefix.text)}`, prefix.node, prefix.text);
    const gateway = scalar(networkNode, 'gateway', 'network.gateway');
    if (gateway && isIP(gateway.text) !== 4) fail(`network.gateway must be an IPv4 address, got ${JSON.stringify(gateway.text)}`, gateway.node, gateway.text);
    network = gateway ? { prefix: bits, gateway: gateway.text } : { prefix: bits };
  }

  const list = root.get('machines', true) as YamlNode | undefined;
  if (list === undefined || (isScalar(list) && list.value === null)) return fail('machines is required (a list of {mac, hostname, address, role})', root);
  if (!isSeq(list)) return fail('machines must be a list of {mac, hostname, address, role}', list);

  const machines: Machine[] = [];
  const seen = { mac: new Map<string, number>(), hostname: new Map<string, number>(), address: new Map<string, number>() };
  for (const item of list.items as YamlNode[]) {
    if (!isMap(item)) return fail('each machine must be a mapping with mac, hostname, address and role', item);
    checkKeys(item, MACHINE_KEYS, fail);
    const field = (key: (typeof MACHINE_KEYS)[number]) => scalar(item, key, key) ?? fail(`machine is missing ${key}`, item);
    const mac = field('mac');
    const hostname = field('hostname');
    const address = field('address');
    const role = field('role');
    const macText = normalizeMac(mac.text) ?? fail(`bad MAC address ${JSON.stringify(mac.text)} (expected six hex pairs like 52:54:00:12:34:56)`, mac.node, mac.text);
    if (!isDnsLabel(hostname.text)) fail(`bad hostname ${JSON.stringify(hostname.text)} (expected one DNS label)`, hostname.node, hostname.text);
    if (RESERVED_HOSTNAMES.includes(hostname.text.toLowerCase()))
      fail(`hostname ${JSON.stringify(hostname.text)} would shadow the zone's own ${hostname.text.toLowerCase()}. name`, hostname.node, hostname.text);
    if (isIP(address.text) !== 4) fail(`bad address ${JSON.stringify(address.text)} (expected an IPv4 address)`, address.node, address.text);
    if (!(ROLES as readonly string[]).includes(role.text)) fail(`unknown role ${JSON.stringify(role.text)} (expected ${ROLES.join(' or ')})`, role.node, role.text);
    const machine: Machine = {
      mac: macText,
      hostname: hostname.text.toLowerCase(),
      address: address.text,
      role: role.text as Role,
      line: lineOf(item) ?? 0,
    };
    for (const [key, node] of [['mac', mac.node], ['hostname', hostname.node], ['address', address.node]] as const) {
      const first = seen[key].get(machine[key]);
      if (first !== undefined) fail(`duplicate ${key === 'mac' ? 'MAC' : key} ${machine[key]} (first used on line ${first})`, node, machine[key]);
      seen[key].set(machine[key], lineOf(node) ?? 0);
    }
    machines.push(machine);
  }
  return { file, cluster: cluster.text.toLowerCase(), domain: (domain?.text ?? DEFAULT_DNS_DOMAIN).toLowerCase(), ...(network && { network }), machines };
}

function checkKeys(map: YAMLMap, allowed: readonly string[], fail: (message: string, node?: YamlNode | null, value?: unknown) => never): void {
  for (const pair of map.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : undefined;
    if (key === undefined || !allowed.includes(key))
      fail(`unknown key ${JSON.stringify(key ?? '?')} (expected one of ${allowed.join(', ')})`, pair.key as YamlNode, key);
  }
}

export async function loadInventory(file: string): Promise<Inventory> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new InputError(`cannot read the inventory: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { file });
  }
  return parseInventory(text, file);
}

/** MASTER_COUNT for every node's role file: how many masters the inventory has (unset for one, the default). */
export function mastersVar(inventory: Inventory): Record<string, string> {
  return masterCountVars(Math.max(1, inventory.machines.filter((m) => m.role === 'master').length));
}

export function machineByMac(inventory: Inventory, mac: string): Machine | undefined {
  const wanted = normalizeMac(mac);
  return wanted === undefined ? undefined : inventory.machines.find((m) => m.mac === wanted);
}

/** The zone the cluster's DNS server answers from: masters./minions. from the roles, one name per host. */
export function inventoryZone(inventory: Inventory, ttl: number): Zone {
  const records = new Map<string, string[]>();
  const add = (name: string, address: string) => records.set(name, [...(records.get(name) ?? []), address]);
  // Both role names exist even when empty: "no minions yet" is an empty answer, not "no such name".
  for (const role of ROLES) records.set(roleRecordName(role, inventory.cluster, inventory.domain), []);
  for (const m of inventory.machines) {
    add(roleRecordName(m.role, inventory.cluster, inventory.domain), m.address);
    add(`${m.hostname}.${zoneName(inventory.cluster, inventory.domain)}`, m.address);
  }
  return { origin: zoneName(inventory.cluster, inventory.domain), records, ttl };
}
