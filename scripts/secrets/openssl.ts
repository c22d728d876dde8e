// X.509 issuance with the openssl CLI (Debian's everywhere): keys come from node:crypto, openssl only
// signs. Everything goes through files in a private temp dir and execFile argument arrays: no key or
// subject ever reaches a shell or a command line.
import { execFile } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { LeafSpec, Subject } from '../../agent/cluster-certs.js';

export interface KeyPair {
  keyPem: string;
  publicPem: string;
}

/** ECDSA P-256: every Kubernetes component and etcd accept it, and it keeps user-data small. */
export function newKeyPair(): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ec', {
    namedCurve: 'prime256v1',
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  return { keyPem: privateKey, publicPem: publicKey };
}

function openssl(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('openssl', args, { timeout: 60_000 }, (err, _stdout, stderr) => {
      if (!err) return resolve();
      const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'openssl is not installed' : String(stderr).trim();
      reject(new Error(`openssl ${args[0]} failed: ${why}`));
    });
  });
}

// Values here are our own constants and DNS labels checked by the caller; config syntax would still
// expand `$` and cut at `#`, so refuse them rather than escape.
function configValue(text: string): string {
  if (/[$#"\\\n]/.test(text)) throw new Error(`unsupported character in certificate field ${JSON.stringify(text)}`);
  return text;
}

function config(subject: Subject, leaf?: LeafSpec): string {
  const lines = [
    '[req]',
    'distinguished_name = dn',
    'prompt = no',
    'utf8 = yes',
    '[dn]',
    ...(subject.o ? [`O = ${configValue(subject.o)}`] : []),
    `CN = ${configValue(subject.cn)}`,
    '[ca_ext]',
    'basicConstraints = critical, CA:TRUE',
    'keyUsage = critical, keyCertSign, cRLSign, digitalSignature',
    'subjectKeyIdentifier = hash',
  ];
  if (leaf) {
    const sans = [...(leaf.dns ?? []).map((d) => `DNS:${configValue(d)}`), ...(leaf.ip ?? []).map((i) => `IP:${configValue(i)}`)];
    lines.push(
      '[leaf_ext]',
      'basicConstraints = critical, CA:FALSE',
      'keyUsage = critical, digitalSignature, keyEncipherment',
      `extendedKeyUsage = ${leaf.usage.join(', ')}`,
      'authorityKeyIdentifier = keyid',
      ...(sans.length ? [`subjectAltName = ${sans.join(', ')}`] : []),
    );
  }
  return `${lines.join('\n')}\n`;
}

// Positive 127-bit serials: unique without a serial file, and within RFC 5280's 20 octets.
function serial(): string {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f;
  return `0x${bytes.toString('hex')}`;
}

async function inTempDir<T>(work: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(tmpdir(), 'kubeseed-secrets-')); // mode 0700
  try {
    return await work(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A self-signed CA certificate for the key. */
export function selfSignedCa(subject: Subject, keyPem: string, days: number): Promise<string> {
  return inTempDir(async (dir) => {
    const f = (n: string) => path.join(dir, n);
    await writeFile(f('key.pem'), keyPem, { mode: 0o600 });
    await writeFile(f('req.cnf'), config(subject));
    await openssl(['req', '-x509', '-new', '-config', f('req.cnf'), '-extensions', 'ca_ext', '-key', f('key.pem'),
      '-sha256', '-days', String(days), '-set_serial', serial(), '-out', f('cert.pem')]);
    return readFile(f('cert.pem'), 'utf8');
  });
}

/** A certificate for `leaf` on `keyPem`, signed by the CA whose key is in the file `caKeyFile`. */
export function signedLeaf(leaf: LeafSpec, keyPem: string, caCertPem: string, caKeyFile: string, days: number): Promise<string> {
  return inTempDir(async (dir) => {
    const f = (n: string) => path.join(dir, n);
    await writeFile(f('key.pem'), keyPem, { mode: 0o600 });
    await writeFile(f('ca.pem'), caCertPem);
    await writeFile(f('req.cnf'), config(leaf.subject, leaf));
    await openssl(['req', '-new', '-config', f('req.cnf'), '-key', f('key.pem'), '-out', f('req.csr')]);
    await openssl(['x509', '-req', '-in', f('req.csr'), '-CA', f('ca.pem'), '-CAkey', caKeyFile, '-sha256',
      '-days', String(days), '-set_serial', serial(), '-extfile', f('req.cnf'), '-extensions', 'leaf_ext', '-out', f('cert.pem')]);
    return readFile(f('cert.pem'), 'utf8');
  });
}
