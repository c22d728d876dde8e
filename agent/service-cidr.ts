// The service network: the API server's serving certificate must name its first address (the in-cluster
// `kubernetes` service), and the kubelets point pods at its tenth (cluster DNS, by convention).
import { InputError, type Where } from './errors.js';
import { ipv4At, parseIPv4Cidr, type IPv4Cidr } from './ipv4-cidr.js';

export const DEFAULT_SERVICE_CIDR = '10.96.0.0/12';

export interface ServiceCidr {
  cidr: string;
  /** The `kubernetes` service's address. */
  firstIp: string;
  /** The cluster DNS service's address. */
  dnsIp: string;
  block: IPv4Cidr;
}

/** IPv4 only; the API server takes prefixes /12 to /28 and rejects host bits. */
export function parseServiceCidr(text: string, where: Where = {}): ServiceCidr {
  const block = parseIPv4Cidr(text, 12, 28);
  if ('problem' in block)
    throw new InputError(`bad service CIDR (${block.problem}): expected e.g. ${DEFAULT_SERVICE_CIDR}`, { ...where, value: text });
  return { cidr: text, firstIp: ipv4At(block.base + 1), dnsIp: ipv4At(block.base + 10), block };
}
