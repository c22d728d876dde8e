// Asking the cluster's nameserver for A records. UDP first; a truncated answer (a thousand minions
// do not fit in 512 bytes) is asked again over TCP. dns2's own retry has no timeout, and its TCP client
// cuts an IPv6 address at the first ':', so the TCP query is ours: any address family, bounded, and its
// socket closed whatever the outcome.
import { randomInt } from 'node:crypto';
import { connect, isIP } from 'node:net';
import type DNS from 'dns2';
import { InputError } from './errors.js';

export interface Nameserver {
  host: string;
  port: number;
}

export type Rcode = 'NOERROR' | 'FORMERR' | 'SERVFAIL' | 'NXDOMAIN' | 'NOTIMP' | 'REFUSED' | `RCODE${number}`;
const RCODES: Rcode[] = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];

export interface AAnswer {
  rcode: Rcode;
  /** IPv4 addresses from A records for the name asked, in answer order, duplicates kept. */
  addresses: string[];
  /** The smallest TTL among those records (undefined when there are none). */
  ttl: number | undefined;
  transport: 'udp' | 'tcp';
}

export class DnsError extends Error {
  constructor(
    message: string,
    readonly reason: 'timeout' | 'unreachable' | 'too-large',
  ) {
    super(message);
    this.name = 'DnsError';
  }
}

/** `host`, `host:port`, `[v6]` or `[v6]:port`; the port defaults to 53. */
export function parseNameserver(text: string, source = 'nameserver'): Nameserver {
  const trimmed = text.trim();
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(trimmed) ?? /^([^:\s]+)(?::(\d+))?$/.exec(trimmed);
  const host = m?.[1];
  const port = m?.[2] === undefined ? 53 : Number(m[2]);
  if (!host || !isIP(host) || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new InputError(`${source}: expected an IP address with an optional :port, got ${JSON.stringify(text)}`, {
      value: text,
    });
  }
  return { host, port };
}

/** The first `nameserver` line of a resolv.conf, or undefined when there is none. */
export function nameserverFromResolvConf(text: string): Nameserver | undefined {
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m?.[1] && isIP(m[1])) return { host: m[1], port: 53 };
  }
  return undefined;
}

export interface QueryOptions {
  timeoutMs?: number;
}

export async function queryA(name: string, ns: Nameserver, opts: QueryOptions = {}): Promise<AAnswer> {
  const timeoutMs = opts.timeoutMs ?? 2000;
  // Loaded on first use: `agent status` and `check` never ask DNS, and start faster without dns2.
  const dns2 = (await import('dns2')).default;
  const udp = dns2.UDPClient({
    dns: ns.host,
    port: ns.port,
    socketType: isIP(ns.host) === 6 ? 'udp6' : 'udp4',
    timeout: timeoutMs,
    retryOverTCP: false,
  } as never);
  let packet: DNS.Packet;
  try {
    packet = (await udp(name, 'A')) as DNS.Packet;
  } catch (err) {
    throw toDnsError(err, ns, 'udp');
  }
  if (!packet.header.tc) return toAnswer(name, packet, 'udp');
  try {
    packet = await queryTcp(dns2, name, ns, timeoutMs);
  } catch (err) {
    throw toDnsError(err, ns, 'tcp');
  }
  if (packet.header.tc)
    throw new DnsError(
      `the answer for ${name} does not fit in one DNS message even over TCP (${packet.answers.length} records sent): one A record set carries about 4000 addresses at most`,
      'too-large',
    );
  return toAnswer(name, packet, 'tcp');
}

/** The A record type (RFC 1035 3.2.2). */
const TYPE_A = 1;

function toAnswer(name: string, packet: DNS.Packet, transport: 'udp' | 'tcp'): AAnswer {
  const wanted = name.toLowerCase().replace(/\.$/, '');
  const records = packet.answers.filter(
    (r) => r.type === TYPE_A && r.name.toLowerCase().replace(/\.$/, '') === wanted && isIP(r.address ?? '') === 4,
  );
  const rcode = RCODES[packet.header.rcode] ?? (`RCODE${packet.header.rcode}` as Rcode);
  const ttls = records.map((r) => r.ttl);
  return {
    rcode,
    addresses: records.map((r) => r.address as string),
    ttl: ttls.length ? Math.min(...ttls) : undefined,
    transport,
  };
}

function toDnsError(err: unknown, ns: Nameserver, transport: string): DnsError {
  if (err instanceof DnsError) return err;
  const e = err as NodeJS.ErrnoException;
  const at = `${where(ns)} over ${transport}`;
  if (e?.code === 'ETIMEDOUT') return new DnsError(`DNS query to ${at} timed out`, 'timeout');
  return new DnsError(`DNS query to ${at} failed: ${e?.code ?? e?.message ?? String(err)}`, 'unreachable');
}

/** One A query over TCP (RFC 7766 framing: a 2-byte length before each message); the socket never outlives it. */
function queryTcp(dns2: typeof DNS, name: string, ns: Nameserver, timeoutMs: number): Promise<DNS.Packet> {
  const query = new dns2.Packet();
  query.header.id = randomInt(0x10000);
  query.header.rd = 1;
  query.questions.push({ name, type: dns2.Packet.TYPE.A, class: dns2.Packet.CLASS.IN } as DNS.Packet.Question);
  const message = query.toBuffer();
  const framed = Buffer.concat([Buffer.from([message.length >> 8, message.length & 0xff]), message]);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: ns.host, port: ns.port });
    let received = Buffer.alloc(0);
    const done = (err: unknown, packet?: DNS.Packet) => {
      clearTimeout(timer);
      socket.destroy();
      if (packet) resolve(packet);
      else reject(err);
    };
    const timer = setTimeout(() => done(new DnsError(`DNS query to ${where(ns)} over tcp timed out`, 'timeout')), timeoutMs);
    socket.on('error', (err) => done(err));
    socket.on('end', () => done(new Error('connection closed before a whole answer')));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length < 2 || received.length < 2 + received.readUInt16BE(0)) return;
      let packet: DNS.Packet;
      try {
        packet = dns2.Packet.parse(received.subarray(2, 2 + received.readUInt16BE(0)));
      } catch (err) {
        return done(new Error(`unparseable answer (${(err as Error).message})`));
      }
      if (packet.header.id !== query.header.id) return done(new Error('answer for another query (ID mismatch)'));
      done(undefined, packet);
    });
    socket.write(framed);
  });
}

/** `host:port`, with brackets around an IPv6 host so the port stays readable. */
function where(ns: Nameserver): string {
  return isIP(ns.host) === 6 ? `[${ns.host}]:${ns.port}` : `${ns.host}:${ns.port}`;
}
