// DNS messages on the wire, for the metal server's zone (RFC 1035, EDNS from RFC 6891): reading a query
// and the zone's answers built once, as wire bytes, per zone change. A response is then the query's own
// header and question (the asker's ID and letter case, patched) followed by prebuilt sections, so no
// query is parsed into objects or encoded record by record. Pure: no sockets here.

export const TYPE = { A: 1, NS: 2, SOA: 6, AAAA: 28, OPT: 41, IXFR: 251, AXFR: 252, ANY: 255 } as const;
export const CLASS_IN = 1;
export const OPCODE_QUERY = 0;
/** BADVERS is an extended rcode (16): 0 in the header, 1 in the OPT record's upper bits. */
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5, BADVERS: 16 } as const;
export const RCODE_NAMES: Record<number, string> = Object.fromEntries(Object.entries(RCODE).map(([k, v]) => [v, k]));

/** What we offer in our OPT record, and the most a UDP answer may weigh: the DNS flag day 2020 value, as dnsmasq. */
export const UDP_PAYLOAD = 1232;
/** Without EDNS a UDP answer holds 512 bytes (RFC 1035 4.2.1). */
export const UDP_PLAIN = 512;
const MAX_MESSAGE = 65535;
/** Header (12) + the longest question (255-byte name + type + class) + our OPT record (11). */
const MAX_FRAME = 12 + 259 + 11;

export interface Zone {
  /** e.g. `demo.k8s` */
  origin: string;
  /** Fully qualified lower-case name → IPv4 addresses. */
  records: ReadonlyMap<string, readonly string[]>;
  ttl: number;
}

export interface Edns {
  /** The requester's UDP payload size (the OPT record's class). */
  payload: number;
  version: number;
  /** DNSSEC OK: copied into our OPT (RFC 3225). */
  dnssecOk: boolean;
}

/** A query the zone answers: one question, opcode QUERY, QR=0. */
export interface Query {
  /** Lower case, no trailing dot; '' is the root. */
  name: string;
  type: number;
  class: number;
  /** Where the question ends: bytes 0..questionEnd are echoed (patched) in the response. */
  questionEnd: number;
  edns: Edns | undefined;
}

/** What to do with one message off the wire. */
export type Decoded =
  | { kind: 'query'; query: Query }
  /** Answer with this rcode and no records (e.g. NOTIMP for an opcode we do not serve). */
  | { kind: 'error'; rcode: number; questionEnd: number; edns: Edns | undefined }
  /** Never answered: responses (QR=1, a reflection loop otherwise) and messages that do not parse. */
  | { kind: 'drop'; reason: 'response' | 'malformed' };

/** Skips one (possibly compressed) name at `at`; the offset after it, or -1 when it runs off the message. */
function skipName(msg: Buffer, at: number): number {
  for (let hops = 0; hops < 128; hops++) {
    const len = msg[at];
    if (len === undefined) return -1;
    if (len === 0) return at + 1;
    if ((len & 0xc0) === 0xc0) return at + 2 <= msg.length ? at + 2 : -1;
    if (len & 0xc0) return -1; // 0x40/0x80: reserved label types
    at += 1 + len;
  }
  return -1;
}

/** Reads the question name (no compression: nothing precedes it to point at); -1 end when malformed. */
function readQuestionName(msg: Buffer): { name: string; end: number } {
  let at = 12;
  let name = '';
  for (;;) {
    const len = msg[at];
    if (len === undefined || len > 63) return { name: '', end: -1 };
    at += 1;
    if (len === 0) break;
    if (at + len > msg.length || at - 12 + len > 254) return { name: '', end: -1 };
    name += (name ? '.' : '') + msg.toString('latin1', at, at + len);
    at += len;
  }
  return { name: name.toLowerCase(), end: at };
}

