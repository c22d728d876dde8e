// A unit's [Install] links (systemd.unit(5) "[Install] Section Options"), read and written by the agent
// itself the way `systemctl enable` writes them in /etc/systemd/system. On a booted TCG minion each
// `systemctl enable --no-reload` took 1.2-1.7 s and each `is-enabled` 1.0-1.6 s, and reconcile asked
// `is-enabled` every minute because a loaded unit's UnitFileState stays stale until a daemon-reload; the
// links are a few stats. What this module does not understand (templates, specifiers) is left to systemctl.
import { posix as path } from 'node:path';
import type { Host } from './host.js';
import { listValues, type UnitFile } from './unit-file.js';

/** Where `systemctl enable` puts the links: the administrator's unit directory. */
export const CONFIG_DIR = '/etc/systemd/system';

export interface InstallLink {
  /** The symlink. */
  path: string;
  /** What it points at: the unit file itself. */
  target: string;
}

const UNIT_NAME = /^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.(service|socket|timer|path|mount|automount|swap|target|slice|device|scope)$/;

/** A unit name as systemd spells them (no `/`: a link named from one stays in its directory). */
export const isUnitName = (name: string): boolean => UNIT_NAME.test(name);

/** The links enabling one unit makes, and the units its Also= enables with it. */
export type InstallPlan = { links: InstallLink[]; also: string[] } | { unsupported: string };

const DEPENDENCY_DIRS = [
  ['WantedBy', 'wants'],
  ['RequiredBy', 'requires'],
] as const;

/**
 * The [Install] keys linked here, checked against the build host's systemctl (test/unit-install.test.ts).
 * Anything else (UpheldBy=, which systemd 252 does not know yet) goes to systemctl.
 */
const KNOWN_KEYS = new Set(['WantedBy', 'RequiredBy', 'Alias', 'Also', 'DefaultInstance']);

/** Pure: what `systemctl enable` links for `name`, whose file and drop-ins are `unit`; or why systemctl must do it. */
export function installPlan(name: string, unit: UnitFile, configDir = CONFIG_DIR): InstallPlan {
  if (name.includes('@')) return { unsupported: `${name} is a template or an instance` };
  const other = unit.sections.filter((s) => s.name === 'Install').flatMap((s) => s.entries).find((e) => !KNOWN_KEYS.has(e.key));
  if (other) return { unsupported: `${name} has ${other.key}= in [Install]` };
  const words = (key: string) => listValues(unit, 'Install', key).flatMap((e) => e.value.split(/\s+/).filter(Boolean));
  const links: InstallLink[] = [];
  for (const [key, dir] of DEPENDENCY_DIRS) for (const other of words(key)) links.push({ path: `${configDir}/${other}.${dir}/${name}`, target: unit.file });
  for (const alias of words('Alias')) links.push({ path: `${configDir}/${alias}`, target: unit.file });
  const also = words('Also');
  const named = [...(['WantedBy', 'RequiredBy', 'Alias'] as const).flatMap(words), ...also];
  if (named.some((w) => w.includes('%'))) return { unsupported: `${name} uses specifiers in [Install]` };
  const odd = named.find((w) => !isUnitName(w));
  if (odd) return { unsupported: `${name} names ${JSON.stringify(odd)} in [Install], not a unit name` };
  return { links, also };
}

/** True when every link is in place and points at its unit file (what `is-enabled` calls enabled, for these links). */
export async function isLinked(host: Host, links: readonly InstallLink[]): Promise<boolean> {
  for (const link of links) if ((await host.readLink(link.path)) !== link.target) return false;
  return links.length > 0;
}

/**
 * Makes the links, all or none: a path that exists as anything else (another unit's link, a file) is a
 * conflict, reported as `systemctl enable` would refuse it, and the links made before it are removed again.
 */
export async function writeLinks(host: Host, links: readonly InstallLink[]): Promise<string | undefined> {
  const made: string[] = [];
  for (const link of links) {
    const current = await host.readLink(link.path);
    if (current === link.target) continue;
    const occupied = current !== undefined || (await host.stat(link.path)) !== undefined;
    if (occupied) {
      for (const done of made) await host.remove(done);
      return `${link.path} already exists${current !== undefined ? ` and points at ${current}` : ''}, not at ${link.target}`;
    }
    try {
      await host.mkdir(path.dirname(link.path));
      await host.symlink(link.target, link.path);
    } catch (err) {
      for (const done of made) await host.remove(done);
      return `cannot link ${link.path} (${(err as Error).message})`;
    }
    made.push(link.path);
  }
  return undefined;
}
