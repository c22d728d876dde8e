// IPv4 CIDR blocks as numbers: the one parser behind the service and cluster (pod) networks, so both
// refuse the same malformed text with the same words, and their overlap is plain arithmetic.

export interface IPv4Cidr {
  cidr: string;
  /** The network address as a number (host bits zero). */
  base: number;
  prefix: number;
  /** Addresses in the block. */
  size: number;
}

/** The block, or why the text is not one (IPv4 only, host bits zero, prefix within [min, max]). */
export function parseIPv4Cidr(text: string, min: number, max: number): IPv4Cidr | { problem: string } {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(text);
  if (!match) return { problem: 'not an IPv4 CIDR' };
  if (match.slice(1, 5).some((o) => Number(o) > 255)) return { problem: 'octet above 255' };
  const prefix = Number(match[5]);
  if (prefix < min || prefix > max) return { problem: `prefix must be /${min} to /${max}` };
  const base = ipv4Number(text.slice(0, text.indexOf('/')));
  const size = 2 ** (32 - prefix);
  if (base % size !== 0) return { problem: 'host bits set' };
  return { cidr: text, base, prefix, size };
}

/** A dotted IPv4 address (already checked) as a number, for ordering and arithmetic. */
export function ipv4Number(address: string): number {
  return address.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
}

export function ipv4At(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

/** Two aligned blocks overlap exactly when one contains the other's network address. */
export function cidrsOverlap(a: IPv4Cidr, b: IPv4Cidr): boolean {
  return a.base < b.base + b.size && b.base < a.base + a.size;
}