/** Reads one message as a server must (RFC 1035 4.1, RFC 6891 6.1.1: at most one OPT). */
export function decodeQuery(msg: Buffer): Decoded {
  if (msg.length < 12) return { kind: 'drop', reason: 'malformed' };
  if (msg[2]! & 0x80) return { kind: 'drop', reason: 'response' };
  const opcode = (msg[2]! >> 3) & 0x0f;
  const qdcount = msg.readUInt16BE(4);
  let at = 12;
  let question: { name: string; end: number } | undefined;
  if (qdcount === 1) {
    question = readQuestionName(msg);
    if (question.end < 0 || question.end + 4 > msg.length) return { kind: 'drop', reason: 'malformed' };
    at = question.end + 4;
  } else {
    for (let i = 0; i < qdcount; i++) {
      at = skipName(msg, at);
      if (at < 0 || at + 4 > msg.length) return { kind: 'drop', reason: 'malformed' };
      at += 4;
    }
  }
  const questionEnd = at;
  const records = msg.readUInt16BE(6) + msg.readUInt16BE(8);
  const additionals = msg.readUInt16BE(10);
  let edns: Edns | undefined;
  let opts = 0;
  for (let i = 0; i < records + additionals; i++) {
    const nameAt = at;
    at = skipName(msg, at);
    if (at < 0 || at + 10 > msg.length) return { kind: 'drop', reason: 'malformed' };
    const type = msg.readUInt16BE(at);
    const rdlength = msg.readUInt16BE(at + 8);
    if (type === TYPE.OPT) {
      // RFC 6891 6.1.1: one OPT, in the additional section, owned by the root.
      if (i < records || msg[nameAt] !== 0 || ++opts > 1) return { kind: 'error', rcode: RCODE.FORMERR, questionEnd: 12, edns: undefined };
      edns = { payload: msg.readUInt16BE(at + 2), version: msg[at + 5]!, dnssecOk: (msg[at + 6]! & 0x80) !== 0 };
    }
    at += 10 + rdlength;
    if (at > msg.length) return { kind: 'drop', reason: 'malformed' };
  }
  if (opcode !== OPCODE_QUERY) return { kind: 'error', rcode: RCODE.NOTIMP, questionEnd: question ? question.end + 4 : 12, edns };
  if (!question) return { kind: 'error', rcode: RCODE.FORMERR, questionEnd: 12, edns };
  if (edns && edns.version !== 0) return { kind: 'error', rcode: RCODE.BADVERS, questionEnd, edns };
  return { kind: 'query', query: { name: question.name, type: msg.readUInt16BE(question.end), class: msg.readUInt16BE(question.end + 2), questionEnd, edns } };
}

/** The sections after the question, built once per zone: the same bytes for every asker. */
export interface Prebuilt {
  rcode: number;
  aa: boolean;
  /** Answer and authority records; owner names equal to the question are pointers to it (offset 12). */
  body: Buffer;
  ancount: number;
  nscount: number;
  /** The whole set did not fit one message (65,535 bytes): TC even over TCP, so the client knows. */
  partial: boolean;
}

function encodeName(name: string): Buffer {
  const parts = name ? name.split('.') : [];
  const out = Buffer.alloc(parts.reduce((n, p) => n + 1 + p.length, 1));
  let at = 0;
  for (const part of parts) {
    out[at++] = part.length;
    at += out.write(part, at, 'latin1');
  }
  return out;
}

/** One resource record; `owner` is a name's wire form or the 2-byte pointer to the question. */
function record(owner: Buffer, type: number, ttl: number, rdata: Buffer): Buffer {
  const fixed = Buffer.alloc(10);
  fixed.writeUInt16BE(type, 0);
  fixed.writeUInt16BE(CLASS_IN, 2);
  fixed.writeUInt32BE(ttl, 4);
  fixed.writeUInt16BE(rdata.length, 8);
  return Buffer.concat([owner, fixed, rdata]);
}

const QUESTION_NAME = Buffer.from([0xc0, 0x0c]);

function ipv4(address: string): Buffer {
  return Buffer.from(address.split('.').map(Number));
}

export interface ZoneTable {
  origin: string;
  answer(query: Query): Prebuilt;
}

