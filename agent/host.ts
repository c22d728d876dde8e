// The small interface through which the agent touches the machine. Phases decide what should be
// (pure code) and apply it through a Host, so `--root DIR`, a live node and the tests share every line.
//
// Files go through Node's synchronous calls behind the async interface: every file the agent touches is
// small and local, and a thread-pool round trip per call costs far more than the call itself. Reading the
// unit directories of a Debian image (about 290 files, a stat and two drop-in lookups each) took about
// 300 ms of CPU through fs/promises and 6 ms synchronously on the build host; under QEMU TCG, where each
// thread hand-off is emulated, that was seconds of every boot. child_process is loaded on the first exec
// (agent/exec.ts), so `agent status` starts without it.
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface FileInfo {
  mode: number; // permission bits only
  uid: number;
  isFile: boolean;
  isDirectory: boolean;
}

export type LogFields = Record<string, string | number | boolean | undefined>;

export interface Host {
  /** '' on a live node; the offline root directory otherwise. */
  readonly root: string;
  /** True when acting on the running system (no --root): units are started as well as enabled. */
  readonly live: boolean;
  /** The real path of a node path (`/etc/x` → `<root>/etc/x`). */
  resolve(nodePath: string): string;
  /** File contents, or undefined when the file does not exist. */
  readFile(nodePath: string): Promise<string | undefined>;
  stat(nodePath: string): Promise<FileInfo | undefined>;
  readdir(nodePath: string): Promise<string[]>;
  /** Writes atomically (temp file + rename). Returns false when the file already had this content and mode. */
  writeFile(nodePath: string, data: string, mode?: number): Promise<boolean>;
  /** Creates the directory (and parents) and sets its mode. Returns false when nothing changed. */
  mkdir(nodePath: string, mode?: number): Promise<boolean>;
  /** Removes a file; returns false when it was not there. */
  remove(nodePath: string): Promise<boolean>;
  /** Where a symlink points, as written; undefined when the path is missing or not a symlink. */
  readLink(nodePath: string): Promise<string | undefined>;
  /** Creates a symlink at nodePath pointing at target (a node path, kept as written). */
  symlink(target: string, nodePath: string): Promise<void>;
  /** Runs a program directly, never through a shell. */
  exec(cmd: string, args: string[], opts?: { env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<ExecResult>;
  /** Sends a signal to a process; false when there is no such process. */
  kill(pid: number, signal: NodeJS.Signals): boolean;
  /** One line per event: `event key=value ...`. */
  log(event: string, fields?: LogFields): void;
}

/** `event key=value key="v w"`: logfmt, so one grep finds an event and its fields read at a glance. */
export function formatLogLine(event: string, fields: LogFields = {}): string {
  const parts = [event];
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    const text = String(value);
    parts.push(`${key}=${/^[^\s"=]+$/.test(text) ? text : JSON.stringify(text)}`);
  }
  return parts.join(' ');
}

export interface HostOptions {
  root?: string;
  env?: NodeJS.ProcessEnv;
  write?: (line: string) => void;
}

export function createHost(opts: HostOptions = {}): Host {
  const root = opts.root ? path.resolve(opts.root) : '';
  const env = opts.env ?? process.env;
  const write = opts.write ?? ((line: string) => process.stdout.write(`${line}\n`));
  const resolve = (nodePath: string) => (root ? path.join(root, nodePath) : nodePath);
  const childEnv = withoutSecrets(env);

  const statSync = (nodePath: string): FileInfo | undefined => {
    try {
      const s = fs.statSync(resolve(nodePath));
      return { mode: s.mode & 0o7777, uid: s.uid, isFile: s.isFile(), isDirectory: s.isDirectory() };
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
  };

  return {
    root,
    live: root === '',
    resolve,
    async readFile(nodePath) {
      try {
        return fs.readFileSync(resolve(nodePath), 'utf8');
      } catch (err) {
        if (isMissing(err)) return undefined;
        throw err;
      }
    },
    stat: async (nodePath) => statSync(nodePath),
    async readdir(nodePath) {
      try {
        return fs.readdirSync(resolve(nodePath)).sort();
      } catch (err) {
        if (isMissing(err)) return [];
        throw err;
      }
    },
    async writeFile(nodePath, data, mode = 0o644) {
      const real = resolve(nodePath);
      removeStaleTemps(real);
      const before = statSync(nodePath);
      if (before?.isFile && before.mode === mode && fs.readFileSync(real, 'utf8') === data) return false;
      fs.mkdirSync(path.dirname(real), { recursive: true });
      const tmp = `${real}.kubeseed-${process.pid}.tmp`;
      const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC, mode);
      try {
        fs.writeFileSync(fd, data);
        fs.fchmodSync(fd, mode); // the umask may have narrowed the mode given to open()
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(tmp, real);
      return true;
    },
    async mkdir(nodePath, mode = 0o755) {
      const before = statSync(nodePath);
      if (before?.isDirectory && before.mode === mode) return false;
      fs.mkdirSync(resolve(nodePath), { recursive: true });
      fs.chmodSync(resolve(nodePath), mode);
      return true;
    },
    async remove(nodePath) {
      try {
        fs.unlinkSync(resolve(nodePath));
        return true;
      } catch (err) {
        if (isMissing(err)) return false;
        throw err;
      }
    },
    async readLink(nodePath) {
      try {
        return fs.readlinkSync(resolve(nodePath));
      } catch (err) {
        if (isMissing(err) || (err as NodeJS.ErrnoException).code === 'EINVAL') return undefined;
        throw err;
      }
    },
    async symlink(target, nodePath) {
      fs.symlinkSync(target, resolve(nodePath));
    },
    async exec(cmd, args, execOpts = {}) {
      const { execDirect } = await import('./exec.js');
      return execDirect(cmd, args, { env: execOpts.env ?? childEnv, timeoutMs: execOpts.timeoutMs ?? 120_000 });
    },
    kill(pid, signal) {
      try {
        process.kill(pid, signal);
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
        throw err;
      }
    },
    log(event, fields) {
      write(formatLogLine(event, fields));
    },
  };
}

/** Variables a child must not inherit: systemctl and weave never need a password, token or key. */
const SECRET_NAME = /PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE|(^|_)KEY($|_)/i;

/** The agent's environment minus anything that looks like a secret (a unit may have loaded the role file). */
export function withoutSecrets(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([name]) => !SECRET_NAME.test(name)));
}

/**
 * Temp files of writeFile that a killed agent (SIGKILL, power loss) left beside the real one. Runs hold the
 * root's lock (agent/lock.ts), so a temp file of another PID belongs to no running writer.
 */
function removeStaleTemps(real: string): void {
  const dir = path.dirname(real);
  const prefix = `${path.basename(real)}.kubeseed-`;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    if (name.startsWith(prefix) && name.endsWith('.tmp') && name !== `${prefix}${process.pid}.tmp`) {
      try {
        fs.unlinkSync(path.join(dir, name));
      } catch {
        // Gone already, or not ours to remove: the write below does not depend on it.
      }
    }
  }
}

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === 'ENOENT' || (err as NodeJS.ErrnoException)?.code === 'ENOTDIR';
}
