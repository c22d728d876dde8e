// The PID file of a long-running operator process (`metal serve`, `dns-sync --watch`): reload and stop are
// documented as `kill -HUP/-TERM $(cat FILE)`, so the file must name the one process that serves, and only
// while it does.
import { readFile, rm, writeFile } from 'node:fs/promises';
import { InputError } from '../../agent/errors.js';

/** The PID a PID file names, or undefined when there is no file or it names none. */
export async function readPidFile(file: string): Promise<number | undefined> {
  const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/**
 * Writes this process's PID to `file`, refusing when it names another live process (a stale one, left by a
 * crash, is taken over). Returns the release, which removes the file only while it still names us.
 */
export async function claimPidFile(file: string, what: string): Promise<() => Promise<void>> {
  const other = await readPidFile(file);
  if (other !== undefined && other !== process.pid) {
    const alive = (() => {
      try {
        process.kill(other, 0);
        return true;
      } catch (err) {
        return (err as NodeJS.ErrnoException).code === 'EPERM';
      }
    })();
    if (alive) throw new InputError(`${what} is already running as pid ${other}`, { file });
  }
  await writeFile(file, `${process.pid}\n`);
  return async () => {
    if ((await readFile(file, 'utf8').catch(() => '')).trim() === String(process.pid)) await rm(file, { force: true });
  };
}
