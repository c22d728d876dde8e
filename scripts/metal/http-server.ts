// The HTTP half of the metal server: iPXE scripts, NoCloud seeds and the image's kernel and initrd.
// Every request reads the current inventory once at its start, so a reload never changes a request
// half-way, and every request ends in exactly one log line.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { describeError } from '../../agent/errors.js';
import { bootScript, machineScript, metaData, networkConfig } from './boot-files.js';
import { machineByMac, type Inventory, type Machine } from './inventory.js';

export interface HttpState {
  inventory: Inventory;
  /** What machines put in front of our paths: `http://ADVERTISE:PORT`. */
  baseUrl: string;
  extraKernelArgs: readonly string[];
  /** The DNS server machines reach us at: named in network-config, so the system resolver (glibc) asks it. */
  nameserver: { host: string; port: number };
  userData(machine: Machine): Promise<string>;
}

export interface HttpServerOptions {
  state: () => HttpState;
  imageDir: string;
  address: string;
  port: number;
  log: (line: string) => void;
}

export interface HttpServer {
  port: number;
  close(): Promise<void>;
}

/** The image files a machine may fetch, by URL name. */
const IMAGE_FILES = ['vmlinuz', 'initrd'];
const SEED_FILES = ['meta-data', 'user-data', 'vendor-data', 'network-config'];

export type ByteRange = { start: number; end: number };

/**
 * A `Range` header against a file of `size` bytes: one range (`a-b`, `a-`, `-n`), `'unsatisfiable'`
 * for a range that starts past the end, or undefined for "send it all" (no header, or several ranges
 * or a unit we do not serve, which RFC 9110 lets a server ignore).
 */
export function parseRange(header: string | undefined, size: number): ByteRange | 'unsatisfiable' | undefined {
  const m = header === undefined ? null : /^bytes=\s*(\d*)-(\d*)\s*$/.exec(header);
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size) return 'unsatisfiable';
  if (end < start) return undefined; // a syntactically invalid range is ignored, not refused
  return { start, end };
}

/** What the request's log line says besides method, path and status; set before the response ends. */
interface RequestLog {
  note: string;
}

export async function startHttpServer(opts: HttpServerOptions): Promise<HttpServer> {
  const server = createServer((req, res) => {
    const from = req.socket.remoteAddress ?? '?';
    const method = req.method ?? '?';
    const url = req.url ?? '/';
    const log: RequestLog = { note: '' };
    res.on('close', () => {
      const aborted = res.writableFinished ? '' : ' aborted';
      opts.log(`http ${from} ${method} ${url} ${res.statusCode}${log.note ? ` ${log.note}` : ''}${aborted}`);
    });
    handle(opts, opts.state(), req, res, log).catch((err: unknown) => {
      log.note = `${log.note ? `${log.note} ` : ''}error=${JSON.stringify(describeError(err))}`;
      if (!res.headersSent) send(res, 500, 'internal error\n');
      else res.destroy();
    });
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.address, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function handle(opts: HttpServerOptions, state: HttpState, req: IncomingMessage, res: ServerResponse, log: RequestLog): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    return send(res, 405, 'only GET and HEAD\n');
  }
  const url = new URL(req.url ?? '/', 'http://metal.invalid');
  const parts = url.pathname.split('/').filter(Boolean);

  if (url.pathname === '/boot.ipxe') return send(res, 200, bootScript(state.baseUrl));

  if (url.pathname === '/ipxe') {
    const mac = url.searchParams.get('mac') ?? '';
    const machine = machineByMac(state.inventory, mac);
    if (!machine) return unknownMac(res, log, mac);
    log.note = machineNote(machine);
    return send(res, 200, machineScript(state.baseUrl, machine, networkConfig(state.inventory, machine, state.nameserver), state.extraKernelArgs));
  }

  if (parts[0] === 'nocloud' && parts.length === 3 && SEED_FILES.includes(parts[2]!)) {
    const machine = machineByMac(state.inventory, parts[1]!);
    if (!machine) return unknownMac(res, log, parts[1]!);
    log.note = machineNote(machine);
    const file = parts[2];
    const body =
      file === 'meta-data'
        ? metaData(state.inventory, machine)
        : file === 'network-config'
          ? networkConfig(state.inventory, machine, state.nameserver)
          : file === 'user-data'
            ? await state.userData(machine)
            : ''; // vendor-data: empty, but present (a 404 costs cloud-init 11 s of retries)
    return send(res, 200, body);
  }

  if (parts[0] === 'image' && parts.length === 2 && IMAGE_FILES.includes(parts[1]!)) {
    return sendFile(req, res, log, path.join(opts.imageDir, parts[1]!));
  }
  return send(res, 404, 'not found\n');
}

function machineNote(machine: Machine): string {
  return `host=${machine.hostname} role=${machine.role}`;
}

function unknownMac(res: ServerResponse, log: RequestLog, mac: string): void {
  log.note = `unknown-mac=${JSON.stringify(mac)}`;
  send(res, 404, `no machine with MAC ${JSON.stringify(mac)} in the inventory\n`);
}

function send(res: ServerResponse, status: number, body: string): void {
  const bytes = Buffer.from(body, 'utf8');
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': bytes.length, 'Cache-Control': 'no-store' });
  res.end(res.req.method === 'HEAD' ? undefined : bytes);
}

async function sendFile(req: IncomingMessage, res: ServerResponse, log: RequestLog, file: string): Promise<void> {
  const info = await stat(file).catch(() => undefined);
  if (!info?.isFile()) {
    log.note = `missing=${JSON.stringify(file)}`;
    return send(res, 404, `${path.basename(file)} is not in the image directory\n`);
  }
  const size = info.size;
  const range = parseRange(req.headers.range, size);
  const headers = { 'Content-Type': 'application/octet-stream', 'Accept-Ranges': 'bytes', 'Last-Modified': info.mtime.toUTCString() };
  if (range === 'unsatisfiable') {
    log.note = `range=${JSON.stringify(req.headers.range)} size=${size}`;
    res.writeHead(416, { ...headers, 'Content-Range': `bytes */${size}`, 'Content-Length': 0 });
    res.end();
    return;
  }
  const { start, end } = range ?? { start: 0, end: size - 1 };
  const length = size === 0 ? 0 : end - start + 1;
  log.note = range ? `bytes=${start}-${end}/${size}` : `bytes=${size}`;
  res.writeHead(range ? 206 : 200, {
    ...headers,
    'Content-Length': length,
    ...(range && { 'Content-Range': `bytes ${start}-${end}/${size}` }),
  });
  if (req.method === 'HEAD' || length === 0) {
    res.end();
    return;
  }
  const stream = createReadStream(file, { start, end });
  // A file that vanishes mid-send cannot get a status any more: cut the connection so the client
  // sees a short body rather than a complete-looking one.
  stream.on('error', () => res.destroy());
  res.on('close', () => stream.destroy());
  stream.pipe(res);
}
