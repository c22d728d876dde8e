// The cluster's authoritative DNS server for bare metal (and the tests' real DNS server):
// `masters.` and `minions.` A records for one zone, SOA/NS at the apex, NXDOMAIN inside the zone,
// REFUSED outside it. dns2 sets TC on UDP answers over 512 bytes; the same port serves TCP.
import type { RemoteInfo } from 'node:dgram';
import type { AddressInfo } from 'node:net';
import { isIP } from 'node:net';
import DNS from 'dns2';

const { Packet } = DNS;

export interface Zone {
  /** e.g. `demo.k8s` */
  origin: string;
  /** Fully qualified lower-case name → IPv4 addresses. */
  records: ReadonlyMap<string, readonly string[]>;
  ttl: number;
}

export const RCODE = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 } as const;

/** What the zone answers to one request: pure, so the server and its tests agree by construction. */
export function answerQuery(zone: Zone, request: DNS.Packet): DNS.Packet {
  const response = Packet.createResponseFromRequest(request);
  response.header.ra = 0;
  const question = request.questions[0];
  if (!question) {
    response.header.rcode = 1; // FORMERR
    return response;
  }
  const name = question.name.toLowerCase().replace(/\.$/, '');
  const origin = zone.origin.toLowerCase();
  if (name !== origin && !name.endsWith(`.${origin}`)) {
    response.header.rcode = RCODE.REFUSED;
    return response;
  }
  response.header.aa = 1;
  const soa = {
    name: origin,
    type: Packet.TYPE.SOA,
    class: Packet.CLASS.IN,
    ttl: zone.ttl,
    primary: `ns.${origin}`,
    admin: `hostmaster.${origin}`,
    serial: 1,
    refresh: 300,
    retry: 60,
    expiration: 86400,
    minimum: zone.ttl,
  };
  const addresses = zone.records.get(name);
  if (name === origin) {
    if (question.type === Packet.TYPE.SOA) response.answers.push(soa as DNS.Packet.Resource);
    else if (question.type === Packet.TYPE.NS)
      response.answers.push({ name: origin, type: Packet.TYPE.NS, class: Packet.CLASS.IN, ttl: zone.ttl, ns: `ns.${origin}` } as DNS.Packet.Resource);
    else response.authorities.push(soa as DNS.Packet.Resource);
    return response;
  }
  if (!addresses) {
    response.header.rcode = RCODE.NXDOMAIN;
    response.authorities.push(soa as DNS.Packet.Resource);
    return response;
  }
  if (question.type === Packet.TYPE.A || question.type === Packet.TYPE.ANY) {
    for (const address of addresses)
      response.answers.push({ name, type: Packet.TYPE.A, class: Packet.CLASS.IN, ttl: zone.ttl, address } as DNS.Packet.Resource);
  } else {
    response.authorities.push(soa as DNS.Packet.Resource); // NODATA
  }
  return response;
}

const UDP_LIMIT = 512;
const MAX_MESSAGE = 65535;

/** What a UDP answer may weigh: 512 bytes, or more when the client's EDNS OPT record offers it. */
function udpLimit(request: DNS.Packet): number {
  const opt = request.additionals?.find((r) => r.type === Packet.TYPE.EDNS);
  return Math.max(opt?.class ?? 0, UDP_LIMIT);
}

/**
 * The response's wire bytes. dns2 encodes through an array of bits (a thousand A records take
 * about a second of CPU, and every minion asks for them), so the common big case, A records for the
 * question's own name, is written here: dns2 encodes the small rest, and each A record is 16 bytes
 * whose name is a pointer to the question name at offset 12. Over UDP, an answer that does not fit
 * is replaced by the question alone with TC set, as dns2 itself does, so the client asks over TCP.
 */