/** Every answer the zone can give, built once (a zone is replaced whole on reload, so its table with it). */
export function buildZoneTable(zone: Zone): ZoneTable {
  const origin = zone.origin.toLowerCase().replace(/\.$/, '');
  const ttl = zone.ttl;
  const originWire = encodeName(origin);
  const soaRdata = Buffer.concat([encodeName(`ns.${origin}`), encodeName(`hostmaster.${origin}`), Buffer.from([0, 0, 0, 1, 0, 0, 1, 44, 0, 0, 0, 60, 0, 1, 81, 128]), Buffer.alloc(4)]);
  soaRdata.writeUInt32BE(ttl, soaRdata.length - 4); // serial 1, refresh 300, retry 60, expire 86400, minimum = ttl
  const soaAuthority = record(originWire, TYPE.SOA, ttl, soaRdata);
  const room = MAX_MESSAGE - MAX_FRAME;
  const answers = (rrs: Buffer[]): Prebuilt => {
    let size = 0;
    let fit = 0;
    while (fit < rrs.length && size + rrs[fit]!.length <= room) size += rrs[fit++]!.length;
    return { rcode: RCODE.NOERROR, aa: true, body: Buffer.concat(rrs.slice(0, fit)), ancount: fit, nscount: 0, partial: fit < rrs.length };
  };
  const nodata: Prebuilt = { rcode: RCODE.NOERROR, aa: true, body: soaAuthority, ancount: 0, nscount: 1, partial: false };
  const nxdomain: Prebuilt = { ...nodata, rcode: RCODE.NXDOMAIN };
  const refused: Prebuilt = { rcode: RCODE.REFUSED, aa: false, body: Buffer.alloc(0), ancount: 0, nscount: 0, partial: false };

  /** Per name, its answers by type; ANY gets one RRset (RFC 8482), anything else NODATA. */
  const names = new Map<string, Map<number, Prebuilt>>();
  const node = (name: string) => {
    let types = names.get(name);
    if (!types) names.set(name, (types = new Map()));
    return types;
  };
  const apex = node(origin);
  apex.set(TYPE.SOA, answers([record(QUESTION_NAME, TYPE.SOA, ttl, soaRdata)]));
  apex.set(TYPE.NS, answers([record(QUESTION_NAME, TYPE.NS, ttl, encodeName(`ns.${origin}`))]));
  apex.set(TYPE.ANY, apex.get(TYPE.SOA)!);
  for (const [raw, addresses] of zone.records) {
    const name = raw.toLowerCase().replace(/\.$/, '');
    if (!name.endsWith(`.${origin}`)) continue;
    // Empty non-terminals (a name with names below it) exist: NODATA, not NXDOMAIN (RFC 8020).
    for (let parent = name.slice(name.indexOf('.') + 1); parent.length > origin.length; parent = parent.slice(parent.indexOf('.') + 1)) node(parent);
    const types = node(name);
    if (addresses.length === 0) continue;
    const a = answers(addresses.map((address) => record(QUESTION_NAME, TYPE.A, ttl, ipv4(address))));
    types.set(TYPE.A, a);
    if (!types.has(TYPE.ANY)) types.set(TYPE.ANY, a);
  }
  return {
    origin,
    answer(query) {
      if (query.class !== CLASS_IN) return refused; // CH, HS, ANY: we serve one IN zone
      if (query.name !== origin && !query.name.endsWith(`.${origin}`)) return refused;
      if (query.type === TYPE.AXFR || query.type === TYPE.IXFR) return refused; // no zone transfers
      const types = names.get(query.name);
      if (!types) return nxdomain;
      return types.get(query.type) ?? nodata;
    },
  };
}

/** Our OPT record (RFC 6891 6.1.2): payload size, extended rcode, version 0, the DO bit echoed. */
export function optRecord(rcode: number, dnssecOk: boolean): Buffer {
  const opt = Buffer.alloc(11);
  opt.writeUInt16BE(TYPE.OPT, 1);
  opt.writeUInt16BE(UDP_PAYLOAD, 3);
  opt[5] = rcode >> 4;
  opt[7] = dnssecOk ? 0x80 : 0;
  return opt;
}
const OPT_PLAIN = optRecord(0, false);

