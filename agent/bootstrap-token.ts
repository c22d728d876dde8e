// The kubelet's TLS-bootstrap token: `<id>.<secret>` as Kubernetes defines it (6 and 16 of [a-z0-9]), with
// an expiry the API server enforces. `npm run secrets` makes it; the agent checks it before using it.
// Errors never quote the token: it is a credential.
import { randomInt } from 'node:crypto';
import { InputError } from './errors.js';

export interface BootstrapToken {
  id: string;
  secret: string;
}

const TOKEN = /^([a-z0-9]{6})\.([a-z0-9]{16})$/;
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

export function newBootstrapToken(): string {
  const pick = (n: number) => Array.from({ length: n }, () => ALPHABET[randomInt(ALPHABET.length)]).join('');
  return `${pick(6)}.${pick(16)}`;
}

/** The token file holds the token and at most a trailing newline. */
export function parseBootstrapToken(text: string, file: string): BootstrapToken {
  const match = TOKEN.exec(text.replace(/\r?\n$/, ''));
  if (!match) throw new InputError('malformed bootstrap token: expected <6 of [a-z0-9]>.<16 of [a-z0-9]>', { file });
  return { id: match[1]!, secret: match[2]! };
}

/** RFC 3339 with an explicit zone, as the bootstrap token Secret's `expiration` wants it. */
export function parseTokenExpiry(text: string, file: string): Date {
  const value = text.trim();
  const rfc3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;
  const when = new Date(value);
  if (!rfc3339.test(value) || Number.isNaN(when.getTime())) {
    throw new InputError('malformed bootstrap token expiry: expected an RFC 3339 time such as 2030-01-31T00:00:00Z', {
      file,
      value,
    });
  }
  return when;
}

export function checkTokenCurrent(expires: Date, now: Date, file: string): void {
  if (expires.getTime() <= now.getTime()) {
    throw new InputError(
      `bootstrap token expired at ${expires.toISOString()}: issue a new one (delete bootstrap-token and bootstrap-token.expires, re-run npm run secrets)`,
      { file },
    );
  }
}

export function formatTokenExpiry(when: Date): string {
  return `${when.toISOString().replace(/\.\d{3}Z$/, 'Z')}\n`;
}
