// Issues a leaf certificate on the node, from a CA the secrets carry, with Node's crypto alone: the image has
// no openssl CLI, and Node has no API that builds certificates, so the DER is assembled here (RFC 5280
// section 4.1). Only what the cluster's certificates use: ECDSA P-256 keys (as `npm run secrets` makes them),
// ecdsa-with-SHA256 signatures, SANs of DNS names and IPv4 addresses, server/client extended key usages.
import { createPublicKey, randomBytes, sign, type KeyObject } from 'node:crypto';
import { isIPv4 } from 'node:net';
import type { LeafSpec } from './cluster-certs.js';

/** One DER element: tag, definite length, content. */
function der(tag: number, content: Buffer): Buffer {
  const n = content.length;
  const length = n < 0x80 ? Buffer.from([n]) : n < 0x100 ? Buffer.from([0x81, n]) : Buffer.from([0x82, n >> 8, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), length, content]);
}
const seq = (...items: Buffer[]) => der(0x30, Buffer.concat(items));
const set = (...items: Buffer[]) => der(0x31, Buffer.concat(items));
const octets = (content: Buffer) => der(0x04, content);
const bits = (content: Buffer) => der(0x03, Buffer.concat([Buffer.from([0]), content]));
const utf8 = (text: string) => der(0x0c, Buffer.from(text, 'utf8'));
const bool = (value: boolean) => der(0x01, Buffer.from([value ? 0xff : 0]));

function oid(dotted: string): Buffer {
  const [a = 0, b = 0, ...rest] = dotted.split('.').map(Number);
  const bytes = [a * 40 + b];
  for (const arc of rest) {
    const chunk = [arc & 0x7f];
    for (let v = arc >>> 7; v > 0; v >>>= 7) chunk.unshift((v & 0x7f) | 0x80);
    bytes.push(...chunk);
  }
  return der(0x06, Buffer.from(bytes));
}

/** UTCTime until 2049, GeneralizedTime after (RFC 5280 4.1.2.5). */
function time(at: Date): Buffer {
  const iso = at.toISOString().replace(/[-:T]/g, '').slice(0, 14); // YYYYMMDDHHMMSS
  return at.getUTCFullYear() < 2050 ? der(0x17, Buffer.from(`${iso.slice(2)}Z`)) : der(0x18, Buffer.from(`${iso}Z`));
}

const ECDSA_SHA256 = seq(oid('1.2.840.10045.4.3.2'));
const USAGE_OIDS = { serverAuth: '1.3.6.1.5.5.7.3.1', clientAuth: '1.3.6.1.5.5.7.3.2' } as const;

/** The elements of a DER SEQUENCE (or any constructed value), each as its whole TLV. */
function children(tlv: Buffer): Buffer[] {
  const out: Buffer[] = [];
  const { start, end } = header(tlv, 0);
  for (let at = start; at < end; ) {
    const child = header(tlv, at);
    out.push(tlv.subarray(at, child.end));
    at = child.end;
  }
  return out;
}

function header(buf: Buffer, at: number): { start: number; end: number } {
  const first = buf[at + 1] ?? 0;
  if (first < 0x80) return { start: at + 2, end: at + 2 + first };
  const count = first & 0x7f;
  let length = 0;
  for (let i = 0; i < count; i++) length = length * 256 + (buf[at + 2 + i] ?? 0);
  return { start: at + 2 + count, end: at + 2 + count + length };
}

/**
 * The CA's subject exactly as its certificate encodes it: the issuer of what it signs must match byte for
 * byte (Go's verifier, etcd's, looks issuers up by the raw name).
 */
export function rawSubject(caDer: Buffer): Buffer {
  const tbs = children(caDer)[0]!;
  const fields = children(tbs);
  const offset = fields[0]?.[0] === 0xa0 ? 1 : 0; // [0] version is optional (v1)
  return fields[offset + 4]!;
}

