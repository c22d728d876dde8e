// The bare-metal server as a library: one inventory drives the cluster's DNS zone and everything a
// PXE-booting machine fetches over HTTP. The CLI (`npm run metal -- serve`) and the local cluster both
// start it from here. The inventory lives in one variable that a reload replaces whole, so requests in
// flight finish with the inventory they started with and none is dropped.
import { isIP } from 'node:net';
import { renderUserData } from '../../cloud-init/render.js';
import { InputError, describeError } from '../../agent/errors.js';
import { checkKernelArg, kernelCommandLine, KERNEL_COMMAND_LINE_MAX, networkConfig } from './boot-files.js';
import type { DnsCounters, DnsLimits } from './dns-server.js';
import type { Zone } from './dns-wire.js';
import { startDnsService } from './dns-workers.js';
import { startHttpServer, type HttpServer } from './http-server.js';
import { inventoryZone, loadInventory, mastersVar, type Inventory, type Machine } from './inventory.js';
import { ROLES, type Role } from '../../agent/dns-names.js';

export interface MetalServerOptions {
  /** Path to the inventory YAML; re-read by `reload()`. */
  inventory: string;
  /** Holds `vmlinuz` and `initrd` (what `npm run image` writes to out/image). */
  imageDir: string;
  /** Address both servers bind to. */
  listen?: string;
  /**
   * Address machines reach us at, put into every URL and into NAMESERVER (default: `listen`).
   * QEMU user networking reaches the host's loopback as 10.0.2.2.
   */
  advertise?: string;
  /** 0 picks a free port. */
  dnsPort?: number;
  httpPort?: number;
  /**
   * Appended to every machine's kernel command line (one word each); `{address}`, `{hostname}`,
   * `{mac}` and `{role}` become the machine's own.
   */
  extraKernelArgs?: readonly string[];
  /** Extra role-file variables in every machine's user-data (NAMESERVER is set by us unless given here). */
  userDataVars?: Record<string, string>;
  /** `npm run secrets` output: each role's secrets go into its user-data. */
  secretsDir?: string;
  /** Answer TTL of the DNS zone, seconds. */
  ttl?: number;
  /** One line per request and per reload; default stdout. */
  log?: (line: string) => void;
  /** One line per DNS query too (off by default: a busy zone answers tens of thousands a second). */
  logQueries?: boolean;
  /** DNS caps; `queriesPerSecond` defaults to 1000 per source address here. */
  dnsLimits?: DnsLimits;
  /**
   * DNS answered by this process and this many worker processes sharing its sockets (dns-workers.ts);
   * 0 (the default): this process alone. Workers run this process's main script, which must hand over
   * to runDnsWorker() when isDnsWorker() (scripts/metal.ts does).
   */
  dnsWorkers?: number;
  /** A full garbage collection of this process, for the DNS service to run when a burst of TCP hand-overs is over. */
  collectGarbage?: () => void;
}

export interface MetalServer {
  httpPort: number;
  dnsPort: number;
  /** `http://ADVERTISE:HTTPPORT`: what machines are told to fetch from. */
  baseUrl: string;
  /** The inventory being served now. */
  inventory(): Inventory;
  /** Re-read the inventory file; a bad file rejects with its InputError and the old inventory stays. */
  reload(): Promise<Inventory>;
  /** The DNS server's counters since start (every worker's, added up). */
  dnsCounters(): Promise<DnsCounters>;
  close(): Promise<void>;
}

interface ServingAt {
  listen: string;
  httpPort: number;
  dnsPort: number;
  advertise: string;
}

/** The end of the "metal serving" line: where the server listens, ports included (0 picks them at start). */
function servingAt(at: ServingAt): string {
  return `http=${at.listen}:${at.httpPort} dns=${at.listen}:${at.dnsPort} advertise=${at.advertise}`;
}

/** What machines are told to fetch from. */
export const baseUrlOf = (advertise: string, httpPort: number) => `http://${advertise}:${httpPort}`;

/** A "metal serving" line read back: how `cluster up` learns the ports of the `metal serve` process it started. */
export function parseServingLine(line: string): ServingAt | undefined {
  const m = /^metal serving .* http=(\S+):(\d+) dns=\S+:(\d+) advertise=(\S+)$/.exec(line);
  return m ? { listen: m[1]!, httpPort: Number(m[2]), dnsPort: Number(m[3]), advertise: m[4]! } : undefined;
}

