// DNS messages byte by byte, for tests that must send what no well-behaved client would (two questions,
// QR=1, a cut-off packet, an unknown EDNS version) and read every header bit of the reply. Written from
// RFC 1035 4.1 and RFC 6891 6.1, independently of the server's own wire code, so the two check each other.
import * as dgram from 'node:dgram';
import * as net from 'node:net';

export interface RawQuery {
  id?: number;
  /** The whole flags word; default RD only. */
  flags?: number;
  name?: string;
  type?: number;
  class?: number;
  /** Questions to write (each the same); default 1. */
  questions?: number;
  /** An OPT record; `count` > 1 writes it that many times. */
  edns?: { payload?: number; version?: number; dnssecOk?: boolean; count?: number };
}

export function encodeName(name: string): Buffer {
  const labels = name.replace(/\.$/, '').split('.').filter(Boolean);
  return Buffer.concat([...labels.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'latin1')])), Buffer.from([0])]);
}

export function rawQuery(q: RawQuery = {}): Buffer {
  const questions = q.questions ?? 1;
  const header = Buffer.alloc(12);
  header.writeUInt16BE(q.id ?? 0x1234, 0);
  header.writeUInt16BE(q.flags ?? 0x0100, 2);
  header.writeUInt16BE(questions, 4);
  header.writeUInt16BE(q.edns ? (q.edns.count ?? 1) : 0, 10);
  const fixed = Buffer.alloc(4);
  fixed.writeUInt16BE(q.type ?? 1, 0);
  fixed.writeUInt16BE(q.class ?? 1, 2);
  const question = Buffer.concat([encodeName(q.name ?? 'masters.lab.k8s'), fixed]);
  const opts: Buffer[] = [];
  for (let i = 0; q.edns && i < (q.edns.count ?? 1); i++) {
    const opt = Buffer.alloc(11);
    opt.writeUInt16BE(41, 1);
    opt.writeUInt16BE(q.edns.payload ?? 1232, 3);
    opt[6] = q.edns.version ?? 0;
    opt[7] = q.edns.dnssecOk ? 0x80 : 0;
    opts.push(opt);
  }
  return Buffer.concat([header, ...Array<Buffer>(questions).fill(question), ...opts]);
}

export interface RawResponse {
  id: number;
  qr: boolean;
  opcode: number;
  aa: boolean;
  tc: boolean;
  rd: boolean;
  ra: boolean;
  cd: boolean;
  /** The full rcode: the header's 4 bits plus the OPT record's upper 8. */
  rcode: number;
  qdcount: number;
  /** The question name as written back (letter case kept). */
  question: string | undefined;
  answers: { type: number; ttl: number; data: string }[];
  authority: { type: number }[];
  opt: { payload: number; version: number; dnssecOk: boolean } | undefined;
  size: number;
}

function readName(msg: Buffer, at: number): { name: string; end: number } {
  const labels: string[] = [];
  let end = -1;
  for (let hops = 0; hops < 64; hops++) {
    const len = msg[at]!;
    if ((len & 0xc0) === 0xc0) {
      if (end < 0) end = at + 2;
      at = msg.readUInt16BE(at) & 0x3fff;
      continue;
    }
    if (len === 0) return { name: labels.join('.'), end: end < 0 ? at + 1 : end };
    labels.push(msg.toString('latin1', at + 1, at + 1 + len));
    at += 1 + len;
  }
  throw new Error('name loop');
}

