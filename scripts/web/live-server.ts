// The live page's server: GET / is the page, GET /events a server-sent event stream that carries the
// re-rendered view whenever something changed (and every few seconds, so open stretches keep growing).
// The browser only listens: no polling loop. Binds 127.0.0.1 unless told otherwise: the page shows what
// nodes wait on, which is nobody else's business.
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { renderPage, renderView, type PageModel } from './page.js';

export interface LiveOptions {
  /** 0 picks a free port. */
  port: number;
  host?: string;
  /** How often open stretches are redrawn when nothing else changed. */
  tickMs?: number;
}

export interface LiveServer {
  url: string;
  /** Something in the model changed: push the view to every open page (coalesced). */
  changed(): void;
  close(): Promise<void>;
}

export async function serveLivePage(model: () => PageModel, opts: LiveOptions): Promise<LiveServer> {
  const clients = new Set<ServerResponse>();
  const send = (res: ServerResponse) => res.write(`event: view\ndata: ${JSON.stringify(renderView(model()))}\n\n`);
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (req.method !== 'GET') {
      res.writeHead(405, { allow: 'GET' }).end();
    } else if (url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(renderPage({ ...model(), live: true }));
    } else if (url.pathname === '/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
      res.write('retry: 2000\n\n');
      clients.add(res);
      req.on('close', () => clients.delete(res));
      send(res);
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '127.0.0.1', () => resolve());
  });
  let pending: NodeJS.Timeout | undefined;
  const changed = () => {
    // Several nodes often answer within the same moment: one push for all of them.
    pending ??= setTimeout(() => {
      pending = undefined;
      for (const res of clients) send(res);
    }, 50);
  };
  const tick = setInterval(changed, opts.tickMs ?? 5000);
  const { address, port } = server.address() as AddressInfo;
  return {
    url: `http://${address.includes(':') ? `[${address}]` : address}:${port}/`,
    changed,
    close: async () => {
      clearInterval(tick);
      clearTimeout(pending);
      for (const res of clients) res.end();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
