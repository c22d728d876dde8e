// The metal DNS server in several processes: this one (the server in the PID file) binds the UDP socket
// and the TCP port and answers on them, and node:cluster workers answer as well, so queries are answered
// on every core (one Node process is latency-bound on its event loop and pays several times dnsmasq's
// CPU per packet; measured in the README's bench section). Each worker gets a copy of the UDP socket (all
// read the one socket: whichever process is free takes the next datagram) and every Nth TCP connection,
// handed over unread as it is accepted. This process sends each worker the zone and every new one, sums
// the counters and stops them. The zone crosses as plain data and each process builds its own wire
// answers (dns-wire.ts) from it. This process answering too, rather than only supervising, is one Node
// process fewer for the same number answering: its memory is the bench's (10,000 idle connections).
//
// The caps are split evenly over the P answering processes: each holds at most ceil(max-tcp / P)
// connections (connections are handed out in turn, so together they hold about max-tcp) and lets one
// source send ceil(rate / P) queries a second (a source's queries go to whichever process reads them
// first, so it gets at most its rate in all, and may be cut off a little before it when one reads most).
import cluster, { type Worker } from 'node:cluster';
import type * as dgram from 'node:dgram';
import type * as net from 'node:net';
import { queryLine, serveSharedDns, startDnsServer, type DnsCounters, type DnsLimits, type DnsQueryEvent, type SharedDnsServer } from './dns-server.js';
import type { Zone } from './dns-wire.js';

/** The DNS service as the metal server drives it, in this process and its workers. */
export interface DnsService {
  port: number;
  /** Served from the next query on; resolves once every process has it. */
  setZone(zone: Zone): Promise<void>;
  /** Summed over the processes. */
  counters(): Promise<DnsCounters>;
  /** Idle TCP connections closed at once, the rest given a moment; resolves when every worker has exited. */
  close(): Promise<void>;
}

export interface DnsServiceOptions {
  zone: Zone;
  address: string;
  port: number;
  limits: DnsLimits;
  /** Worker processes answering beside this one; 0: this one alone. */
  workers: number;
  /** One line per query (`queryLine`): through `log` in this process, on a worker's stdout from a worker. */
  logQueries: boolean;
  log: (line: string) => void;
  /** A full garbage collection of this process (`metal serve` passes one), run once a burst of hand-overs is over. */
  collectGarbage?: () => void;
}

/**
 * A burst of TCP connections handed to the workers is over once HAND_OFFS_SETTLED_MS pass without one.
 * Each hand-over leaves its socket object and IPC messages behind as garbage in the old generation (they
 * wait in the queue for the worker's acknowledgement, longer than the 1 MB young generation lives), and
 * V8 collects it only as that generation grows: with 10,000 idle connections (5,000 handed over) this
 * process measured 36.7-49.3 MB anonymous memory as the last one opened, and 23.8-24.7 after the
 * collection (smaps, three runs; all the server's processes 65.7-76.7 MB PSS, then 51.5-52.2).
 * Fewer than BURST hand-overs are not worth a collection.
 */
const HAND_OFFS_SETTLED_MS = 1000;
const BURST = 100;

interface WireZone {
  origin: string;
  ttl: number;
  records: [string, readonly string[]][];
}

type ToWorker =
  /** Sent with the UDP socket. */
  | { kind: 'start'; zone: WireZone; limits: DnsLimits; logQueries: boolean }
  /** Sent with a TCP connection to serve. */
  | { kind: 'tcp' }
  | { kind: 'zone'; id: number; zone: WireZone }
  | { kind: 'counters'; id: number }
  | { kind: 'stop'; id: number };

type FromWorker =
  /** Listening for our messages: one sent before is lost (a preloaded module can delay the worker's own code). */
  | { kind: 'ready' }
  | { kind: 'serving' }
  | { kind: 'failed'; error: string }
  | { kind: 'done'; id: number; counters?: DnsCounters };

/** Set in the environment of the metal server's own workers. */
const WORKER_ENV = 'KUBESEED_DNS_WORKER';

/**
 * One glibc malloc arena in a worker (an operator's own setting wins): with one per thread, V8's helper
 * threads each keep memory they freed. Holding 10,000 idle connections each worker measured 21.8-22.3 MB
 * anonymous memory against 23.6-24.4 without (smaps, three runs each; a fixed trim threshold as well changed nothing in one run).
 */
const WORKER_MALLOC = { MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '1' };