export function encodeResponse(request: DNS.Packet, response: DNS.Packet, transport: 'udp' | 'tcp'): Buffer {
  const question = response.questions[0];
  const plainA =
    question !== undefined &&
    response.questions.length === 1 &&
    response.authorities.length === 0 &&
    response.additionals.length === 0 &&
    response.answers.length > 0 &&
    response.answers.every((r) => r.type === Packet.TYPE.A && r.class === Packet.CLASS.IN && r.name === question.name.toLowerCase().replace(/\.$/, ''));
  let bytes: Buffer;
  if (plainA) {
    const head = Object.assign(new Packet(), response, { header: new Packet.Header(response.header), answers: [] }).toBuffer();
    // One DNS message carries at most 65535 bytes (about 4090 A records): send what fits with TC set,
    // so a client learns the set is incomplete instead of reading an empty stream.
    const fit = Math.min(response.answers.length, Math.floor((MAX_MESSAGE - head.length) / 16));
    const answers = response.answers.slice(0, fit);
    const records = Buffer.alloc(answers.length * 16);
    answers.forEach((r, i) => {
      const at = i * 16;
      records.writeUInt16BE(0xc00c, at);
      records.writeUInt16BE(Packet.TYPE.A, at + 2);
      records.writeUInt16BE(Packet.CLASS.IN, at + 4);
      records.writeUInt32BE(r.ttl, at + 6);
      records.writeUInt16BE(4, at + 10);
      (r.address as string).split('.').forEach((octet, j) => records.writeUInt8(Number(octet), at + 12 + j));
    });
    bytes = Buffer.concat([head, records]);
    bytes.writeUInt16BE(answers.length, 6); // ANCOUNT
    if (fit < response.answers.length) bytes[2] = (bytes[2] as number) | 0x02; // TC
  } else {
    bytes = response.toBuffer();
  }
  if (transport === 'tcp' || bytes.length <= udpLimit(request)) return bytes;
  const truncated = Object.assign(new Packet(), response, { answers: [], authorities: [], additionals: [] });
  truncated.header = new Packet.Header({ ...response.header, tc: 1 });
  return truncated.toBuffer();
}

/** The one question of a plain query, read straight off the wire; undefined for anything else. */
interface PlainQuery {
  name: string;
  type: number;
  /** Where the question section ends: the answer echoes bytes 12..end (the asker's letter case included). */
  end: number;
}

function peekPlainQuery(msg: Buffer): PlainQuery | undefined {
  if (msg.length < 17) return undefined;
  const flags = msg.readUInt16BE(2);
  // A query (QR=0), opcode QUERY, one question, nothing else: EDNS and the rest take dns2's path.
  if (flags & 0xf800 || msg.readUInt16BE(4) !== 1 || msg.readUInt32BE(6) !== 0 || msg.readUInt16BE(10) !== 0) return undefined;
  const labels: string[] = [];
  let at = 12;
  for (;;) {
    const len = msg[at];
    if (len === undefined || len > 63) return undefined; // compression pointers have no place in a question
    at += 1;
    if (len === 0) break;
    if (at + len > msg.length) return undefined;
    labels.push(msg.toString('latin1', at, at + len));
    at += len;
    if (at - 12 > 255) return undefined;
  }
  if (at + 4 !== msg.length || msg.readUInt16BE(at + 2) !== Packet.CLASS.IN) return undefined;
  return { name: labels.join('.').toLowerCase(), type: msg.readUInt16BE(at), end: at + 4 };
}

/**
 * The fast path for what the cluster asks all day (A records of a name in the zone, answer within 512
 * bytes, no EDNS): the same bytes dns2 would send (test/metal-dns.test.ts proves it), without its
 * bit-by-bit parser and writer, which cost most of a small query's time. undefined: use dns2.
 */
