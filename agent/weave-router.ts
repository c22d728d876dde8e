// The Weave router's control API, as the agent uses it: tell it which peers to dial and which to drop, and ask
// whether it is up. The routes and forms are the router's own (rajch/weave router/http.go, prog/weaver/http.go):
// POST /connect with form fields `peer` (repeatable) and `replace=true` to swap the whole set, POST /forget with
// `peer`, GET /status (503 until the router is ready). It listens on loopback only (weave.service passes
// --http-addr 127.0.0.1:6784), so nothing but this node can change its peers.
import * as http from 'node:http';

export const WEAVE_HTTP_ADDR = '127.0.0.1:6784';

export class WeaveRouterError extends Error {
  constructor(
    /** The route asked: connect, forget or status. */
    readonly route: string,
    message: string,
  ) {
    super(`weave router ${route}: ${message}`);
    this.name = 'WeaveRouterError';
  }
}

export interface WeaveRouterOptions {
  /** host:port of the router's --http-addr. */
  address: string;
  timeoutMs: number;
}

export const DEFAULT_ROUTER_OPTIONS: WeaveRouterOptions = { address: WEAVE_HTTP_ADDR, timeoutMs: 5_000 };

function request(opts: WeaveRouterOptions, route: string, method: 'GET' | 'POST', path: string, form?: URLSearchParams): Promise<{ code: number; body: string }> {
  const [host, port] = [opts.address.slice(0, opts.address.lastIndexOf(':')), Number(opts.address.slice(opts.address.lastIndexOf(':') + 1))];
  const body = form?.toString();
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host,
        port,
        method,
        path,
        timeout: opts.timeoutMs,
        headers: body === undefined ? {} : { 'Content-Type': 'application/x-www-form-urlencoded', 'Content-Length': Buffer.byteLength(body) },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve({ code: res.statusCode ?? 0, body: text }));
        res.on('error', (err) => reject(new WeaveRouterError(route, err.message)));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer from ${opts.address} within ${opts.timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) =>
      reject(new WeaveRouterError(route, err.code === 'ECONNREFUSED' ? `nothing listens on ${opts.address} (is weave.service running?)` : err.message)),
    );
    req.end(body);
  });
}

/** The first line of the router's error text (it joins one message per refused peer with newlines). */
const firstLine = (text: string) => text.trim().split('\n')[0] ?? '';

async function post(opts: WeaveRouterOptions, route: 'connect' | 'forget', form: URLSearchParams): Promise<void> {
  const { code, body } = await request(opts, route, 'POST', `/${route}`, form);
  if (code < 200 || code > 299) throw new WeaveRouterError(route, `HTTP ${code}: ${firstLine(body) || 'no message'}`);
}

/**
 * Dial `peers`; with `replace`, they become the whole set of peers the router keeps dialling (a peer
 * left out is no longer redialled, though a live connection stays until the peer is forgotten).
 */
export function connectPeers(peers: readonly string[], replace: boolean, opts: WeaveRouterOptions = DEFAULT_ROUTER_OPTIONS): Promise<void> {
  const form = new URLSearchParams(peers.map((p) => ['peer', p]));
  if (replace) form.append('replace', 'true');
  return post(opts, 'connect', form);
}

/** Stop dialling `peers` (the router drops them from its targets). */
export function forgetPeers(peers: readonly string[], opts: WeaveRouterOptions = DEFAULT_ROUTER_OPTIONS): Promise<void> {
  return post(opts, 'forget', new URLSearchParams(peers.map((p) => ['peer', p])));
}

export interface RouterStatus {
  /** false while the router answers 503 (starting, or IPAM not ready). */
  ready: boolean;
  /** The router's own status text. */
  text: string;
}

export async function routerStatus(opts: WeaveRouterOptions = DEFAULT_ROUTER_OPTIONS): Promise<RouterStatus> {
  const { code, body } = await request(opts, 'status', 'GET', '/status');
  if (code !== 200 && code !== 503) throw new WeaveRouterError('status', `HTTP ${code}: ${firstLine(body) || 'no message'}`);
  return { ready: code === 200, text: body };
}
