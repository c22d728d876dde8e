// Minions wait for a ready API server before they start the kubelet: the masters' name must resolve
// through the cluster's nameserver, and `GET <API_ENDPOINT>/readyz` must answer 200 from one of them.
import * as http from 'node:http';
import * as https from 'node:https';
import { isIP } from 'node:net';
import { abortable, sleep } from './abort.js';
import { DnsError, queryA, type Nameserver } from './dns.js';
import { unusableReason } from './peers.js';
import type { Phase, PhaseContext } from './phase.js';

/** Installed by the secure-bootstrap phase; without it https uses the system's trust store. */
export const CA_FILE = '/etc/kubernetes/pki/ca.crt';

export interface WaitTiming {
  /** First retry delay; it doubles per failed attempt up to capMs. */
  baseMs: number;
  /** Longest pause between attempts, so a master that becomes ready is noticed within about this. */
  capMs: number;
  dnsTimeoutMs: number;
  httpTimeoutMs: number;
  random: () => number;
}

export const DEFAULT_TIMING: WaitTiming = { baseMs: 100, capMs: 1000, dnsTimeoutMs: 1000, httpTimeoutMs: 2000, random: Math.random };

/** Pause before attempt n+1: exponential, capped, with jitter in [delay/2, delay) so minions spread out. */
export function backoffDelay(attempt: number, t: Pick<WaitTiming, 'baseMs' | 'capMs' | 'random'>): number {
  const delay = Math.min(t.capMs, t.baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(delay / 2 + (t.random() * delay) / 2);
}

/**
 * Not ready; `refused` is set when every master answered with a certificate this node will never accept
 * (not signed by the cluster's CA, or not naming the endpoint's host): waiting cannot fix that, so the
 * wait ends with this reason in `agent status` instead of going on for ever.
 */
export type Attempt =
  | { ready: true; masters: string[]; via: string }
  | { ready: false; masters: string[]; waitingOn: string; refused?: string };

/**
 * TLS verification failures that retrying does not cure, once the cluster's CA is installed. Validity
 * errors (CERT_NOT_YET_VALID, CERT_HAS_EXPIRED) are not among them: a clock NTP has not set yet causes
 * those, and they pass when it does.
 */
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
]);

type Readyz = { status: 200 } | { failure: string; refused?: string };

/**
 * The answer's addresses a master can have, each once. Unspecified, broadcast, multicast, link-local
 * (169.254.169.254 is the cloud's metadata service) and reserved answers are never asked for /readyz, so
 * a forged record cannot point minions at them. Loopback stays: a one-machine cluster is its own master.
 */
export function usableMasters(addresses: readonly string[]): string[] {
  return [...new Set(addresses)].filter((a) => {
    const reason = unusableReason(a);
    return reason === undefined || reason === 'loopback';
  });
}

/** One look: resolve the endpoint's host, then ask each address for /readyz until one says 200. */
export async function attemptOnce(
  endpoint: string,
  nameserver: Nameserver,
  ca: string | undefined,
  signal: AbortSignal,
  t: Pick<WaitTiming, 'dnsTimeoutMs' | 'httpTimeoutMs'> = DEFAULT_TIMING,
): Promise<Attempt> {
  const url = new URL(endpoint);
  const readyz = `${url.origin}${url.pathname.replace(/\/+$/, '')}/readyz`;
  const hostname = url.hostname.replace(/^\[|\]$/g, '');
  let masters: string[];
  if (isIP(hostname)) masters = [hostname];
  else {
    const ns = `${nameserver.host}:${nameserver.port}`;
    try {
      const answer = await abortable(queryA(hostname, nameserver, { timeoutMs: t.dnsTimeoutMs }), signal);
      if (answer.rcode !== 'NOERROR') return { ready: false, masters: [], waitingOn: `DNS ${hostname} (${answer.rcode} from ${ns})` };
      masters = usableMasters(answer.addresses);
      if (!masters.length) {
        const dropped = answer.addresses.length ? `: ${answer.addresses.map((a) => `${a} ${unusableReason(a)}`).join(', ')}` : '';
        return { ready: false, masters, waitingOn: `DNS ${hostname} (no usable A records at ${ns}${dropped})` };
      }
    } catch (err) {
      if (!(err instanceof DnsError)) throw err;
      return { ready: false, masters: [], waitingOn: `DNS ${hostname} (${err.reason}: ${ns})` };
    }
  }
  const failures: string[] = [];
  const refusals: string[] = [];
  for (const address of masters) {
    const answer = await getReadyz(url, address, ca, t.httpTimeoutMs, signal);
    if ('status' in answer) return { ready: true, masters, via: address };
    failures.push(`${answer.failure} from ${address}`);
    if (answer.refused) refusals.push(answer.refused);
  }
  const waitingOn = `${readyz} (${failures.join(', ')})`;
  if (refusals.length === masters.length) return { ready: false, masters, waitingOn, refused: `${endpoint}: ${refusals.join('; ')}` };
  return { ready: false, masters, waitingOn };
}

