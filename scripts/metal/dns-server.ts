// The cluster's authoritative DNS server for bare metal (and the tests' real DNS server): `masters.` and
// `minions.` A records for one zone, SOA/NS at the apex, NXDOMAIN inside the zone, REFUSED outside it,
// over UDP and TCP on one port. Answers come prebuilt from dns-wire.ts; this module owns the sockets,
// the limits (TCP connections, idle time, queries per connection, queries per second per source) and
// the counters. No packet and no send error ends the process: what cannot be answered is dropped and counted.
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { buildZoneTable, decodeQuery, noAnswer, RCODE, RCODE_NAMES, respond, respondTcp, udpLimitOf, type Edns, type Prebuilt, type Zone, type ZoneTable } from './dns-wire.js';

export { RCODE, type Zone } from './dns-wire.js';

/** Makes the response for a transport from what `handle` decided; module-level, so a query allocates no closure or record. */
type Build<R> = (msg: Buffer, questionEnd: number, answer: Prebuilt, edns: Edns | undefined) => R;
const respondUdp: Build<Buffer> = (msg, questionEnd, answer, edns) => respond(msg, questionEnd, answer, edns, udpLimitOf(edns));

export interface DnsLimits {
  /** Open TCP connections at most; one more is closed as soon as it is accepted (default 10000). */
  tcpConnections?: number;
  /**
   * A TCP connection with no complete query for this long is closed (RFC 7766 6.2.3; default 10 s); one
   * with answers it has not read, after twice that.
   */
  tcpIdleMs?: number;
  /** After this many queries a TCP connection is closed once its answers are written (default 10000). */
  tcpQueriesPerConnection?: number;
  /**
   * Queries per second from one source address, 0 for no limit (the default here; `metal serve` sets
   * 1000). Past it, UDP queries are dropped unanswered and a TCP connection is closed.
   */
  queriesPerSecond?: number;
}

export interface DnsCounters {
  queries: number;
  /** Answers sent, by rcode name. */
  answers: Record<string, number>;
  /** Messages not answered, by why: QR=1, unparsable, over the rate limit, a source we cannot send to, a failed send. */
  dropped: { response: number; malformed: number; rateLimited: number; badSource: number; sendFailed: number };
  tcp: { open: number; accepted: number; refused: number; idleClosed: number };
}

export interface DnsQueryEvent {
  name: string;
  type: number;
  rcode: number;
  answers: number;
  transport: 'udp' | 'tcp';
}

const TYPE_NAMES: Record<number, string> = { 1: 'A', 2: 'NS', 6: 'SOA', 28: 'AAAA', 255: 'ANY' };

/** The per-query log line (`--log-queries`): `dns udp minions.lab.k8s A NOERROR answers=1`. */
export const queryLine = (q: DnsQueryEvent): string => `dns ${q.transport} ${q.name || '.'} ${TYPE_NAMES[q.type] ?? `TYPE${q.type}`} ${RCODE_NAMES[q.rcode]} answers=${q.answers}`;

/** Answering on a UDP socket and the TCP connections it accepts or is handed. */
export interface SharedDnsServer {
  /** Serves a TCP connection accepted elsewhere (handed over, not read from yet). */
  accept(socket: net.Socket): void;
  counters(): DnsCounters;
  close(): Promise<void>;
}

/** A server that bound its own port. */
export interface DnsServer extends SharedDnsServer {
  address: string;
  port: number;
  /** Its UDP socket, for other processes to answer on as well (sent to them as a handle). */
  udp: dgram.Socket;
}

export interface DnsServerOptions {
  /** Read at every query; a new value (a reload) gets its answers built once, at its first query. */
  zone: () => Zone;
  address?: string;
  /** 0 picks a free port (the same one for UDP and TCP). */
  port?: number;
  /** Called for every answered query (per-query logs); leave unset on a busy server. */
  onQuery?: (event: DnsQueryEvent) => void;
  /** Socket errors that are not about one query (one line each). */
  log?: (line: string) => void;
  limits?: DnsLimits;
  /**
   * Offered every new TCP connection before this process serves it: true when it handed the connection
   * to another process (dns-workers.ts). The connection is paused: none of its bytes has been read here.
   */
  handOff?: (socket: net.Socket) => boolean;
}

/** How long a stopping server lets a TCP client take its last answer before the connection is cut. */
const CLOSE_GRACE_MS = 500;
/** A client that does not read its answers stops being read from past this much unsent output. */
const TCP_BACKLOG = 256 * 1024;

const ERROR_ANSWERS = new Map<number, Prebuilt>([RCODE.FORMERR, RCODE.NOTIMP, RCODE.BADVERS].map((rcode) => [rcode, noAnswer(rcode)]));