/** Our OPT for an EDNS query (the shared plain one unless the DO bit or an extended rcode must be in it), else none. */
const optFor = (answer: Prebuilt, edns: Edns | undefined): Buffer | undefined =>
  edns === undefined ? undefined : edns.dnssecOk || answer.rcode > 15 ? optRecord(answer.rcode, edns.dnssecOk) : OPT_PLAIN;

/**
 * The query's header and question into `out` at `at`: ID, opcode, RD, CD and the asker's letter case
 * kept; QR, AA, TC, RCODE and the counts written over them.
 */
function writeHead(out: Buffer, at: number, msg: Buffer, questionEnd: number, answer: Prebuilt, withBody: boolean, opt: boolean): void {
  msg.copy(out, at, 0, questionEnd);
  out[at + 2] = 0x80 | (msg[2]! & 0x79) | (answer.aa ? 0x04 : 0) | (answer.partial || !withBody ? 0x02 : 0); // QR, opcode, AA, TC, RD
  out[at + 3] = (msg[3]! & 0x10) | (answer.rcode & 0x0f); // RA=0 (no recursion here), Z=0, AD=0, CD echoed
  out.writeUInt16BE(questionEnd > 12 ? 1 : 0, at + 4);
  out.writeUInt16BE(withBody ? answer.ancount : 0, at + 6);
  out.writeUInt16BE(withBody ? answer.nscount : 0, at + 8);
  out.writeUInt16BE(opt ? 1 : 0, at + 10);
}

/**
 * A UDP response as one buffer, for one send: the query's header and question, patched, then the
 * prebuilt sections and our OPT, or the question alone with TC when they would pass `udpLimit`.
 */
export function respond(msg: Buffer, questionEnd: number, answer: Prebuilt, edns: Edns | undefined, udpLimit: number): Buffer {
  const opt = optFor(answer, edns);
  const optLength = opt ? 11 : 0;
  const withBody = questionEnd + answer.body.length + optLength <= udpLimit;
  const bodyLength = withBody ? answer.body.length : 0;
  const out = Buffer.allocUnsafe(questionEnd + bodyLength + optLength);
  writeHead(out, 0, msg, questionEnd, answer, withBody, opt !== undefined);
  if (bodyLength) answer.body.copy(out, questionEnd);
  if (opt) opt.copy(out, questionEnd + bodyLength);
  return out;
}

/**
 * A TCP response as parts for one corked write: TCP's 2-byte length (RFC 1035 4.2.2) with the patched
 * header and question, then the prebuilt sections and our OPT themselves, never copied: a 1000-record
 * answer is 16 KB, and a fresh 16 KB buffer per query left each worker's malloc heap 8 MB bigger after
 * the bench's TCP load.
 */
export function respondTcp(msg: Buffer, questionEnd: number, answer: Prebuilt, edns: Edns | undefined): Buffer[] {
  const opt = optFor(answer, edns);
  const head = Buffer.allocUnsafe(2 + questionEnd);
  head.writeUInt16BE(questionEnd + answer.body.length + (opt ? 11 : 0), 0);
  writeHead(head, 2, msg, questionEnd, answer, true, opt !== undefined);
  const parts: Buffer[] = [head];
  if (answer.body.length) parts.push(answer.body);
  if (opt) parts.push(opt);
  return parts;
}

/** The UDP size limit for one query: 512 without EDNS, else what the asker offers, at most ours. */
export function udpLimitOf(edns: Edns | undefined): number {
  return edns === undefined ? UDP_PLAIN : Math.min(Math.max(edns.payload, UDP_PLAIN), UDP_PAYLOAD);
}

export const noAnswer = (rcode: number): Prebuilt => ({ rcode, aa: false, body: Buffer.alloc(0), ancount: 0, nscount: 0, partial: false });
