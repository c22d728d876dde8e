// One SSH connection to a node, with its host key checked against known_hosts (an unknown key is refused),
// and commands and file reads on it that end in time: what cluster-check, the cluster watcher and the live page ask
// nodes through.
import { isIP } from 'node:net';
import ssh2 from 'ssh2';
import { InputError } from '../../agent/errors.js';
import { fingerprint, isKnownHostKey, type KnownHost } from './known-hosts.js';

/**
 * For the handshake and for `agent status`: a TCG guest of the local cluster takes seconds for each (node alone
 * starts in about 2.4 s there), so 10 s read every such node as down.
 */
export const DEFAULT_TIMEOUT_MS = 60_000;

export interface Target {
  host: string;
  port: number;
}

export interface SshOptions {
  username: string;
  privateKey: string;
  knownHosts: readonly KnownHost[];
  /** For the handshake; also for each command unless execTimeoutMs says otherwise. */
  timeoutMs?: number;
  execTimeoutMs?: number;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The node did not answer in time (handshake or command): it may be up but slow, unlike a refused connection. */
export class NoAnswer extends Error {}

export interface SshSession {
  /** `input`, when given, is the command's standard input (how a test hands a node a file). */
  exec(command: string, input?: Buffer): Promise<ExecResult>;
  /**
   * A file's text, or undefined when it does not exist, over one SFTP channel kept for the session: each `exec`
   * has sshd start a shell (about 160 ms of an idle TCG guest's CPU), a read on a resident sftp-server about 17 ms.
   */
  readFile(path: string): Promise<string | undefined>;
  /** Ends the connection, and with it the SFTP channel. */
  close(): void;
}

export function formatTarget(t: Target): string {
  return t.port === 22 ? t.host : `${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`;
}

/** `host`, `host:port`, `[v6]:port`, comma-separated. */
export function parseTargets(text: string, defaultPort = 22): Target[] {
  const targets = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((item) => {
      const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(item) ?? /^([^:\s[\]]+)(?::(\d+))?$/.exec(item);
      const host = m?.[1];
      const port = m?.[2] === undefined ? defaultPort : Number(m[2]);
      const hostOk = host !== undefined && (isIP(host) !== 0 || /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/i.test(host));
      if (!hostOk || !Number.isInteger(port) || port < 1 || port > 65535) {
        throw new InputError(`--hosts: expected host[:port], got ${JSON.stringify(item)}`, { value: item });
      }
      return { host, port };
    });
  if (targets.length === 0) throw new InputError('--hosts: no hosts given');
  return targets;
}

/** Opens one SSH connection; rejects when the host key is not a known one for this host and port. */
export function openSession(target: Target, opts: SshOptions): Promise<SshSession> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    let refusedKey: string | undefined;
    let ready = false;
    // Rejects every command in flight when the connection dies after 'ready' (their streams never close then).
    let lost: (err: Error) => void = () => undefined;
    const connectionLost = new Promise<never>((_, rejectLost) => (lost = rejectLost));
    connectionLost.catch(() => undefined);
    const timeoutMs = opts.execTimeoutMs ?? opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const sftp = sftpChannel(client);
    client.once('ready', () => {
      ready = true;
      resolve({
        exec: (command, input) => Promise.race([execOn(client, command, timeoutMs, input), connectionLost]),
        readFile: (path) => Promise.race([readOn(client, sftp, path, timeoutMs), connectionLost]),
        close: () => client.end(),
      });
    });
    // ssh2 may emit several errors (and more after 'ready'): an unhandled one would crash the caller.
    client.on('error', (err) => {
      client.end();
      if (ready) return lost(new Error(`${formatTarget(target)}: ${err.message}`));
      // ssh2 marks its own handshake timer with level 'client-timeout'.
      if ((err as { level?: string }).level === 'client-timeout') {
        return reject(new NoAnswer(`${formatTarget(target)}: no SSH handshake within ${Math.round((opts.timeoutMs ?? DEFAULT_TIMEOUT_MS) / 1000)} s`));
      }
      reject(new Error(refusedKey ? `${formatTarget(target)}: host key ${refusedKey} is not in known_hosts, refusing to connect` : `${formatTarget(target)}: ${describeConnectError(err)}`));
    });
    client.connect({
      host: target.host,
      port: target.port,
      username: opts.username,
      privateKey: opts.privateKey,
      readyTimeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      // A VM that is powered off mid-session never sends a FIN: keepalives notice, and the session errors out.
      // Patient ones: a TCG guest on a busy host can be silent for tens of seconds and still be fine.
      keepaliveInterval: 15_000,
      keepaliveCountMax: 8,
      hostVerifier: (key: Buffer) => {
        if (isKnownHostKey(opts.knownHosts, target.host, target.port, key)) return true;
        refusedKey = fingerprint(key);
        return false;
      },
    });
  });
}

