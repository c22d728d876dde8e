// Child process of the DNS bench: a small load generator, the same for every server. UDP keeps a
// window of queries in flight on one socket (a query unanswered for a second counts as lost and is
// replaced); TCP opens a new connection per query, as the agent does after a truncated answer.
// Bounded in count and time. Usage: dns-load HOST PORT NAME udp|tcp INFLIGHT SECONDS MAXQUERIES
// Prints one JSON line: answered, lost, qps, and what the answers held (rcode, records, TC).
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';

/** An A query for `name` with id 0 (patched per send) and RD clear: an authoritative question. */
function query(name: string): Buffer {
  const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'ascii')]));
  const header = Buffer.alloc(12);
  header.writeUInt16BE(1, 4); // QDCOUNT
  return Buffer.concat([header, ...labels, Buffer.from([0, 0, 1, 0, 1])]);
}

interface Tally {
  answered: number;
  lost: number;
  errors: number;
  rcodes: Record<number, number>;
  ancount: number;
  truncated: number;
}

function record(t: Tally, reply: Buffer): void {
  t.answered++;
  const rcode = (reply.readUInt8(3) ?? 0) & 15;
  t.rcodes[rcode] = (t.rcodes[rcode] ?? 0) + 1;
  t.ancount = reply.readUInt16BE(6);
  if ((reply.readUInt8(2) ?? 0) & 2) t.truncated++;
}

function udpLoad(host: string, port: number, packet: Buffer, inflight: number, until: number, max: number, t: Tally): Promise<void> {
  return new Promise((resolve) => {
    const socket = dgram.createSocket('udp4');
    const pending = new Map<number, number>();
    let sent = 0;
    let nextId = 0;
    const send = () => {
      if (sent >= max || performance.now() >= until) {
        if (!pending.size) finish();
        return;
      }
      nextId = (nextId + 1) & 0xffff;
      while (pending.has(nextId)) nextId = (nextId + 1) & 0xffff;
      const copy = Buffer.from(packet);
      copy.writeUInt16BE(nextId, 0);
      pending.set(nextId, performance.now());
      sent++;
      socket.send(copy, port, host);
    };
    const sweep = setInterval(() => {
      const old = performance.now() - 1000;
      for (const [id, at] of pending)
        if (at < old) {
          pending.delete(id);
          t.lost++;
          send();
        }
    }, 100);
    const finish = () => {
      clearInterval(sweep);
      socket.close();
      resolve();
    };
    socket.on('message', (reply) => {
      const id = reply.readUInt16BE(0);
      if (!pending.delete(id)) return;
      record(t, reply);
      send();
    });
    socket.on('error', () => t.errors++);
    for (let i = 0; i < inflight; i++) send();
  });
}

function tcpOne(host: string, port: number, packet: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, host);
    const framed = Buffer.alloc(packet.length + 2);
    framed.writeUInt16BE(packet.length, 0);
    packet.copy(framed, 2);
    let got = Buffer.alloc(0);
    socket.setTimeout(2000, () => socket.destroy(new Error('timeout')));
    socket.on('connect', () => socket.write(framed));
    socket.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (got.length >= 2 && got.length >= got.readUInt16BE(0) + 2) {
        socket.destroy();
        resolve(got.subarray(2, got.readUInt16BE(0) + 2));
      }
    });
    socket.on('error', reject);
    socket.on('close', () => reject(new Error('closed before a whole answer')));
  });
}

async function tcpLoad(host: string, port: number, packet: Buffer, inflight: number, until: number, max: number, t: Tally): Promise<void> {
  let sent = 0;
  const worker = async () => {
    while (sent < max && performance.now() < until) {
      sent++;
      try {
        record(t, await tcpOne(host, port, packet));
      } catch {
        t.errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: inflight }, worker));
}

async function main(): Promise<void> {
  const [host = '127.0.0.1', port = '53', name = '', transport = 'udp', inflight = '32', seconds = '2', max = '1000000'] = process.argv.slice(2);
  const t: Tally = { answered: 0, lost: 0, errors: 0, rcodes: {}, ancount: 0, truncated: 0 };
  const started = performance.now();
  const until = started + Number(seconds) * 1000;
  const load = transport === 'tcp' ? tcpLoad : udpLoad;
  await load(host, Number(port), query(name), Number(inflight), until, Number(max), t);
  const elapsed = (performance.now() - started) / 1000;
  process.stdout.write(`${JSON.stringify({ ...t, seconds: elapsed, qps: t.answered / elapsed })}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