export async function startMetalServer(opts: MetalServerOptions): Promise<MetalServer> {
  const listen = opts.listen ?? '127.0.0.1';
  const advertise = opts.advertise ?? listen;
  const log = opts.log ?? ((line: string) => console.log(line));
  if (isIP(advertise) !== 4 || advertise === '0.0.0.0') {
    throw new InputError(`the advertised address must be an IPv4 address machines can reach, got ${JSON.stringify(advertise)} (set --advertise)`, {
      value: advertise,
    });
  }
  for (const arg of opts.extraKernelArgs ?? []) {
    const problem = checkKernelArg(arg);
    if (problem) throw new InputError(`kernel argument ${JSON.stringify(arg)} ${problem}`, { value: arg });
  }
  const ttl = opts.ttl ?? 30;

  let inventory = await loadInventory(opts.inventory);
  let zone = withNameserver(inventoryZone(inventory, ttl), advertise);
  // Every node learns how many masters the inventory has (MASTER_COUNT): etcd forms, and Weave's
  // consensus is set, only once DNS lists them all.
  const userData = (role: Role, current: Inventory, dnsPort: number) =>
    renderUserData({
      role,
      cluster: current.cluster,
      domain: current.domain,
      vars: { NAMESERVER: `${advertise}:${dnsPort}`, ...mastersVar(current), ...opts.userDataVars },
      ...(opts.secretsDir !== undefined && { secretsDir: opts.secretsDir }),
    });
  // A bad --secrets directory or user-data variable is found now, not when the first machine boots.
  for (const role of ROLES) await userData(role, inventory, opts.dnsPort || 53);
  checkCommandLines(inventory, `http://${advertise}:${opts.httpPort || 65535}`, advertise, opts.extraKernelArgs ?? []);

  const dns = await startDnsService({
    zone,
    address: listen,
    port: opts.dnsPort ?? 53,
    log,
    limits: { queriesPerSecond: 1000, ...opts.dnsLimits },
    workers: opts.dnsWorkers ?? 0,
    logQueries: opts.logQueries ?? false,
    ...(opts.collectGarbage && { collectGarbage: opts.collectGarbage }),
  });
  let http: HttpServer;
  try {
    http = await startHttpServer({
      address: listen,
      port: opts.httpPort ?? 8080,
      imageDir: opts.imageDir,
      log,
      state: () => {
        const current = inventory;
        return {
          inventory: current,
          baseUrl,
          extraKernelArgs: opts.extraKernelArgs ?? [],
          nameserver: { host: advertise, port: dns.port },
          userData: (machine: Machine) => userData(machine.role, current, dns.port),
        };
      },
    });
  } catch (err) {
    await dns.close();
    throw err;
  }
  const baseUrl = baseUrlOf(advertise, http.port);
  log(`metal serving cluster=${inventory.cluster} domain=${inventory.domain} machines=${inventory.machines.length} ${servingAt({ listen, httpPort: http.port, dnsPort: dns.port, advertise })}`);

  return {
    httpPort: http.port,
    dnsPort: dns.port,
    baseUrl,
    inventory: () => inventory,
    dnsCounters: () => dns.counters(),
    async reload() {
      try {
        const next = await loadInventory(opts.inventory);
        inventory = next;
        zone = withNameserver(inventoryZone(next, ttl), advertise);
        await dns.setZone(zone);
        log(`metal reloaded cluster=${next.cluster} domain=${next.domain} machines=${next.machines.length}`);
        return next;
      } catch (err) {
        log(`metal reload failed, still serving the previous inventory: ${describeError(err)}`);
        throw err;
      }
    },
    async close() {
      await Promise.all([http.close(), dns.close()]);
    },
  };
}

/** `ns.<zone>`, the SOA's primary, is us. */
function withNameserver(zone: Zone, advertise: string): Zone {
  const records = new Map(zone.records);
  records.set(`ns.${zone.origin}`, [advertise]);
  return { ...zone, records };
}

/**
 * A kernel command line past the kernel's limit loses its tail without a word, and with it the seed or the
 * cluster's config: refused at start instead, naming the machine. The inventory's values are bounded (MAC,
 * hostname of at most 63, address), so a reloaded inventory stays within a few bytes of what was checked here.
 */
function checkCommandLines(inventory: Inventory, baseUrl: string, advertise: string, extraKernelArgs: readonly string[]): void {
  for (const machine of inventory.machines) {
    const line = kernelCommandLine(baseUrl, machine, networkConfig(inventory, machine, { host: advertise, port: 53 }), extraKernelArgs);
    if (line.length > KERNEL_COMMAND_LINE_MAX) {
      throw new InputError(
        `${machine.hostname}: its kernel command line would be ${line.length} bytes, over the kernel's ${KERNEL_COMMAND_LINE_MAX} (shorten the --kernel-arg values)`,
        { value: machine.hostname },
      );
    }
  }
}
