// A real systemd service manager for the agent's live path (no --root): `systemd --user` with its own
// XDG_RUNTIME_DIR and HOME. It refuses to start unless /run/systemd/system exists (a system booted with
// systemd), which is not so on the test machine: it runs in a private mount namespace with a tmpfs /run that
// has it. Needs root (unshare, mount). The agent reaches it through test/fixtures/systemctl-user/systemctl.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { open, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const SHIM = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'systemctl-user');

export interface UserManager {
  /** The environment for the agent's Host: PATH finds the shim first. */
  env: NodeJS.ProcessEnv;
  /** Where unit files go (~/.config/systemd/user). */
  unitDir: string;
  writeUnit(name: string, text: string): Promise<string>;
  /** Every systemctl call the agent made, one line each, since the last call of this. */
  takeCalls(): Promise<string[]>;
  /** Runs systemctl --user directly (the test's own look, not recorded). */
  systemctl(...args: string[]): Promise<string>;
  /** Changes on every daemon-reload: the manager's UnitsLoadTimestampMonotonic. */
  loadStamp(): Promise<string>;
  stop(): Promise<void>;
}

export async function startUserManager(): Promise<UserManager> {
  const dir = await mkdtemp(path.join(tmpdir(), 'kubeseed-systemd-user-'));
  const runtime = path.join(dir, 'run');
  const home = path.join(dir, 'home');
  const unitDir = path.join(home, '.config/systemd/user');
  await mkdir(runtime, { mode: 0o700 });
  await mkdir(unitDir, { recursive: true });
  const calls = path.join(dir, 'calls');
  await writeFile(calls, '');
  const base = { XDG_RUNTIME_DIR: runtime, HOME: home, PATH: process.env.PATH ?? '/usr/bin:/bin' };
  const log = await open(path.join(dir, 'manager.log'), 'w');
  const child: ChildProcess = spawn(
    'unshare',
    ['--mount', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && exec /lib/systemd/systemd --user'],
    { env: base, stdio: ['ignore', log.fd, log.fd] },
  );
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const systemctl = async (...args: string[]) =>
    (await promisify(execFile)('/bin/systemctl', ['--user', ...args], { env: base, encoding: 'utf8' })).stdout;
  const started = Date.now();
  for (;;) {
    if ((await systemctl('show', '-p', 'SystemState').catch(() => '')).trim() === 'SystemState=running') break;
    if (child.exitCode !== null || Date.now() - started > 20_000) {
      child.kill('SIGKILL');
      await log.close();
      const why = await readFile(path.join(dir, 'manager.log'), 'utf8').catch(() => '');
      await rm(dir, { recursive: true, force: true });
      throw new Error(`systemd --user did not reach "running" within 20 s (needs root for unshare/mount): ${why.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  let seen = 0;
  return {
    env: { ...base, PATH: `${SHIM}:${base.PATH}`, SYSTEMCTL_CALLS: calls },
    unitDir,
    async writeUnit(name, text) {
      const file = path.join(unitDir, name);
      await writeFile(file, text);
      return file;
    },
    async takeCalls() {
      const lines = (await readFile(calls, 'utf8')).split('\n').filter(Boolean);
      const fresh = lines.slice(seen);
      seen = lines.length;
      return fresh;
    },
    systemctl,
    async loadStamp() {
      return (await systemctl('show', '-p', 'UnitsLoadTimestampMonotonic')).trim();
    },
    async stop() {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
      await log.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
