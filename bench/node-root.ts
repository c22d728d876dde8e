// Offline node roots for the benches that run the shipped agent (reaction, agent): the repository's
// own units, a role file and the role's share of freshly generated secrets, as user-data leaves them.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Role } from '../agent/dns-names.js';
import { ROLE_FILES } from '../agent/contract/role-file.js';
import { SECRETS_DIR, secretsForRole } from '../agent/secrets-layout.js';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const BUNDLE = path.join(REPO, 'dist', 'agent.js');

/** This machine's first non-loopback IPv4: a minion waits until minions.<cluster> lists it. */
export function selfAddress(): string | undefined {
  return Object.values(os.networkInterfaces())
    .flat()
    .find((i) => i && (i.family === 'IPv4' || (i.family as unknown) === 4) && !i.internal)?.address;
}

export interface Roots {
  /** A fresh root for one role; every call is a new directory. */
  make(role: Role, roleFile: string): Promise<string>;
  /** Removes every root and the secrets. */
  close(): Promise<void>;
}

/** Generates the cluster secrets once (openssl, a few seconds), then hands out roots. */
export async function nodeRoots(cluster: string): Promise<Roots> {
  const base = await fs.mkdtemp(path.join(os.tmpdir(), 'kubeseed-bench-'));
  const secrets = path.join(base, 'secrets');
  await promisify(execFile)(process.execPath, ['--import', 'tsx', 'scripts/secrets.ts', '--cluster', cluster, '--out', secrets], { cwd: REPO });
  let count = 0;
  return {
    async make(role, roleFile) {
      const root = path.join(base, `root-${role}-${++count}`);
      await fs.cp(path.join(REPO, 'units'), path.join(root, 'usr/lib/systemd/system'), { recursive: true });
      await fs.mkdir(path.join(root, 'etc/systemd/system'), { recursive: true });
      await fs.mkdir(path.join(root, SECRETS_DIR), { recursive: true });
      for (const { name } of secretsForRole(role)) {
        await fs.copyFile(path.join(secrets, name), path.join(root, SECRETS_DIR, name));
        await fs.chmod(path.join(root, SECRETS_DIR, name), 0o600);
      }
      await fs.mkdir(path.join(root, path.dirname(ROLE_FILES[role])), { recursive: true });
      await fs.writeFile(path.join(root, ROLE_FILES[role]), roleFile);
      return root;
    },
    close: () => fs.rm(base, { recursive: true, force: true }),
  };
}