/** Why a TLS error means this master will never be accepted, or undefined when waiting may cure it. */
function refusal(err: NodeJS.ErrnoException & { reason?: string; cert?: { subjectaltname?: string } }, address: string, ca: string | undefined): string | undefined {
  if (err.code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return `the certificate at ${address} does not name the endpoint's host (${err.reason ?? err.message}); it names ${err.cert?.subjectaltname ?? 'nothing'}: set API_ENDPOINT to one of those or leave it out`;
  }
  if (ca && err.code && UNTRUSTED.has(err.code)) return `the certificate at ${address} is not signed by the cluster's CA (${CA_FILE}): ${err.code}`;
  return undefined;
}

/** 200 from /readyz at one address, or why not (refused, timed out, an HTTP status, TLS...). */
function getReadyz(url: URL, address: string, ca: string | undefined, timeoutMs: number, signal: AbortSignal): Promise<Readyz> {
  const secure = url.protocol === 'https:';
  const hostname = url.hostname.replace(/^\[|\]$/g, '');
  const options: https.RequestOptions = {
    host: address,
    port: url.port ? Number(url.port) : secure ? 443 : 80,
    method: 'GET',
    path: `${url.pathname.replace(/\/+$/, '')}/readyz`,
    headers: { host: url.host, accept: '*/*' },
    agent: false,
    ...(secure ? { ...(isIP(hostname) ? {} : { servername: hostname }), ...(ca ? { ca } : {}) } : {}),
  };
  return new Promise((resolve) => {
    const req = (secure ? https : http).request(options, (res) => {
      res.resume();
      finish(res.statusCode === 200 ? { status: 200 } : { failure: `HTTP ${res.statusCode}` });
    });
    const timer = setTimeout(() => req.destroy(new Error(`no answer in ${timeoutMs} ms`)), timeoutMs);
    const onAbort = () => req.destroy(new Error('interrupted'));
    signal.addEventListener('abort', onAbort, { once: true });
    const finish = (result: Readyz) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      req.destroy();
      resolve(result);
    };
    req.on('error', (err: NodeJS.ErrnoException) => {
      const failure = err.code === 'ECONNREFUSED' ? 'connection refused' : (err.code ?? err.message);
      const refused = secure ? refusal(err, address, ca) : undefined;
      finish(refused ? { failure, refused } : { failure });
    });
    req.end();
  });
}

/** Retries until ready; reports what it waits on only when that changes (each report rewrites status.json). */
export async function waitForMasters(ctx: PhaseContext, timing: WaitTiming = DEFAULT_TIMING): Promise<string[]> {
  let last: string | undefined;
  for (let attempt = 0; ; attempt++) {
    const ca = await ctx.host.readFile(CA_FILE);
    const result = await attemptOnce(ctx.config.apiEndpoint, ctx.nameserver, ca, ctx.signal, timing);
    if (result.ready) {
      ctx.host.log('masters-ready', { endpoint: ctx.config.apiEndpoint, via: result.via, masters: result.masters.join(',') });
      await ctx.report({ waitingOn: null, facts: { masters: result.masters } });
      return result.masters;
    }
    if (result.refused) throw new Error(result.refused);
    if (result.waitingOn !== last) {
      last = result.waitingOn;
      ctx.host.log('waiting', { on: result.waitingOn });
      await ctx.report({ waitingOn: result.waitingOn, facts: { masters: result.masters } });
    }
    await sleep(backoffDelay(attempt, timing), ctx.signal);
  }
}

export const waitForMastersPhase: Phase = {
  name: 'wait-for-masters',
  roles: ['minion'],
  async run(ctx) {
    await waitForMasters(ctx);
  },
};