/** A refused or unroutable connection in words; the raw message otherwise. */
function describeConnectError(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ECONNREFUSED') return `connection refused (${err.message})`;
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return `no route to host (${err.message})`;
  return err.message;
}

/**
 * Work on the connection that must end within the timeout; past it the connection is ended (what still runs on
 * it would never answer to anything asked after) and the work rejects with NoAnswer.
 */
function inTime<T>(client: ssh2.Client, what: string, timeoutMs: number, work: (resolve: (value: T) => void, reject: (err: unknown) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.end();
      reject(new NoAnswer(`${what}: no answer within ${Math.round(timeoutMs / 1000)} s`));
    }, timeoutMs);
    work(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/** One command; rejects when it has not finished within the timeout (the session is then of no more use). */
function execOn(client: ssh2.Client, command: string, timeoutMs: number, input?: Buffer): Promise<ExecResult> {
  return inTime(client, command, timeoutMs, (resolve, reject) => {
    client.exec(command, (err, stream) => {
      if (err) return reject(err);
      let stdout = '';
      let stderr = '';
      let code = -1;
      stream.on('data', (d: Buffer) => (stdout += d.toString()));
      stream.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      stream.on('exit', (c: number | null) => (code = c ?? -1));
      stream.on('close', () => resolve({ code, stdout, stderr }));
      stream.end(input);
    });
  });
}

/**
 * The session's one SFTP channel, opened at its first read and kept (sftp-server stays resident on the node);
 * one that fails or closes is forgotten, and the next read opens another.
 */
function sftpChannel(client: ssh2.Client): () => Promise<ssh2.SFTPWrapper> {
  let channel: Promise<ssh2.SFTPWrapper> | undefined;
  return () => {
    if (channel) return channel;
    const opening: Promise<ssh2.SFTPWrapper> = new Promise((resolve, reject) =>
      client.sftp((err, sftp) => {
        if (err) return reject(err);
        // An 'error' without a listener would throw out of ssh2; the requests in flight are failed by ssh2 itself.
        sftp.on('error', forget);
        sftp.on('end', forget);
        sftp.on('close', forget);
        resolve(sftp);
      }),
    );
    const forget = () => {
      if (channel === opening) channel = undefined;
    };
    opening.catch(forget);
    return (channel = opening);
  };
}

/** One file's text (utf8), undefined when there is no such file; rejects on any other error and, like exec, past the timeout. */
function readOn(client: ssh2.Client, sftp: () => Promise<ssh2.SFTPWrapper>, path: string, timeoutMs: number): Promise<string | undefined> {
  return inTime(client, `reading ${path}`, timeoutMs, (resolve, reject) => {
    sftp()
      .then((channel) => {
        // A channel that closes mid-read fails the requests in flight, but ssh2's readFile answers a failed fstat
        // with a stat on the dead channel, which nothing ever answers: without this the read waits out the timeout.
        const gone = () => reject(new Error(`${path}: the SFTP channel closed`));
        const events = ['end', 'close', 'error'] as const;
        for (const e of events) channel.once(e, gone);
        channel.readFile(path, (err, data) => {
          for (const e of events) channel.off(e, gone);
          if (!err) return resolve(data.toString('utf8'));
          if ((err as { code?: unknown }).code === ssh2.utils.sftp.STATUS_CODE.NO_SUCH_FILE) return resolve(undefined);
          reject(new Error(`${path}: ${err.message}`));
        });
      })
      .catch(reject);
  });
}

/**
 * An ed25519 key pair ssh2 can read back: about 1 in 200 it generates is one its own parser refuses
 * ("Malformed OpenSSH private key"; measured 14 of 3,000), so draw again.
 */
export function parsableKeyPair(comment?: string): { private: string; public: string } {
  for (let attempt = 0; attempt < 20; attempt++) {
    const pair = ssh2.utils.generateKeyPairSync('ed25519', comment === undefined ? {} : { comment });
    if (!(ssh2.utils.parseKey(pair.private) instanceof Error) && !(ssh2.utils.parseKey(pair.public) instanceof Error)) return pair;
  }
  throw new Error('ssh2 generated 20 ed25519 keys in a row that it cannot parse');
}