/**
 * The CA's subject key identifier, or undefined when it has none. What this CA signs names it as its
 * authority key: verifiers holding several CAs of the same name (every cluster's is `etcd-ca <cluster>`)
 * then pick the right one, and refuse another cluster's as "unable to get issuer", not a bad signature.
 */
export function subjectKeyId(caDer: Buffer): Buffer | undefined {
  const fields = children(children(caDer)[0]!);
  const extensions = fields.find((f) => f[0] === 0xa3);
  if (!extensions) return undefined;
  for (const ext of children(children(extensions)[0]!)) {
    const [id, ...rest] = children(ext);
    if (!id?.equals(oid('2.5.29.14'))) continue;
    const value = rest[rest.length - 1]!; // OCTET STRING wrapping the key identifier's OCTET STRING
    const inner = value.subarray(header(value, 0).start);
    return inner.subarray(header(inner, 0).start, header(inner, 0).end);
  }
  return undefined;
}

export interface IssueRequest {
  spec: Pick<LeafSpec, 'subject' | 'usage' | 'dns' | 'ip'>;
  /** The new certificate's key (its public half goes in). */
  publicKey: KeyObject;
  caCertDer: Buffer;
  caKey: KeyObject;
  now: Date;
  days: number;
}

/** A PEM certificate for `spec`, signed by the CA. Pure but for the random serial. */
export function issueCertificate(req: IssueRequest): string {
  const { spec } = req;
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x01; // positive and never a leading zero byte
  const name = [set(seq(oid('2.5.4.3'), utf8(spec.subject.cn)))];
  if (spec.subject.o) name.unshift(set(seq(oid('2.5.4.10'), utf8(spec.subject.o))));
  const altNames = [
    ...(spec.dns ?? []).map((d) => der(0x82, Buffer.from(d, 'ascii'))),
    ...(spec.ip ?? []).map((ip) => {
      if (!isIPv4(ip)) throw new Error(`not an IPv4 address for a certificate: ${ip}`);
      return der(0x87, Buffer.from(ip.split('.').map(Number)));
    }),
  ];
  const extension = (id: string, critical: boolean, value: Buffer) => seq(oid(id), ...(critical ? [bool(true)] : []), octets(value));
  const extensions = [
    extension('2.5.29.19', true, seq()), // basicConstraints: not a CA
    extension('2.5.29.15', true, der(0x03, Buffer.from([0x07, 0x80]))), // keyUsage: digitalSignature
    extension('2.5.29.37', false, seq(...spec.usage.map((u) => oid(USAGE_OIDS[u])))),
    ...(altNames.length ? [extension('2.5.29.17', false, seq(...altNames))] : []),
  ];
  const authorityKey = subjectKeyId(req.caCertDer);
  if (authorityKey) extensions.push(extension('2.5.29.35', false, seq(der(0x80, authorityKey))));
  // Not before an hour ago: a node whose clock is a little behind its peers' must not be refused.
  const notBefore = new Date(req.now.getTime() - 3_600_000);
  const notAfter = new Date(req.now.getTime() + req.days * 86_400_000);
  const tbs = seq(
    der(0xa0, der(0x02, Buffer.from([2]))), // v3
    der(0x02, serial),
    ECDSA_SHA256,
    rawSubject(req.caCertDer),
    seq(time(notBefore), time(notAfter)),
    seq(...name),
    Buffer.from((req.publicKey.type === 'private' ? createPublicKey(req.publicKey) : req.publicKey).export({ type: 'spki', format: 'der' })),
    der(0xa3, seq(...extensions)),
  );
  if (req.caKey.asymmetricKeyType !== 'ec') throw new Error(`the CA key is ${req.caKey.asymmetricKeyType}, expected an ECDSA key`);
  const signature = sign('sha256', tbs, req.caKey); // DER-encoded ECDSA, as X.509 wants it
  const cert = seq(tbs, ECDSA_SHA256, bits(signature));
  const body = cert.toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN CERTIFICATE-----\n${body}${body.endsWith('\n') ? '' : '\n'}-----END CERTIFICATE-----\n`;
}
