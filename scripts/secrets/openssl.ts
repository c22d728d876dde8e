// X.509 issuance with the openssl CLI (Debian's everywhere): keys come from node:crypto, openssl only
// signs. Everything goes through files in a private temp dir and execFile argument arrays: no key or
// subject ever reaches a shell or a command line.
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
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

async function inTempDir<T>(work: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(tmpdir(), 'kubeseed-secrets-')); // mode 0700
  try {
    return await work(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * How far back every certificate's notBefore is set: a node whose clock is a few minutes behind the
 * machine that ran `npm run secrets` would otherwise refuse every certificate until NTP catches up.
 */
export const BACKDATE_MS = 5 * 60_000;

/** YYYYMMDDHHMMSSZ, the form `openssl ca -startdate` takes. */
function generalizedTime(date: Date): string {
  return `${date.toISOString().replace(/[-:T]/g, '').slice(0, 14)}Z`;
}

/**
 * `openssl ca` is the only signer in OpenSSL 3.0 (Debian 12) that sets notBefore (`x509 -not_before`
 * arrived in 3.4); it wants a database, which lives and dies in the temp dir with the request.
 */
async function signRequest(
  dir: string,
  signer: { selfsign: true; keyFile: string } | { selfsign: false; caCertFile: string; caKeyFile: string },
  extensions: 'ca_ext' | 'leaf_ext',
  days: number,
  now: Date,
): Promise<string> {
  const f = (n: string) => path.join(dir, n);
  await writeFile(f('index.txt'), '');
  const signing = [
    '[ca]',
    'default_ca = signer',
    '[signer]',
    `database = ${configValue(f('index.txt'))}`,
    `new_certs_dir = ${configValue(dir)}`,
    'rand_serial = yes',
    'default_md = sha256',
    'policy = as_requested',
    'unique_subject = no',
    'email_in_dn = no',
    '[as_requested]',
    'commonName = supplied',
    'organizationName = optional',
  ];
  await writeFile(f('req.cnf'), `${await readFile(f('req.cnf'), 'utf8')}${signing.join('\n')}\n`);
  await openssl([
    'ca', '-batch', '-notext', '-preserveDN', '-config', f('req.cnf'), '-extfile', f('req.cnf'), '-extensions', extensions,
    '-in', f('req.csr'), '-startdate', generalizedTime(new Date(now.getTime() - BACKDATE_MS)), '-days', String(days),
    ...(signer.selfsign ? ['-selfsign', '-keyfile', signer.keyFile] : ['-cert', signer.caCertFile, '-keyfile', signer.caKeyFile]),
    '-out', f('cert.pem'),
  ]);
  return readFile(f('cert.pem'), 'utf8');
}

/** A self-signed CA certificate for the key. */
export function selfSignedCa(subject: Subject, keyPem: string, days: number, now = new Date()): Promise<string> {
  return inTempDir(async (dir) => {
    const f = (n: string) => path.join(dir, n);
    await writeFile(f('key.pem'), keyPem, { mode: 0o600 });
    await writeFile(f('req.cnf'), config(subject));
    await openssl(['req', '-new', '-config', f('req.cnf'), '-key', f('key.pem'), '-out', f('req.csr')]);
    return signRequest(dir, { selfsign: true, keyFile: f('key.pem') }, 'ca_ext', days, now);
  });
}

/** A certificate for `leaf` on `keyPem`, signed by the CA whose key is in the file `caKeyFile`. */
export function signedLeaf(leaf: LeafSpec, keyPem: string, caCertPem: string, caKeyFile: string, days: number, now = new Date()): Promise<string> {
  return inTempDir(async (dir) => {
    const f = (n: string) => path.join(dir, n);
    await writeFile(f('key.pem'), keyPem, { mode: 0o600 });
    await writeFile(f('ca.pem'), caCertPem);
    await writeFile(f('req.cnf'), config(leaf.subject, leaf));
    await openssl(['req', '-new', '-config', f('req.cnf'), '-key', f('key.pem'), '-out', f('req.csr')]);
    return signRequest(dir, { selfsign: false, caCertFile: f('ca.pem'), caKeyFile }, 'leaf_ext', days, now);
  });
}
