// One agent per root at a time: `agent run` takes <root>/run/kubeseed/agent.lock (an exclusive create
// holding its PID) before it reads or writes anything, and a second agent waits for it. Node has no
// flock(2), so a lock left by a killed agent (SIGKILL, power loss within the boot) is recognised by its
// PID no longer running; /run is emptied at boot, so a lock never outlives the boot that took it.
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { sleep } from './abort.js';
import type { Host } from './host.js';

export const LOCK_FILE = '/run/kubeseed/agent.lock';

export interface Lock {
  release(): Promise<void>;
}

/** Whether a PID names a running process (EPERM: it runs, as another user). */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** How long a lock file may stay without a PID: its creator writes the PID right after creating it. */
const EMPTY_LOCK_GRACE_MS = 2_000;

type Holder = { pid: number; alive: boolean } | undefined;

/** Who holds the lock file, if anyone; an empty file is alive while young (being written), stale when old. */
async function holder(file: string): Promise<Holder> {
  const text = await fs.readFile(file, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  const pid = Number.parseInt(text.trim(), 10);
  if (Number.isInteger(pid) && pid > 0) return { pid, alive: pidAlive(pid) };
  // Wall time on purpose: an mtime is wall time, so the age must be too (a clock step can only make a
  // young empty lock look stale or an old one young for one grace period, never block for good).
  const age = await fs.stat(file).then((s) => Date.now() - s.mtimeMs, () => 0);
  return { pid: 0, alive: age <= EMPTY_LOCK_GRACE_MS };
}

/**
 * Takes the lock, waiting (logged once per holder) while a live agent holds it; a lock whose PID is gone
 * is taken over. The takeover renames the stale file away first, so of two waiters only one removes it.
 */
export async function acquireLock(host: Host, signal: AbortSignal, pollMs = 100): Promise<Lock> {
  const file = host.resolve(LOCK_FILE);
  await fs.mkdir(path.dirname(file), { recursive: true });
  let reported: number | undefined;
  for (;;) {
    try {
      const handle = await fs.open(file, 'wx', 0o644);
      try {
        await handle.writeFile(`${process.pid}\n`);
      } finally {
        await handle.close();
      }
      return { release: () => fs.unlink(file).catch(() => undefined) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const held = await holder(file);
    if (held && !held.alive) {
      const claimed = `${file}.stale-${process.pid}`;
      if (await fs.rename(file, claimed).then(() => true, () => false)) {
        // Between the look and the rename another waiter may have replaced the stale lock with its own
        // live one: put that back rather than run beside it.
        const moved = await holder(claimed);
        if (moved?.alive && moved.pid !== held.pid) await fs.link(claimed, file).catch(() => undefined);
        await fs.unlink(claimed).catch(() => undefined);
        host.log('stale-lock-removed', { path: LOCK_FILE, pid: held.pid });
      }
      continue;
    }
    if (held && held.pid !== reported) {
      reported = held.pid;
      host.log('waiting-for-lock', { path: LOCK_FILE, pid: held.pid || undefined });
    }
    await sleep(pollMs, signal);
  }
}