const toWire = (zone: Zone): WireZone => ({ origin: zone.origin, ttl: zone.ttl, records: [...zone.records] });
const fromWire = (zone: WireZone): Zone => ({ origin: zone.origin, ttl: zone.ttl, records: new Map(zone.records) });

/** One process's share of a cap: the caps hold for the server as a whole (0, no cap, stays 0). */
export const share = (cap: number | undefined, processes: number): number | undefined => (cap === undefined || cap === 0 ? cap : Math.ceil(cap / processes));

export function emptyCounters(): DnsCounters {
  return {
    queries: 0,
    answers: {},
    dropped: { response: 0, malformed: 0, rateLimited: 0, badSource: 0, sendFailed: 0 },
    tcp: { open: 0, accepted: 0, refused: 0, idleClosed: 0 },
  };
}

/** The server's counters: every process's added up, key by key. */
export function sumCounters(all: readonly DnsCounters[]): DnsCounters {
  const sum = emptyCounters();
  for (const c of all) {
    sum.queries += c.queries;
    for (const [rcode, n] of Object.entries(c.answers)) sum.answers[rcode] = (sum.answers[rcode] ?? 0) + n;
    for (const key of Object.keys(sum.dropped) as (keyof DnsCounters['dropped'])[]) sum.dropped[key] += c.dropped[key];
    for (const key of Object.keys(sum.tcp) as (keyof DnsCounters['tcp'])[]) sum.tcp[key] += c.tcp[key];
  }
  return sum;
}

/** True in a process the DNS service forked: it should call runDnsWorker() and nothing else. */
export const isDnsWorker = (): boolean => cluster.isWorker && process.env[WORKER_ENV] === '1';

export async function startDnsService(opts: DnsServiceOptions): Promise<DnsService> {
  const processes = opts.workers + 1;
  const limits: DnsLimits = {
    ...opts.limits,
    tcpConnections: share(opts.limits.tcpConnections ?? 10000, processes),
    queriesPerSecond: share(opts.limits.queriesPerSecond, processes),
  };
  let zone = opts.zone;
  let stopping = false;
  let nextId = 1;
  const waiting = new Map<number, { left: number; results: DnsCounters[]; resolve: (results: DnsCounters[]) => void }>();
  /** Each worker's requests not answered yet: answered empty if it exits, so no caller waits forever. */
  const workers = new Map<Worker, Set<number>>();
  /** The workers serving, in the order TCP connections are handed out (this process takes its turn after them). */
  const serving: Worker[] = [];
  let turn = 0;
  /**
   * Hand-overs since the last collection, those not sent yet (they wait in turn for the worker's
   * acknowledgement of the one before), when the last was sent, and the check that is pending.
   */
  let handedOff = 0;
  let inFlight = 0;
  let lastHandOff = 0;
  let settling: NodeJS.Timeout | undefined;
  const collectWhenSettled = () => {
    settling = undefined;
    if (inFlight > 0) return; // the last one's send checks again
    const quietFor = Date.now() - lastHandOff;
    if (quietFor < HAND_OFFS_SETTLED_MS) settling = setTimeout(collectWhenSettled, HAND_OFFS_SETTLED_MS - quietFor).unref();
    else if (handedOff >= BURST) {
      handedOff = 0;
      opts.collectGarbage?.();
    }
  };

  const server = await startDnsServer({
    zone: () => zone,
    address: opts.address,
    port: opts.port,
    limits,
    log: opts.log,
    ...(opts.logQueries && { onQuery: (q: DnsQueryEvent) => opts.log(queryLine(q)) }),
    handOff(socket) {
      const at = turn++ % (serving.length + 1);
      if (at === serving.length) return false;
      handedOff++;
      inFlight++;
      // A worker that went away meanwhile: the connection is still ours (the channel refused it) or
      // was closed with the failed send (the client reconnects).
      serving[at]!.send({ kind: 'tcp' } satisfies ToWorker, socket, (err: Error | null) => {
        if (err && !socket.destroyed) server.accept(socket);
        inFlight--;
        lastHandOff = Date.now();
        if (opts.collectGarbage && !settling) settling = setTimeout(collectWhenSettled, HAND_OFFS_SETTLED_MS).unref();
      });
      return true;
    },
  });

  const answered = (id: number, counters: DnsCounters | undefined) => {
    const entry = waiting.get(id);
    if (!entry) return;
    if (counters) entry.results.push(counters);
    if (--entry.left === 0) {
      waiting.delete(id);
      entry.resolve(entry.results);
    }
  };
  /** Sends one request to every worker; resolves with their answers. */
  const ask = (make: (id: number) => ToWorker): Promise<DnsCounters[]> => {
    const id = nextId++;
    if (workers.size === 0) return Promise.resolve([]);
    return new Promise((resolve) => {
      waiting.set(id, { left: workers.size, results: [], resolve });
      for (const [worker, pending] of workers) {
        pending.add(id);
        worker.send(make(id));
      }
    });
  };

  const fork = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const worker = cluster.fork({ [WORKER_ENV]: '1', ...WORKER_MALLOC });
      const pending = new Set<number>();
      workers.set(worker, pending);
      worker.on('message', (m: FromWorker) => {
        if (m.kind === 'ready') worker.send({ kind: 'start', zone: toWire(zone), limits, logQueries: opts.logQueries } satisfies ToWorker, server.udp);
        else if (m.kind === 'serving') {
          serving.push(worker);
          resolve();
        } else if (m.kind === 'failed') reject(new Error(m.error));
        else if (pending.delete(m.id)) answered(m.id, m.counters);
      });
      worker.once('exit', (code, signal) => {
        workers.delete(worker);
        if (serving.includes(worker)) serving.splice(serving.indexOf(worker), 1);
        for (const id of pending) answered(id, undefined);
        reject(new Error(`dns worker exited (${signal ?? `code ${code}`}) before it was serving`));
        if (!stopping) {
          opts.log(`dns worker ${worker.process.pid} exited (${signal ?? `code ${code}`}), starting another`);
          void fork().catch((err: Error) => opts.log(`dns worker could not be restarted: ${err.message}`));
        }
      });
    });

  const stopAll = async () => {
    stopping = true;
    clearTimeout(settling);
    serving.length = 0;
    const exited = [...workers.keys()].map((w) => new Promise<void>((resolve) => (w.isDead() ? resolve() : w.once('exit', () => resolve()))));
    // Our own listener first, so that no connection is handed to a worker that is stopping.
    const [, final] = await Promise.all([server.close(), ask((id) => ({ kind: 'stop', id }))]);
    await Promise.all(exited);
    return final;
  };

  try {
    await Promise.all(Array.from({ length: opts.workers }, fork));
  } catch (err) {
    await stopAll();
    throw err;
  }

  let finalCounters: DnsCounters[] | undefined;
  return {
    port: server.port,
    async setZone(next) {
      zone = next;
      const wire = toWire(next);
      await ask((id) => ({ kind: 'zone', id, zone: wire }));
    },
    counters: async () => sumCounters([server.counters(), ...(finalCounters ?? (await ask((id) => ({ kind: 'counters', id }))))]),
    async close() {
      finalCounters ??= await stopAll();
    },
  };
}