export function parseResponse(msg: Buffer): RawResponse {
  const flags = msg.readUInt16BE(2);
  const qdcount = msg.readUInt16BE(4);
  let at = 12;
  let question: string | undefined;
  for (let i = 0; i < qdcount; i++) {
    const { name, end } = readName(msg, at);
    question ??= name;
    at = end + 4;
  }
  const sections: { type: number; ttl: number; data: string; cls: number }[][] = [[], [], []];
  for (let s = 0; s < 3; s++) {
    for (let i = 0; i < msg.readUInt16BE(6 + 2 * s); i++) {
      at = readName(msg, at).end;
      const type = msg.readUInt16BE(at);
      const cls = msg.readUInt16BE(at + 2);
      const ttl = msg.readUInt32BE(at + 4);
      const len = msg.readUInt16BE(at + 8);
      const rdata = msg.subarray(at + 10, at + 10 + len);
      sections[s]!.push({ type, cls, ttl, data: type === 1 ? [...rdata].join('.') : rdata.toString('hex') });
      at += 10 + len;
    }
  }
  const optRr = sections[2]!.find((r) => r.type === 41);
  return {
    id: msg.readUInt16BE(0),
    qr: (flags & 0x8000) !== 0,
    opcode: (flags >> 11) & 0xf,
    aa: (flags & 0x0400) !== 0,
    tc: (flags & 0x0200) !== 0,
    rd: (flags & 0x0100) !== 0,
    ra: (flags & 0x0080) !== 0,
    cd: (flags & 0x0010) !== 0,
    rcode: (flags & 0xf) | ((optRr ? optRr.ttl >>> 24 : 0) << 4),
    qdcount,
    question,
    answers: sections[0]!.map(({ type, ttl, data }) => ({ type, ttl, data })),
    authority: sections[1]!.map(({ type }) => ({ type })),
    opt: optRr && { payload: optRr.cls, version: (optRr.ttl >>> 16) & 0xff, dnssecOk: (optRr.ttl & 0x8000) !== 0 },
    size: msg.length,
  };
}

/** A UDP socket on loopback that sends raw messages and hands back the replies in order of arrival. */
export async function udpClient(port: number): Promise<{ send(msg: Buffer): void; next(what: string, ms?: number): Promise<Buffer>; close(): void }> {
  const socket = dgram.createSocket('udp4');
  const replies: Buffer[] = [];
  const waiting: ((msg: Buffer) => void)[] = [];
  socket.on('message', (msg) => {
    const w = waiting.shift();
    if (w) w(msg);
    else replies.push(msg);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return {
    send: (msg) => socket.send(msg, port, '127.0.0.1'),
    next: (what, ms = 2000) => {
      const ready = replies.shift();
      if (ready) return Promise.resolve(ready);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiting.splice(waiting.indexOf(done), 1);
          reject(new Error(`no UDP reply to ${what} from port ${port} within ${ms} ms`));
        }, ms);
        const done = (msg: Buffer) => {
          clearTimeout(timer);
          resolve(msg);
        };
        waiting.push(done);
      });
    },
    close: () => socket.close(),
  };
}

/** One query over UDP, its reply parsed. */
export async function askUdp(port: number, q: RawQuery | Buffer, ms?: number): Promise<RawResponse> {
  const client = await udpClient(port);
  try {
    client.send(Buffer.isBuffer(q) ? q : rawQuery(q));
    return parseResponse(await client.next(`a query`, ms));
  } finally {
    client.close();
  }
}

export const frame = (msg: Buffer) => Buffer.concat([Buffer.from([msg.length >> 8, msg.length & 0xff]), msg]);

/** A TCP connection that reads length-prefixed replies (RFC 1035 4.2.2) and notices when the server closes. */
export async function tcpClient(port: number): Promise<{
  socket: net.Socket;
  next(what: string, ms?: number): Promise<Buffer>;
  closed(what: string, ms?: number): Promise<number>;
}> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let data = Buffer.alloc(0);
  const replies: Buffer[] = [];
  let wake = () => {};
  let closedAt: number | undefined;
  socket.on('error', () => {});
  socket.on('data', (chunk) => {
    data = Buffer.concat([data, chunk]);
    while (data.length >= 2 && data.length >= 2 + data.readUInt16BE(0)) {
      replies.push(data.subarray(2, 2 + data.readUInt16BE(0)));
      data = data.subarray(2 + data.readUInt16BE(0));
    }
    wake();
  });
  socket.on('close', () => {
    closedAt = Date.now();
    wake();
  });
  const waitFor = <T>(ready: () => T | undefined, what: string, ms: number, closeEnds: boolean): Promise<T> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
      wake = () => {
        const v = ready();
        if (v !== undefined) {
          clearTimeout(timer);
          resolve(v);
        } else if (closeEnds && closedAt !== undefined) {
          clearTimeout(timer);
          reject(new Error(`${what}: the server closed the connection`));
        }
      };
      wake();
    });
  return {
    socket,
    next: (what, ms = 2000) => waitFor(() => replies.shift(), `TCP reply to ${what}`, ms, true),
    closed: (what, ms = 2000) => waitFor(() => closedAt, `the server closing ${what}`, ms, false),
  };
}
