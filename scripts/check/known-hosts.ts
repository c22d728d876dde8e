// Which SSH host keys we trust, and where they come from. A node's key is trusted only when it was
// reported out of band: the `-----BEGIN SSH HOST KEY KEYS-----` block cloud-init's keys_to_console
// prints on the serial console (QEMU's console log locally, GetConsoleOutput on EC2), turned into
// OpenSSH known_hosts lines that cluster-check then verifies every connection against.
import { createHash, createHmac } from 'node:crypto';
import { InputError } from '../../agent/errors.js';

export interface HostKey {
  type: string;
  /** The public key blob, base64 as in authorized_keys/known_hosts. */
  blob: string;
}

export interface KnownHost {
  /** Plain patterns (`host`, `[host]:port`) or one hashed `|1|salt|hash` entry. */
  patterns: string[];
  key: HostKey;
  line: number;
}

/** `host` for port 22, `[host]:port` otherwise: how OpenSSH names a host in known_hosts. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/** OpenSSH's fingerprint form, `SHA256:<base64 without padding>`. */
export function fingerprint(blob: Buffer | string): string {
  const bytes = typeof blob === 'string' ? Buffer.from(blob, 'base64') : blob;
  return `SHA256:${createHash('sha256').update(bytes).digest('base64').replace(/=+$/, '')}`;
}

const KEY_TYPE = /^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+)$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

export function parseKnownHosts(text: string, file = 'known_hosts'): KnownHost[] {
  const entries: KnownHost[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const fields = line.split(/\s+/);
    const [hosts, type, blob] = fields;
    if (hosts?.startsWith('@')) {
      // @cert-authority / @revoked change what a line means; refusing them beats half-honouring them.
      throw new InputError(`markers like ${hosts} are not supported`, { file, line: i + 1, value: hosts });
    }
    if (!hosts || !type || !blob || !KEY_TYPE.test(type) || !BASE64.test(blob)) {
      throw new InputError('expected "HOSTS KEYTYPE BASE64-KEY [comment]"', { file, line: i + 1, value: raw });
    }
    entries.push({ patterns: hosts.split(','), key: { type, blob }, line: i + 1 });
  });
  return entries;
}

function patternMatches(pattern: string, name: string): boolean {
  const hashed = /^\|1\|([^|]+)\|(.+)$/.exec(pattern);
  if (!hashed) return pattern.toLowerCase() === name.toLowerCase();
  const salt = Buffer.from(hashed[1] as string, 'base64');
  return createHmac('sha1', salt).update(name).digest('base64') === hashed[2];
}

/** True only when a known_hosts entry for exactly this host and port has exactly this key. */
export function isKnownHostKey(entries: readonly KnownHost[], host: string, port: number, blob: Buffer): boolean {
  const name = knownHostsName(host, port);
  const offered = blob.toString('base64');
  return entries.some((e) => e.key.blob === offered && e.patterns.some((p) => patternMatches(p, name)));
}

/** The host keys in a console log's `SSH HOST KEY KEYS` block (the last block wins: the latest boot). */
export function hostKeysFromConsole(text: string): HostKey[] {
  const blocks = [...text.matchAll(/-----BEGIN SSH HOST KEY KEYS-----([\s\S]*?)-----END SSH HOST KEY KEYS-----/g)];
  const body = blocks.at(-1)?.[1] ?? '';
  const keys: HostKey[] = [];
  for (const raw of body.split(/\r?\n/)) {
    const [type, blob] = raw.trim().split(/\s+/);
    if (type && blob && KEY_TYPE.test(type) && BASE64.test(blob)) keys.push({ type, blob });
  }
  return keys;
}

export function knownHostsLines(host: string, port: number, keys: readonly HostKey[]): string {
  const name = knownHostsName(host, port);
  return keys.map((k) => `${name} ${k.type} ${k.blob}\n`).join('');
}