/** Queries per source address in the current second; the table starts afresh every second. */
function rateLimiter(perSecond: number): { allow(source: string): boolean; stop(): void } {
  let counts = new Map<string, number>();
  const timer = setInterval(() => (counts = new Map()), 1000).unref();
  return {
    allow(source) {
      const n = (counts.get(source) ?? 0) + 1;
      counts.set(source, n);
      return n <= perSecond;
    },
    stop: () => clearInterval(timer),
  };
}

type ServeOptions = Omit<DnsServerOptions, 'address' | 'port' | 'handOff'>;

/**
 * One process's answering: on `udp`, and on the TCP connections given to `accept`, with this process's
 * limits and counters. `stop` ends the timers and closes the connections (idle ones at once); the sockets
 * are their owner's to close.
 */
function serve(udp: dgram.Socket, opts: ServeOptions) {
  const log = opts.log ?? (() => {});
  const limits = { tcpConnections: 10000, tcpIdleMs: 10_000, tcpQueriesPerConnection: 10_000, queriesPerSecond: 0, ...opts.limits };
  const counters: DnsCounters = {
    queries: 0,
    answers: {},
    dropped: { response: 0, malformed: 0, rateLimited: 0, badSource: 0, sendFailed: 0 },
    tcp: { open: 0, accepted: 0, refused: 0, idleClosed: 0 },
  };
  const limiter = limits.queriesPerSecond > 0 ? rateLimiter(limits.queriesPerSecond) : undefined;

  let tableOf: Zone | undefined;
  let table: ZoneTable | undefined;
  const currentTable = (): ZoneTable => {
    const zone = opts.zone();
    if (zone !== tableOf || !table) {
      table = buildZoneTable(zone);
      tableOf = zone;
    }
    return table;
  };

  /** The answer to one message as `build` makes it for the transport, or undefined: drop. */
  const handle = <R>(msg: Buffer, transport: 'udp' | 'tcp', build: Build<R>): R | undefined => {
    counters.queries++;
    const decoded = decodeQuery(msg);
    if (decoded.kind === 'drop') {
      counters.dropped[decoded.reason]++;
      return undefined;
    }
    const answer = decoded.kind === 'query' ? currentTable().answer(decoded.query) : ERROR_ANSWERS.get(decoded.rcode)!;
    const rcodeName = RCODE_NAMES[answer.rcode]!;
    counters.answers[rcodeName] = (counters.answers[rcodeName] ?? 0) + 1;
    if (opts.onQuery) {
      const q = decoded.kind === 'query' ? decoded.query : undefined;
      opts.onQuery({ name: q?.name ?? '', type: q?.type ?? 0, rcode: answer.rcode, answers: answer.ancount, transport });
    }
    return decoded.kind === 'query' ? build(msg, decoded.query.questionEnd, answer, decoded.query.edns) : build(msg, decoded.questionEnd, answer, decoded.edns);
  };

  // One function for every send, not a closure per query.
  const onSent = (err: Error | null) => {
    if (err) counters.dropped.sendFailed++;
  };
  const onUdp = (udp: dgram.Socket) => (msg: Buffer, rinfo: dgram.RemoteInfo) => {
    if (rinfo.port === 0) {
      counters.dropped.badSource++; // nothing can be sent to port 0 (and Node would throw)
      return;
    }
    if (limiter && !limiter.allow(rinfo.address)) {
      counters.dropped.rateLimited++;
      return;
    }
    const response = handle(msg, 'udp', respondUdp);
    if (!response) return;
    try {
      udp.send(response, rinfo.port, rinfo.address, onSent);
    } catch {
      counters.dropped.sendFailed++;
    }
  };

  // Per connection: this record and the socket. Its listeners are shared functions (`this` is the
  // socket), so an idle connection costs no closures: 10,000 idle clients are a memory bench.
  interface Connection {
    /** Bytes of a message not complete yet. */
    pending: Buffer | undefined;
    lastQuery: number;
    queries: number;
  }
  const connections = new Map<net.Socket, Connection>();

  function onTcpData(this: net.Socket, chunk: Buffer) {
    const socket = this;
    const conn = connections.get(socket);
    if (!conn) return;
    let data = conn.pending ? Buffer.concat([conn.pending, chunk]) : chunk;
    socket.cork();
    // RFC 7766: several queries may arrive in one read (pipelining); each gets its answer in turn.
    while (data.length >= 2 && data.length >= 2 + data.readUInt16BE(0)) {
      const msg = data.subarray(2, 2 + data.readUInt16BE(0));
      data = data.subarray(2 + msg.length);
      conn.lastQuery = Date.now();
      conn.queries++;
      if (limiter && !limiter.allow(socket.remoteAddress ?? '')) {
        counters.dropped.rateLimited++;
        socket.destroy();
        return;
      }
      const parts = handle(msg, 'tcp', respondTcp);
      if (!parts) {
        socket.destroy(); // RFC 7766 8: a stream that does not parse cannot be trusted for what follows
        return;
      }
      // Corked: the parts go out as one writev.
      for (const part of parts) socket.write(part);
      if (conn.queries >= limits.tcpQueriesPerConnection) {
        socket.uncork();
        socket.end();
        return;
      }
    }
    socket.uncork();
    conn.pending = data.length ? data : undefined;
    if (socket.writableLength > TCP_BACKLOG) socket.pause();
  }
  function onTcpClose(this: net.Socket) {
    connections.delete(this);
    counters.tcp.open--;
  }
  function onTcpDrain(this: net.Socket) {
    this.resume();
  }
  const ignore = () => {}; // a reset by the client: 'close' follows

  const accept = (socket: net.Socket) => {
    // Counted here, not by net.Server's maxConnections: a connection handed over by another process
    // belongs to no server in this one.
    if (connections.size >= limits.tcpConnections) {
      counters.tcp.refused++;
      socket.destroy();
      return;
    }
    connections.set(socket, { pending: undefined, lastQuery: Date.now(), queries: 0 });
    counters.tcp.accepted++;
    counters.tcp.open++;
    socket.setNoDelay(true);
    socket.on('error', ignore);
    socket.on('close', onTcpClose);
    socket.on('drain', onTcpDrain);
    socket.on('data', onTcpData);
    socket.resume(); // accepted paused, so that a connection handed to another process is never read here
  };

  const sweep = setInterval(() => {
    const idleSince = Date.now() - limits.tcpIdleMs;
    // One still being written to gets twice the time: a client that never reads its answers is idle too.
    const stalledSince = idleSince - limits.tcpIdleMs;
    for (const [socket, conn] of connections) {
      if (conn.lastQuery < (socket.writableLength === 0 ? idleSince : stalledSince)) {
        counters.tcp.idleClosed++;
        socket.destroy();
      }
    }
  }, Math.min(1000, limits.tcpIdleMs)).unref();

  udp.on('message', onUdp(udp));
  udp.on('error', (err) => log(`dns udp error: ${err.message}`));
  return {
    accept,
    counters: () => structuredClone(counters),
    stop() {
      clearInterval(sweep);
      limiter?.stop();
      // Idle connections go now; one still being written to gets a moment to finish.
      for (const socket of connections.keys()) {
        if (socket.writableLength === 0) socket.destroy();
        else {
          socket.end();
          setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
        }
      }
    },
  };
}

