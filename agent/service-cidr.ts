// The service network: the API server's serving certificate must name its first address (the in-cluster
// `kubernetes` service), and the kubelets point pods at its tenth (cluster DNS, by convention).
import { InputError, type Where } from './errors.js';

export const DEFAULT_SERVICE_CIDR = '10.96.0.0/12';

export interface ServiceCidr {
  cidr: string;
  /** The `kubernetes` service's address. */
  firstIp: string;
  /** The cluster DNS service's address. */
  dnsIp: string;
}

/** IPv4 only; the API server takes prefixes /12 to /28 and rejects host bits. */
export function parseServiceCidr(text: string, where: Where = {}): ServiceCidr {
  const fail = (why: string): never => {
    throw new InputError(`bad service CIDR (${why}): expected e.g. ${DEFAULT_SERVICE_CIDR}`, { ...where, value: text });
  };
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(text);
  if (!match) return fail('not an IPv4 CIDR');
  const octets = match.slice(1, 5).map(Number);
  if (octets.some((o) => o > 255)) fail('octet above 255');
  const prefix = Number(match[5]);
  if (prefix < 12 || prefix > 28) fail('prefix must be /12 to /28');
  const base = octets.reduce((n, o) => n * 256 + o, 0);
  const size = 2 ** (32 - prefix);
  if (base % size !== 0) fail('host bits set');
  const ip = (n: number) => [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
  return { cidr: text, firstIp: ip(base + 1), dnsIp: ip(base + 10) };
}