export function fastAnswer(zone: Zone, msg: Buffer): { bytes: Buffer; name: string; answers: number } | undefined {
  const q = peekPlainQuery(msg);
  if (!q || (q.type !== Packet.TYPE.A && q.type !== Packet.TYPE.ANY)) return undefined;
  const origin = zone.origin.toLowerCase();
  if (!q.name.endsWith(`.${origin}`)) return undefined;
  const addresses = zone.records.get(q.name);
  if (!addresses?.length) return undefined;
  const size = q.end + addresses.length * 16;
  if (size > UDP_LIMIT) return undefined;
  const bytes = Buffer.alloc(size);
  msg.copy(bytes, 0, 0, q.end);
  bytes[2] = 0x84 | ((msg[2] as number) & 0x01); // QR, AA, the asker's RD
  bytes[3] = 0; // RA=0, RCODE NOERROR
  bytes.writeUInt16BE(addresses.length, 6);
  addresses.forEach((address, i) => {
    const at = q.end + i * 16;
    bytes.writeUInt16BE(0xc00c, at);
    bytes.writeUInt16BE(Packet.TYPE.A, at + 2);
    bytes.writeUInt16BE(Packet.CLASS.IN, at + 4);
    bytes.writeUInt32BE(zone.ttl, at + 6);
    bytes.writeUInt16BE(4, at + 10);
    address.split('.').forEach((octet, j) => bytes.writeUInt8(Number(octet), at + 12 + j));
  });
  return { bytes, name: q.name, answers: addresses.length };
}

export interface DnsServer {
  address: string;
  port: number;
  close(): Promise<void>;
}

export interface DnsServerOptions {
  /** Read at every query, so a reload is just a new value. */
  zone: () => Zone;
  address?: string;
  /** 0 picks a free port (the same one for UDP and TCP). */
  port?: number;
  onQuery?: (event: { name: string; type: number; rcode: number; answers: number; transport: 'udp' | 'tcp' }) => void;
}

export async function startDnsServer(opts: DnsServerOptions): Promise<DnsServer> {
  const address = opts.address ?? '127.0.0.1';
  const handler = (transport: 'udp' | 'tcp'): DNS.DnsHandler => (request, send) => {
    const response = answerQuery(opts.zone(), request);
    const q = request.questions[0];
    opts.onQuery?.({ name: q?.name ?? '', type: q?.type ?? 0, rcode: response.header.rcode, answers: response.answers.length, transport });
    send(encodeResponse(request, response, transport) as never).catch(() => {}); // the client went away: nothing to do
  };
  // Port 0 gives UDP and TCP different ports: take UDP's and ask TCP for the same, again if another process raced us.
  for (let attempt = 0; ; attempt++) {
    const udp = DNS.createUDPServer({ type: isIP(address) === 6 ? 'udp6' : 'udp4' });
    udp.on('request', handler('udp'));
    // In front of dns2's own parse: plain A queries are answered from the wire (see fastAnswer).
    const slow = udp.listeners('message') as ((msg: Buffer, rinfo: RemoteInfo) => void)[];
    udp.removeAllListeners('message');
    udp.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
      const fast = fastAnswer(opts.zone(), msg);
      if (!fast) return slow.forEach((listener) => listener.call(udp, msg, rinfo));
      opts.onQuery?.({ name: fast.name, type: Packet.TYPE.A, rcode: 0, answers: fast.answers, transport: 'udp' });
      udp.send(fast.bytes, rinfo.port, rinfo.address);
    });
    udp.on('requestError', () => {}); // a malformed packet must not bring the zone down
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(opts.port ?? 0, address, () => resolve());
    });
    const port = (udp.address() as AddressInfo).port;
    const tcp = DNS.createTCPServer(handler('tcp'));
    tcp.on('requestError', () => {});
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(port, address, () => resolve());
      });
    } catch (err) {
      udp.close();
      if (opts.port || attempt >= 5) throw err;
      continue;
    }
    return {
      address,
      port,
      close: () =>
        Promise.all([
          new Promise<void>((resolve) => udp.close(() => resolve())),
          new Promise<void>((resolve) => tcp.close(() => resolve())),
        ]).then(() => undefined),
    };
  }
}