export async function startDnsServer(opts: DnsServerOptions): Promise<DnsServer> {
  const address = opts.address ?? '127.0.0.1';
  // Port 0 gives UDP and TCP different ports: take UDP's and ask TCP for the same, again if another process raced us.
  for (let attempt = 0; ; attempt++) {
    const udp = dgram.createSocket({ type: net.isIP(address) === 6 ? 'udp6' : 'udp4' });
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(opts.port ?? 0, address, () => {
        udp.off('error', reject);
        resolve();
      });
    });
    const port = udp.address().port;
    const tcp = net.createServer({ pauseOnConnect: true });
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(port, address, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      udp.close();
      if (opts.port || attempt >= 5) throw err;
      continue;
    }
    const server = serve(udp, opts);
    tcp.on('connection', (socket: net.Socket) => {
      if (!opts.handOff?.(socket)) server.accept(socket);
    });
    tcp.on('error', (err) => opts.log?.(`dns tcp error: ${err.message}`));
    return {
      address,
      port,
      udp,
      accept: server.accept,
      counters: server.counters,
      close: async () => {
        const closed = Promise.all([new Promise<void>((resolve) => udp.close(() => resolve())), new Promise<void>((resolve) => tcp.close(() => resolve()))]);
        server.stop();
        await closed;
      },
    };
  }
}

/** Answers on another process's UDP socket (this process's copy of it) and the connections it hands to `accept`. */
export function serveSharedDns(udp: dgram.Socket, opts: ServeOptions): SharedDnsServer {
  const server = serve(udp, opts);
  return {
    accept: server.accept,
    counters: server.counters,
    close: async () => {
      const closed = new Promise<void>((resolve) => udp.close(() => resolve()));
      server.stop();
      await closed;
    },
  };
}
