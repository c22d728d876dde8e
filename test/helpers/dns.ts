// A real authoritative DNS server on loopback (the metal server's own), for tests that need one.
import * as dgram from 'node:dgram';
import type { AddressInfo } from 'node:net';
import { startDnsServer, type DnsServer } from '../../scripts/metal/dns-server.js';

export interface TestZone {
  server: DnsServer;
  nameserver: string; // `127.0.0.1:PORT` or `[::1]:PORT`, as --nameserver takes it
  records: Map<string, string[]>;
  queries: { name: string; transport: string }[];
  close(): Promise<void>;
}

export async function startTestDns(origin: string, records: Record<string, string[]>, ttl = 5, address = '127.0.0.1'): Promise<TestZone> {
  const map = new Map(Object.entries(records).map(([k, v]) => [k.toLowerCase(), v]));
  const queries: { name: string; transport: string }[] = [];
  const server = await startDnsServer({
    zone: () => ({ origin, records: map, ttl }),
    address,
    onQuery: (q) => queries.push({ name: q.name, transport: q.transport }),
  });
  const host = address.includes(':') ? `[${address}]` : address;
  return { server, nameserver: `${host}:${server.port}`, records: map, queries, close: () => server.close() };
}

/** `n` distinct addresses in 10.0.0.0/8 (test data only: nothing is ever sent to them). */
export function manyAddresses(n: number, offset = 1): string[] {
  return Array.from({ length: n }, (_, i) => {
    const v = i + offset;
    return `10.${(v >> 16) & 255}.${(v >> 8) & 255}.${v & 255}`;
  });
}

/** A UDP-only server that sets TC on every answer; nothing listens on TCP at its port. */
export async function truncatingUdpServer(t: { teardown(fn: () => unknown): void }): Promise<number> {
  const sock = dgram.createSocket('udp4');
  sock.on('message', (msg, rinfo) => {
    const reply = Buffer.from(msg);
    reply[2] = (reply[2]! | 0x80 | 0x04 | 0x02) & 0xff; // QR, AA, TC
    sock.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  t.teardown(() => sock.close());
  return (sock.address() as AddressInfo).port;
}
