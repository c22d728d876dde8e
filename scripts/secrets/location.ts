// Where a cluster's secrets may be written: by default outside any work tree, in the user's data directory
// (XDG base directories), and never into a folder git would track, where `git add -A` would commit CA keys.
import { execFile } from 'node:child_process';
import { stat } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { InputError } from '../../agent/errors.js';

/** `$XDG_DATA_HOME/kubeseed/<cluster>`, or `~/.local/share/kubeseed/<cluster>` when XDG_DATA_HOME is unset. */
export function defaultSecretsDir(cluster: string, env: NodeJS.ProcessEnv = process.env): string {
  // The XDG spec says a relative XDG_DATA_HOME is invalid and to be ignored.
  const xdg = env.XDG_DATA_HOME && path.isAbsolute(env.XDG_DATA_HOME) ? env.XDG_DATA_HOME : path.join(env.HOME || os.homedir(), '.local', 'share');
  return path.join(xdg, 'kubeseed', cluster);
}

function git(cwd: string, args: string[]): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) =>
    execFile('git', ['-C', cwd, ...args], (err, stdout) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 128) : 0, stdout: String(stdout).trim() }),
    ),
  );
}

async function nearestExistingDir(dir: string): Promise<string> {
  for (let d = dir; ; d = path.dirname(d)) {
    if (await stat(d).then((s) => s.isDirectory(), () => false)) return d;
    if (d === path.dirname(d)) return d;
  }
}

/**
 * Refuses a file (that may not exist yet) inside a git work tree that git does not ignore, naming it as `what`
 * and saying what to do instead. Outside any work tree (or without git installed) there is nothing to refuse.
 */
export async function refuseTrackedFile(file: string, what: string, instead: string): Promise<void> {
  const absolute = path.resolve(file);
  const top = await git(await nearestExistingDir(path.dirname(absolute)), ['rev-parse', '--show-toplevel']);
  if (top.code !== 0 || !top.stdout) return;
  // check-ignore answers for the path as a pattern match, so a file that does not exist yet is judged too.
  const ignored = await git(top.stdout, ['check-ignore', '-q', absolute]);
  if (ignored.code === 0) return;
  throw new InputError(`${what} is inside the git work tree ${top.stdout} and not ignored: git would track the secrets (${instead})`);
}

/** Refuses a secrets directory inside a git work tree that git does not ignore. */
export function refuseTrackedPath(dir: string, flag: string): Promise<void> {
  return refuseTrackedFile(
    path.join(dir, 'ca.key'),
    `${flag} ${JSON.stringify(dir)}`,
    'leave out --out for the default outside the work tree, or name an ignored or outside folder',
  );
}
