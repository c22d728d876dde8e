// The units of this node's role: found in the unit directories, matched by their role-file conditions
// (agent/unit-match.ts), enabled with systemctl (and started on a live node). One unit failing is
// recorded and the others still get enabled; a re-run retries only what is not yet right.
import type { Role } from './dns-names.js';
import { describeError, InputError } from './errors.js';
import type { Host } from './host.js';
import type { Phase, PhaseContext } from './phase.js';
import { parseUnitFile } from './unit-file.js';
import { unitRoles } from './unit-match.js';

/** Searched in this order: a unit in /etc overrides one of the same name in /usr/lib, as in systemd. */
export const UNIT_DIRS = ['/etc/systemd/system', '/usr/lib/systemd/system'] as const;

const UNIT_NAME = /^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.(service|socket|timer|path|mount|automount|swap|target|slice)$/;

export interface FoundUnit {
  name: string;
  /** Node path of the file that wins. */
  file: string;
  roles: Role[];
  problems: InputError[];
}

/** Every unit file in the unit directories, parsed with its drop-ins; directories, masks (/dev/null) and other files are skipped. */
export async function findUnits(host: Host): Promise<FoundUnit[]> {
  const seen = new Map<string, FoundUnit>();
  for (const dir of UNIT_DIRS) {
    for (const name of await host.readdir(dir)) {
      if (seen.has(name) || !UNIT_NAME.test(name)) continue;
      const file = `${dir}/${name}`;
      const info = await host.stat(file);
      if (!info?.isFile) continue;
      const parts = [parseUnitFile((await host.readFile(file)) ?? '', file)];
      for (const dropIn of await dropInFiles(host, name)) parts.push(parseUnitFile((await host.readFile(dropIn)) ?? '', dropIn));
      const problems = parts.flatMap((p) => p.problems);
      const unit = { file, sections: parts.flatMap((p) => p.unit.sections) };
      seen.set(name, { name, file, roles: problems.length ? [] : unitRoles(unit), problems });
    }
  }
  return [...seen.values()].sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * `<dir>/<name>.d/*.conf` of every unit directory, in the order systemd applies them: sorted by file name,
 * a drop-in in /etc hiding one of the same name in /usr/lib. A drop-in can add or reset role conditions.
 */
async function dropInFiles(host: Host, name: string): Promise<string[]> {
  const byName = new Map<string, string>();
  for (const dir of UNIT_DIRS) {
    for (const conf of await host.readdir(`${dir}/${name}.d`)) {
      const file = `${dir}/${name}.d/${conf}`;
      if (conf.endsWith('.conf') && !byName.has(conf) && (await host.stat(file))?.isFile) byName.set(conf, file);
    }
  }
  return [...byName.keys()].sort().map((conf) => byName.get(conf) as string);
}

export type UnitStateName = 'enabled' | 'started' | 'failed' | 'invalid';

export interface UnitStatus {
  name: string;
  file: string;
  state: UnitStateName;
  error?: string;
}

/** Pure: the units this role should have enabled, and the files that could not be read at all. */
export function planUnits(units: readonly FoundUnit[], role: Role): { enable: FoundUnit[]; invalid: FoundUnit[] } {
  return {
    enable: units.filter((u) => !u.problems.length && u.roles.includes(role)),
    invalid: units.filter((u) => u.problems.length),
  };
}

/** `systemctl [--root=DIR] enable`, then `start --no-block` when live; one unit's failure never stops the next. */
export async function applyUnits(host: Host, plan: ReturnType<typeof planUnits>): Promise<UnitStatus[]> {
  const out: UnitStatus[] = plan.invalid.map((u) => ({
    name: u.name,
    file: u.file,
    state: 'invalid',
    error: u.problems.map((p) => p.describe()).join('; '),
  }));
  const systemctl = async (u: FoundUnit, verb: string, ...flags: string[]): Promise<string | undefined> => {
    const args = [verb, ...flags, '--', u.name];
    const r = await host.exec('systemctl', host.live ? args : [`--root=${host.root}`, ...args], { timeoutMs: 60_000 });
    if (r.code === 0) {
      if (/Created symlink/.test(r.stderr)) host.log('unit-enabled', { unit: u.name });
      return undefined;
    }
    const error = `systemctl ${verb} ${u.name} failed (exit ${r.code}): ${firstLine(r.stderr)}`;
    host.log('unit-failed', { unit: u.name, error });
    return error;
  };
  for (const u of plan.enable) {
    // --no-block: a slow unit (the kubelet waits for its config) must not hold up the others or the status.
    const error = (await systemctl(u, 'enable')) ?? (host.live ? await systemctl(u, 'start', '--no-block') : undefined);
    if (error) out.push({ name: u.name, file: u.file, state: 'failed', error });
    else out.push({ name: u.name, file: u.file, state: host.live ? 'started' : 'enabled' });
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

function firstLine(text: string): string {
  return text.trim().split('\n')[0] ?? '';
}

async function enableRoleUnits(ctx: PhaseContext): Promise<UnitStatus[]> {
  const units = await applyUnits(ctx.host, planUnits(await findUnits(ctx.host), ctx.config.role));
  await ctx.report({ facts: { units } });
  const bad = units.filter((u) => u.state === 'failed' || u.state === 'invalid');
  if (bad.length) throw new Error(bad.map((u) => u.error ?? u.name).join('; '));
  return units;
}

export const unitsPhase: Phase = {
  name: 'units',
  roles: ['master', 'minion'],
  async run(ctx) {
    await enableRoleUnits(ctx);
  },
  // Units that appear later (a package upgrade) or a unit that failed once get their turn.
  async reconcile(ctx) {
    try {
      await enableRoleUnits(ctx);
    } catch (err) {
      ctx.host.log('reconcile-failed', { phase: 'units', error: describeError(err) });
    }
    return 60_000;
  },
};