/**
 * A worker's whole life: wait for the zone and the UDP socket, serve it and the connections handed over,
 * answer the primary. Signals meant for the server (Ctrl-C reaches the whole process group) are the
 * primary's to act on: it stops us, so the counters are collected and idle connections closed in order.
 * If the primary dies, cluster ends us when the channel closes.
 */
export function runDnsWorker(): void {
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGUSR1'] as const) process.on(signal, () => {});
  const reply = (m: FromWorker) => process.send?.(m);
  let server: SharedDnsServer | undefined;
  let zone: Zone;
  process.on('message', (m: ToWorker, handle: dgram.Socket | net.Socket | undefined) => {
    if (m.kind === 'start') {
      if (!handle) {
        reply({ kind: 'failed', error: 'dns worker: started without the UDP socket' });
        process.exit(1);
      }
      zone = fromWire(m.zone);
      server = serveSharedDns(handle as dgram.Socket, {
        zone: () => zone,
        limits: m.limits,
        log: (line) => console.log(line),
        ...(m.logQueries && { onQuery: (event: DnsQueryEvent) => console.log(queryLine(event)) }),
      });
      reply({ kind: 'serving' });
    } else if (m.kind === 'tcp') {
      if (handle) server?.accept(handle as net.Socket);
    } else if (m.kind === 'zone') {
      zone = fromWire(m.zone);
      reply({ kind: 'done', id: m.id });
    } else if (m.kind === 'counters') {
      reply({ kind: 'done', id: m.id, ...(server && { counters: server.counters() }) });
    } else if (m.kind === 'stop') {
      void (server?.close() ?? Promise.resolve()).then(() => {
        process.send?.({ kind: 'done', id: m.id, ...(server && { counters: server.counters() }) } satisfies FromWorker, () => process.exit(0));
      });
    }
  });
  reply({ kind: 'ready' });
}
