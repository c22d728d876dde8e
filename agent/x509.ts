// Checks on the cluster's certificates with Node's own X.509 parser (no openssl on the node needed):
// what the agent refuses before it installs anything, and what `npm run secrets` re-checks on a re-run.
import { X509Certificate, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { InputError } from './errors.js';

export function parseCertificate(pem: string, file: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch {
    throw new InputError('not a PEM certificate', { file });
  }
}

export function parsePrivateKey(pem: string, file: string): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch {
    throw new InputError('not a PEM private key', { file });
  }
}

/** DNS names and IP addresses of the subjectAltName extension. */
export function subjectAltNames(cert: X509Certificate): { dns: string[]; ip: string[] } {
  const entries = (cert.subjectAltName ?? '').split(', ').filter(Boolean);
  const pick = (prefix: string) =>
    entries.filter((e) => e.startsWith(prefix)).map((e) => e.slice(prefix.length).toLowerCase());
  return { dns: pick('DNS:'), ip: pick('IP Address:') };
}

/**
 * Why a TLS client connecting to `endpoint` would refuse a serving certificate carrying `names`, or
 * undefined when it would accept it (or the endpoint is plain http). Exact names only: the cluster's
 * certificates carry no wildcards.
 */
export function endpointNotNamed(endpoint: string, names: { dns: readonly string[]; ip: readonly string[] }, certificate: string): string | undefined {
  const url = new URL(endpoint);
  if (url.protocol !== 'https:') return undefined;
  const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase().replace(/\.$/, '');
  if (isIP(host) ? names.ip.includes(host) : names.dns.includes(host)) return undefined;
  const carried = [...names.dns, ...names.ip].join(', ') || 'no names';
  return `API_ENDPOINT ${endpoint} names ${host}, which ${certificate} does not carry (it names ${carried}): set API_ENDPOINT to one of those, or leave it out for the masters name`;
}

export function checkKeyMatches(cert: X509Certificate, key: KeyObject, keyFile: string): void {
  if (!cert.checkPrivateKey(key)) throw new InputError('private key does not belong to its certificate', { file: keyFile });
}

export function checkIssuedBy(cert: X509Certificate, ca: X509Certificate, file: string, caName: string): void {
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
    throw new InputError(`certificate is not signed by ${caName}`, { file });
  }
}

// Not-before is not checked: a node whose clock has not synced yet must not refuse a fresh certificate.
export function checkCurrent(cert: X509Certificate, now: Date, file: string): void {
  if (new Date(cert.validTo).getTime() <= now.getTime()) {
    throw new InputError(`certificate expired at ${new Date(cert.validTo).toISOString()}`, { file });
  }
}

export function checkCoversName(cert: X509Certificate, name: string, file: string): void {
  const { dns } = subjectAltNames(cert);
  if (!dns.includes(name.toLowerCase())) {
    throw new InputError(`serving certificate does not cover ${name} (its DNS names: ${dns.join(', ') || 'none'})`, {
      file,
      value: name,
    });
  }
}

export function checkCoversIp(cert: X509Certificate, ip: string, file: string): void {
  const { ip: ips } = subjectAltNames(cert);
  if (!ips.includes(ip)) {
    throw new InputError(`serving certificate does not cover IP ${ip} (its IPs: ${ips.join(', ') || 'none'})`, {
      file,
      value: ip,
    });
  }
}

/** For key pairs without a certificate (the service-account signing key). */
export function checkPublicHalf(key: KeyObject, publicPem: string, publicFile: string): void {
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey(publicPem);
  } catch {
    throw new InputError('not a PEM public key', { file: publicFile });
  }
  const der = (k: KeyObject) => k.export({ type: 'spki', format: 'der' });
  if (!der(createPublicKey(key)).equals(der(publicKey))) {
    throw new InputError('public key is not the public half of its private key', { file: publicFile });
  }
}
