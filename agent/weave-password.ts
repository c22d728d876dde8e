// Weave's network password: where it lives on a node and what the agent accepts before it lets the router start.
// It never rides in the role file: that file is world-readable (0644) and kubelet.service and kube-proxy.service
// load it with EnvironmentFile=, so a password there is in their environment too. User-data writes it to its own
// file, 0600 and owned by root, that only weave.service loads (EnvironmentFile=-WEAVE_PASSWORD_FILE); the router
// reads WEAVE_PASSWORD from its environment when --password is empty (rajch/weave prog/weaver/main.go
// determinePassword), so it is never in argv, where `ps` shows it to every user.
import { parseEnvironmentFile, renderEnvFile } from './contract/env-file.js';
import { InputError } from './errors.js';
import type { Host } from './host.js';

export const WEAVE_PASSWORD_FILE = '/etc/kubeseed/weave-password.env';
export const WEAVE_PASSWORD_KEY = 'WEAVE_PASSWORD';

/**
 * The router takes any non-empty password (determinePassword has no minimum) and uses it as it is: the session
 * key is sha256 of the Diffie-Hellman secret and the password (mesh protocol_crypto.go formSessionKey), with no
 * stretching, so each guess costs one hash to anyone who records a handshake with a peer. 16 bytes is the
 * floor: a random 16-character password from a 64-symbol alphabet carries 96 bits, out of reach of guessing.
 */
export const MIN_PASSWORD_BYTES = 16;

/** Why this password is refused, or undefined. Never quotes the value. */
export function passwordProblem(password: string): string | undefined {
  const bytes = Buffer.byteLength(password, 'utf8');
  if (bytes < MIN_PASSWORD_BYTES) {
    return `${WEAVE_PASSWORD_KEY} is ${bytes} bytes long; at least ${MIN_PASSWORD_BYTES} are required (the router uses it unstretched, so a short one can be guessed)`;
  }
  return undefined;
}

/** The file user-data writes: the password alone, in EnvironmentFile= syntax. Checked first, like every env file. */
export function renderPasswordFile(password: string): string {
  const problem = passwordProblem(password);
  if (problem) throw new InputError(problem, { value: WEAVE_PASSWORD_KEY });
  return renderEnvFile('Weave Net password, loaded only by weave.service (written by cloud-init user-data). Keep it 0600.', [[WEAVE_PASSWORD_KEY, password]]);
}

/**
 * Whether the overlay is encrypted, after checking the password file the way the router will read it: absent
 * means unencrypted; present, it must be a regular file owned by root with no group or other access, hold
 * WEAVE_PASSWORD and nothing else, and the password must pass passwordProblem. Throws InputError naming the file.
 */
export async function checkPasswordFile(host: Host): Promise<{ encrypted: boolean }> {
  const info = await host.stat(WEAVE_PASSWORD_FILE);
  if (!info) return { encrypted: false };
  const file = host.resolve(WEAVE_PASSWORD_FILE);
  if (!info.isFile) throw new InputError('not a regular file', { file });
  if (info.mode & 0o077) throw new InputError(`mode ${info.mode.toString(8).padStart(4, '0')} lets others read the Weave password: it must be 0600`, { file });
  if (info.uid !== 0) throw new InputError(`owned by uid ${info.uid}, not root: whoever owns it can change the Weave password`, { file });
  const { assignments, problems } = parseEnvironmentFile((await host.readFile(WEAVE_PASSWORD_FILE)) ?? '', file);
  const [problem] = problems;
  if (problem) throw problem;
  const other = assignments.find((a) => a.key !== WEAVE_PASSWORD_KEY);
  if (other) throw new InputError(`${other.key}: this file holds ${WEAVE_PASSWORD_KEY} only (weave.service loads all of it)`, { file, line: other.line });
  const last = assignments.at(-1);
  if (!last || last.value === '') throw new InputError(`no ${WEAVE_PASSWORD_KEY}: delete the file for an unencrypted overlay`, { file });
  const short = passwordProblem(last.value);
  if (short) throw new InputError(short, { file, line: last.line });
  return { encrypted: true };
}
