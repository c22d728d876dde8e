// Finding the node's role file and checking who may write it; what the file may say is the contract in
// contract/role-file.ts.
import { posix as path } from 'node:path';
import { ROLE_FILES, validateRole } from './contract/role-file.js';
import type { Role } from './dns-names.js';
import type { Nameserver } from './dns.js';
import { InputError } from './errors.js';
import type { Host } from './host.js';
import type { RoleConfig } from './phase.js';

export type RoleState =
  | { state: 'unconfigured' }
  | { state: 'invalid'; files: string[]; problems: InputError[]; warnings: InputError[] }
  | { state: 'configured'; config: RoleConfig; nameserver?: Nameserver; warnings: InputError[] };

/** Which role file exists, and what it says. Exactly one may exist (DESIGN.md). */
export async function loadRole(host: Host): Promise<RoleState> {
  const found: { role: Role; file: string; text: string }[] = [];
  for (const role of ['master', 'minion'] as const) {
    const file = ROLE_FILES[role];
    const text = await host.readFile(file);
    if (text !== undefined) found.push({ role, file, text });
  }
  const [only, ...others] = found;
  if (!only) return { state: 'unconfigured' };
  if (others.length) {
    const files = found.map((f) => f.file);
    return {
      state: 'invalid',
      files,
      problems: [new InputError(`both role files exist (${files.join(' and ')}): a node has exactly one role`, { file: files.join(', ') })],
      warnings: [],
    };
  }
  const unsafe = await unsafeOwnership(host, only.file);
  if (unsafe) return { state: 'invalid', files: [only.file], problems: [unsafe], warnings: [] };
  const v = validateRole(only.role, only.file, only.text);
  if (!v.config) return { state: 'invalid', files: [only.file], problems: v.problems, warnings: v.warnings };
  return { state: 'configured', config: v.config, ...(v.nameserver ? { nameserver: v.nameserver } : {}), warnings: v.warnings };
}

/**
 * The role file decides what a node trusts (API endpoint, nameserver, weave password): anyone who can
 * write it owns the node, so it must be root's and not writable by group or others (as secrets are).
 */
async function unsafeOwnership(host: Host, file: string): Promise<InputError | undefined> {
  const info = await host.stat(file);
  if (!info) return undefined;
  if (info.uid !== 0) return new InputError(`owned by uid ${info.uid}, not root: the role file must belong to root`, { file });
  if (info.mode & 0o022)
    return new InputError(`mode ${info.mode.toString(8).padStart(4, '0')} lets others write it: the role file must not be group- or world-writable (chmod 644)`, { file });
  return undefined;
}

/** Whether a path names a role file (for unit conditions), whatever its spelling (`//`, `/./`). */
export function roleOfPath(p: string): Role | undefined {
  const normal = path.normalize(p);
  return (Object.keys(ROLE_FILES) as Role[]).find((r) => ROLE_FILES[r] === normal);
}
