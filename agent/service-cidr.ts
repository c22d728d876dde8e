// The cluster's two address ranges. The service network: the API server's serving certificate must name its
// first address (the in-cluster `kubernetes` service), and the kubelets point pods at its tenth (cluster DNS, by
// convention). The cluster (pod) network: Weave allocates pod addresses from it, and it must not overlap the first.
import { InputError, type Where } from './errors.js';

export const DEFAULT_SERVICE_CIDR = '10.96.0.0/12';

export interface ServiceCidr {
  cidr: string;
  /** The `kubernetes` service's address. */
  firstIp: string;
  /** The cluster DNS service's address. */
  dnsIp: string;
}

/** An IPv4 CIDR as numbers, or why it is not one. Pure. */
function ipv4Cidr(text: string): { base: number; prefix: number } | string {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(text);
  if (!match) return 'not an IPv4 CIDR';
  const octets = match.slice(1, 5).map(Number);
  if (octets.some((o) => o > 255)) return 'octet above 255';
  const prefix = Number(match[5]);
  if (prefix > 32) return 'prefix above /32';
  const base = octets.reduce((n, o) => n * 256 + o, 0);
  if (base % 2 ** (32 - prefix) !== 0) return 'host bits set';
  return { base, prefix };
}

const ip = (n: number) => [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');

/** IPv4 only; the API server takes prefixes /12 to /28 and rejects host bits. */
export function parseServiceCidr(text: string, where: Where = {}): ServiceCidr {
  const fail = (why: string): never => {
    throw new InputError(`bad service CIDR (${why}): expected e.g. ${DEFAULT_SERVICE_CIDR}`, { ...where, value: text });
  };
  const parsed = ipv4Cidr(text);
  if (typeof parsed === 'string') return fail(parsed);
  if (parsed.prefix < 12 || parsed.prefix > 28) fail('prefix must be /12 to /28');
  return { cidr: text, firstIp: ip(parsed.base + 1), dnsIp: ip(parsed.base + 10) };
}

/** Weave's own default allocation range (prog/weave-kube/launch.sh IPALLOC_RANGE). */
export const DEFAULT_CLUSTER_CIDR = '10.32.0.0/12';

/**
 * The pod network Weave allocates from (--ipalloc-range). A range that overlaps the service network would
 * hand pods addresses that kube-proxy rewrites as services: refused, naming both.
 */
export function parseClusterCidr(text: string, service: ServiceCidr, where: Where = {}): string {
  const fail = (why: string): never => {
    throw new InputError(`bad cluster CIDR (${why}): expected e.g. ${DEFAULT_CLUSTER_CIDR}`, { ...where, value: text });
  };
  const parsed = ipv4Cidr(text);
  if (typeof parsed === 'string') return fail(parsed);
  // Weave needs room for at least one range per node; /8 to /24 is what its docs and launch script use.
  if (parsed.prefix < 8 || parsed.prefix > 24) fail('prefix must be /8 to /24');
  const svc = ipv4Cidr(service.cidr) as { base: number; prefix: number };
  const end = (c: { base: number; prefix: number }) => c.base + 2 ** (32 - c.prefix);
  if (parsed.base < end(svc) && svc.base < end(parsed)) fail(`overlaps the service CIDR ${service.cidr}`);
  return text;
}
