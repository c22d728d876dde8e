// The units of this node's role: found in the unit directories, matched by their role-file conditions
// (agent/unit-match.ts), then brought up as one systemd transaction: one `systemctl show` of the whole set,
// at most one daemon-reload, one `enable --no-reload`, one `start`, and one `show` per poll while they
// start. A PID 1 reload costs 18-35 s under TCG and disturbs every unit, so nothing is enabled or reloaded
// that is already right, and the set is refused whole (nothing enabled) when one unit cannot load.
import { Interrupted, sleep } from './abort.js';
import type { Role } from './dns-names.js';
import { describeError, InputError } from './errors.js';
import type { Host } from './host.js';
import type { Phase, PhaseContext } from './phase.js';
import { ROLE_FILES } from './contract/role-file.js';
import { installPlan, isLinked, isUnitName, writeLinks, CONFIG_DIR, type InstallLink } from './unit-install.js';
import { parseUnitFile, type UnitFile } from './unit-file.js';
import { unitRoles } from './unit-match.js';
import {
  changesNothing,
  classify,
  isReady,
  isUnusable,
  parseShow,
  planTransaction,
  SHOW_PROPERTIES,
  type Transaction,
  type UnitProperties,
  type UnitState,
  type UnitStateName,
} from './unit-state.js';

/** Searched in this order: a unit in /etc overrides one of the same name in /usr/lib, as in systemd. */
export const UNIT_DIRS = ['/etc/systemd/system', '/usr/lib/systemd/system'] as const;

export interface FoundUnit {
  name: string;
  /** Node path of the file that wins. */
  file: string;
  roles: Role[];
  problems: InputError[];
  /** The file and its drop-ins, parsed: its [Install] section says what enabling it links. */
  unit: UnitFile;
}

/**
 * The names a role condition must contain: a unit whose file and drop-ins never mention them has no role,
 * whatever else they say (roleOfPath only normalizes `//` and `/./` in the directories).
 */
const ROLE_FILE_NAMES = Object.values(ROLE_FILES).map((file) => file.slice(file.lastIndexOf('/') + 1));
const mentionsRole = (text: string) => ROLE_FILE_NAMES.some((name) => text.includes(name));

/**
 * Every unit file in the unit directories, parsed with its drop-ins; directories, masks (/dev/null) and other
 * files are skipped. `role` scope (agent run) parses only the units whose texts name a role file: the others
 * cannot be one of a role's, and parsing a Debian image's 230 unit files was seconds of a TCG boot. `all`
 * (agent check) parses every one, so a broken unit anywhere is reported.
 */
export async function findUnits(host: Host, scope: 'role' | 'all' = 'role'): Promise<FoundUnit[]> {
  // One listing per directory; a unit's `<name>.d` is looked into only where the listing shows one (a Debian
  // image has about 290 units and a handful of drop-in directories: a lookup per unit and directory was
  // most of this phase's file system calls).
  const listings = await Promise.all(UNIT_DIRS.map(async (dir) => ({ dir, names: await host.readdir(dir) }))).then((all) =>
    all.map(({ dir, names }) => ({ dir, names, has: new Set(names) })),
  );
  const seen = new Map<string, FoundUnit>();
  for (const { dir, names } of listings) {
    for (const name of names) {
      if (seen.has(name) || !isUnitName(name)) continue;
      const file = `${dir}/${name}`;
      const info = await host.stat(file);
      if (!info?.isFile) continue;
      const texts = [{ file, text: (await host.readFile(file)) ?? '' }];
      for (const dropIn of await dropInFiles(host, name, listings)) texts.push({ file: dropIn, text: (await host.readFile(dropIn)) ?? '' });
      if (scope === 'role' && !texts.some((t) => mentionsRole(t.text))) continue;
      const parts = texts.map((t) => parseUnitFile(t.text, t.file));
      const problems = parts.flatMap((p) => p.problems);
      const unit = { file, sections: parts.flatMap((p) => p.unit.sections) };
      seen.set(name, { name, file, roles: problems.length ? [] : unitRoles(unit), problems, unit });
    }
  }
  return [...seen.values()].sort((a, b) => unitOrder(a.name, b.name));
}

/**
 * Unit names in byte order, as systemctl lists them. Not localeCompare: its first call loads ICU's collation
 * data, about 65 million instructions, a third of a second of every boot under TCG.
 */
const unitOrder = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * `<dir>/<name>.d/*.conf` of every unit directory, in the order systemd applies them: sorted by file name,
 * a drop-in in /etc hiding one of the same name in /usr/lib. A drop-in can add or reset role conditions.
 */
async function dropInFiles(host: Host, name: string, listings: readonly { dir: string; has: ReadonlySet<string> }[]): Promise<string[]> {
  const byName = new Map<string, string>();
  for (const { dir, has } of listings) {
    if (!has.has(`${name}.d`)) continue;
    for (const conf of await host.readdir(`${dir}/${name}.d`)) {
      const file = `${dir}/${name}.d/${conf}`;
      if (conf.endsWith('.conf') && !byName.has(conf) && (await host.stat(file))?.isFile) byName.set(conf, file);
    }
  }
  return [...byName.keys()].sort().map((conf) => byName.get(conf) as string);
}

export interface UnitStatus {
  name: string;
  file: string;
  state: UnitStateName;
  error?: string;
}

export interface UnitPlan {
  /** The units this role should have enabled. */
  enable: FoundUnit[];
  /** The files that could not be read at all. */
  invalid: FoundUnit[];
  /** Every unit found, for the Also= of the role's units. */
  known: FoundUnit[];
}

/** Pure: the units this role should have enabled, and the files that could not be read at all. */
export function planUnits(units: readonly FoundUnit[], role: Role): UnitPlan {
  return {
    enable: units.filter((u) => !u.problems.length && u.roles.includes(role)),
    invalid: units.filter((u) => u.problems.length),
    known: [...units],
  };
}

export interface ApplyOptions {
  /** agent run starts every unit not running; reconcile only failed ones (an operator's stop is respected). */
  mode: 'bootstrap' | 'reconcile';
  signal?: AbortSignal;
  /** How long the set may take to become active (live, bootstrap only). */
  readyTimeoutMs?: number;
  /**
   * Per unit, its files as systemd last loaded them (unitFiles), kept by the caller from one pass to the next:
   * systemd 257 flags every unit NeedDaemonReload=yes after any enable, so only a real change reloads.
   */
  loaded?: Map<string, string>;
  /** Told what is not ready yet while waiting, and null when done. */
  waiting?: (on: string | null) => Promise<void>;
  /** Where enabling links a unit (the manager's configuration directory): /etc/systemd/system. */
  configDir?: string;
}

/** The set's statuses; `ok` is false when the set was refused, a command failed, or a unit is not ready. */
export interface Applied {
  units: UnitStatus[];
  ok: boolean;
  /** True when this pass changed something (enabled, reloaded or started). */
  changed: boolean;
}

export async function applyUnits(host: Host, plan: UnitPlan, opts: ApplyOptions): Promise<Applied> {
  const files = new Map(plan.enable.map((u) => [u.name, u.file]));
  const links = linker(plan, opts.configDir ?? CONFIG_DIR);
  const names = [...files.keys()];
  const invalid: UnitStatus[] = plan.invalid.map((u) => ({
    name: u.name,
    file: u.file,
    state: 'invalid',
    error: u.problems.map((p) => p.describe()).join('; '),
  }));
  // Bootstrap is done when every unit is ready; reconcile is fine while none failed (a stopped one is the operator's).
  const fine = opts.mode === 'bootstrap' ? isReady : (s: UnitState) => s.state !== 'failed' && !isUnusable(s);
  const result = (states: Map<string, UnitState>, ok: boolean, changed: boolean): Applied => ({
    units: [...invalid, ...names.map((name) => ({ name, file: files.get(name) as string, ...(states.get(name) as UnitState) }))].sort((a, b) =>
      unitOrder(a.name, b.name),
    ),
    ok: ok && !invalid.length && [...states.values()].every(fine),
    changed,
  });
  // A unit file that does not parse may be one of this role's: enabling the rest would leave half a node.
  if (invalid.length) {
    for (const u of invalid) host.log('unit-invalid', { unit: u.name, error: u.error });
    return result(new Map(names.map((n) => [n, { state: 'stopped', error: 'not enabled: another unit file is invalid' }])), false, false);
  }
  if (!names.length) return result(new Map(), true, false);
  return host.live ? applyLive(host, names, links, opts, result) : applyOffline(host, names, links, result);
}

/** A set's [Install] links (with those of the units its Also= names), or why systemctl must link it. */
type Linker = (names: readonly string[]) => InstallLink[] | { unsupported: string };

function linker(plan: UnitPlan, configDir: string): Linker {
  const known = new Map(plan.known.map((u) => [u.name, u]));
  return (names) => {
    const out: InstallLink[] = [];
    const seen = new Set<string>();
    const queue = [...names];
    for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
      if (seen.has(name)) continue;
      seen.add(name);
      const unit = known.get(name);
      if (!unit) return { unsupported: `${name} (named by Also=) was not among the unit files read` };
      const install = installPlan(name, unit.unit, configDir);
      if ('unsupported' in install) return install;
      out.push(...install.links);
      queue.push(...install.also);
    }
    return out;
  };
}

/** `systemctl --root=DIR`: no manager runs, so nothing starts; the [Install] links are what matters. */
async function applyOffline(host: Host, names: string[], links: Linker, result: (s: Map<string, UnitState>, ok: boolean, changed: boolean) => Applied): Promise<Applied> {
  // One read: is-enabled prints one line per unit, in order (and exits non-zero when one is not enabled).
  const read = await systemctl(host, ['is-enabled', '--', ...names]);
  const lines = read.stdout.trim().split('\n');
  const enable = lines.length === names.length ? names.filter((_, i) => lines[i] === 'disabled') : names;
  // A mask is the operator's: shown, never undone.
  const enabled = new Map<string, UnitState>(names.map((n, i) => [n, lines[i] === 'masked' ? { state: 'masked' } : { state: 'enabled' }]));
  if (!enable.length) return result(enabled, true, false);
  const error = await enableAll(host, enable, links);
  if (error) return result(new Map(names.map((n) => [n, enable.includes(n) ? { state: 'failed', error } : (enabled.get(n) as UnitState)])), false, false);
  return result(enabled, true, true);
}

async function applyLive(
  host: Host,
  names: string[],
  links: Linker,
  opts: ApplyOptions,
  result: (s: Map<string, UnitState>, ok: boolean, changed: boolean) => Applied,
): Promise<Applied> {
  let props = await confirmDisabled(host, await show(host, names), links);
  const files = await unitFiles(host, props);
  const loaded = opts.loaded ?? new Map<string, string>();
  // What systemd has loaded fresh is remembered, so our own enable's NeedDaemonReload=yes costs no reload.
  for (const [n, p] of props) if (p.NeedDaemonReload === 'no') loaded.set(n, files.get(n) as string);
  let plan = planTransaction(props, opts.mode, new Set(names.filter((n) => loaded.get(n) === files.get(n))));
  const fail = (states: Map<string, UnitState>, error: string, changed: boolean) => {
    for (const [unit, s] of states) {
      if (s.state === 'failed' || isUnusable(s) || (opts.mode === 'bootstrap' && !isReady(s))) host.log('unit-failed', { unit, error: s.error ?? error });
    }
    return result(states, false, changed);
  };
  if (changesNothing(plan) && opts.mode === 'reconcile') return result(states(props), true, false);
  const reloaded = plan.reload;
  if (plan.reload) {
    // Only when systemd itself says a unit file changed on disk: the one reload of this transaction.
    await must(host, ['daemon-reload']);
    host.log('units-reloaded', { reason: 'unit file changed on disk' });
    for (const [n, text] of files) loaded.set(n, text);
    props = await show(host, names);
    plan = { ...planTransaction(props, opts.mode), reload: false };
  }
  if (plan.unusable.length) {
    // Checked before anything is enabled: the set goes in whole or not at all.
    const current = states(props);
    for (const n of names) if (!plan.unusable.includes(n) && !isReady(current.get(n) as UnitState)) current.set(n, { state: 'stopped', error: `not started: ${plan.unusable.join(', ')} cannot load` });
    return fail(current, 'cannot load', reloaded);
  }
  const enableError = plan.enable.length ? await enableAll(host, plan.enable, links) : undefined;
  if (enableError) return fail(new Map(names.map((n) => [n, { state: 'failed', error: enableError }])), enableError, reloaded);
  await start(host, plan);
  const changed = reloaded || plan.enable.length > 0 || plan.start.length > 0;
  if (opts.mode === 'reconcile') return result(states(await show(host, names)), true, changed);
  const final = await waitForReady(host, names, new Set(plan.start), opts);
  return [...final.values()].every(isReady) ? result(final, true, changed) : fail(final, 'not ready', changed);
}

/**
 * systemd keeps a loaded unit's UnitFileState from when it was loaded: on the booted image (systemd 257) the
 * agent's own unit, running since boot, said "disabled" after our enable, and every reconcile enabled it again.
 * So the units `show` calls disabled are looked up on disk: their [Install] links, or `is-enabled` for
 * those this agent does not link itself.
 */
async function confirmDisabled(host: Host, props: Map<string, UnitProperties>, links: Linker): Promise<Map<string, UnitProperties>> {
  const doubt: string[] = [];
  const out = new Map(props);
  for (const [name, p] of props) {
    if (p.UnitFileState !== 'disabled') continue;
    const own = links([name]);
    if (!Array.isArray(own)) doubt.push(name);
    else if (await isLinked(host, own)) out.set(name, { ...p, UnitFileState: 'enabled' });
  }
  if (!doubt.length) return out;
  // is-enabled prints one line per unit, in order, and exits non-zero when one is not enabled.
  const lines = (await systemctl(host, ['is-enabled', '--', ...doubt])).stdout.trim().split('\n');
  if (lines.length !== doubt.length) return out;
  doubt.forEach((name, i) => out.set(name, { ...(props.get(name) as UnitProperties), UnitFileState: lines[i] as string }));
  return out;
}

/** The directories systemd reads a system unit's drop-ins from (systemd.unit(5)), besides those it loaded. */
const DROP_IN_DIRS = ['/etc/systemd/system', '/run/systemd/system', '/usr/local/lib/systemd/system', '/usr/lib/systemd/system'];

/**
 * Per unit, the text of its unit file and drop-ins, with the drop-in files that exist now: what a
 * daemon-reload would read. Compared between passes, never logged (a drop-in may hold an Environment= secret).
 */
async function unitFiles(host: Host, props: ReadonlyMap<string, UnitProperties>): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const [name, p] of props) {
    const paths = [p.FragmentPath ?? '', ...(p.DropInPaths ?? '').split(' ')].filter(Boolean);
    const parts: string[] = [];
    for (const file of paths) parts.push(`${file}\0${(await host.readFile(file)) ?? ''}`);
    for (const dir of DROP_IN_DIRS) parts.push(`${dir}/${name}.d\0${(await host.readdir(`${dir}/${name}.d`)).sort().join('\0')}`);
    out.set(name, parts.join('\0\0'));
  }
  return out;
}

/**
 * The set's [Install] links, written all or none; or, when one of them needs what only systemctl knows, one
 * `systemctl enable --no-reload` for the set (on failure the ones it enabled are disabled again).
 */
async function enableAll(host: Host, names: string[], links: Linker): Promise<string | undefined> {
  const own = links(names);
  let error: string | undefined;
  if (Array.isArray(own)) {
    const conflict = await writeLinks(host, own);
    if (conflict) error = `enabling ${names.join(' ')}: ${conflict}; none of them enabled`;
  } else {
    host.log('units-enabled-by-systemctl', { reason: own.unsupported });
    const r = await systemctl(host, ['enable', '--no-reload', '--', ...names]);
    if (r.code !== 0) {
      await systemctl(host, ['disable', '--no-reload', '--', ...names]);
      error = `systemctl enable ${names.join(' ')} failed (exit ${r.code}): ${firstLine(r.stderr)}; none of them enabled`;
    }
  }
  if (error) {
    host.log('units-enable-failed', { units: names.join(','), error });
    return error;
  }
  for (const unit of names) host.log('unit-enabled', { unit });
  return undefined;
}

async function start(host: Host, plan: Transaction): Promise<void> {
  // A unit past its start limit refuses `start` until its failed state is reset.
  if (plan.resetFailed.length) await must(host, ['reset-failed', '--', ...plan.resetFailed]);
  if (!plan.start.length) return;
  // --no-block: the job is queued and waitForReady watches it, so a slow unit holds up nothing else.
  await must(host, ['start', '--no-block', '--', ...plan.start]);
  host.log('units-started', { units: plan.start.join(',') });
}

/** One `show` of the whole set per poll, until every unit is active (oneshots: succeeded), one failed, or the time is up. */
async function waitForReady(host: Host, names: string[], started: ReadonlySet<string>, opts: ApplyOptions): Promise<Map<string, UnitState>> {
  const timeoutMs = opts.readyTimeoutMs ?? 15 * 60_000;
  const since = performance.now();
  let pause = 200;
  // The wait begins as the jobs are queued, not when the first `show` of them returns: under TCG that show took
  // 2-4.5 s of a booting node, beside the units it watches, and was counted as the agent's own work.
  let said = started.size ? `units ${names.filter((n) => started.has(n)).map((n) => describe(n, QUEUED)).join(', ')}` : '';
  if (said) await opts.waiting?.(said);
  for (;;) {
    const current = states(await show(host, names), started);
    const values = [...current.values()];
    const pending = names.filter((n) => !isReady(current.get(n) as UnitState));
    const failed = values.some((s) => s.state === 'failed' || s.state === 'stopped' || isUnusable(s));
    if (!pending.length || failed) {
      await opts.waiting?.(null);
      return current;
    }
    if (performance.now() - since > timeoutMs) {
      await opts.waiting?.(null);
      for (const n of pending) {
        const s = current.get(n) as UnitState;
        current.set(n, { state: s.state, error: `not ready after ${Math.round(timeoutMs / 1000)} s${s.error ? `: ${s.error}` : ''}` });
      }
      return current;
    }
    const on = `units ${pending.map((n) => describe(n, current.get(n) as UnitState)).join(', ')}`;
    if (on !== said) await opts.waiting?.(on);
    said = on;
    await sleep(pause, opts.signal ?? new AbortController().signal);
    pause = Math.min(pause * 2, 2000);
  }
}

/** A unit whose start job `start --no-block` has just queued. */
const QUEUED: UnitState = { state: 'starting', error: 'queued' };

const describe = (name: string, s: UnitState) => `${name} (${s.state}${s.error ? `: ${s.error}` : ''})`;

function states(props: Map<string, Parameters<typeof classify>[0]>, started: ReadonlySet<string> = new Set()): Map<string, UnitState> {
  return new Map([...props].map(([name, p]) => [name, classify(p, started.has(name))]));
}

async function show(host: Host, names: string[]) {
  const r = await must(host, ['show', `--property=${SHOW_PROPERTIES.join(',')}`, '--', ...names]);
  return parseShow(r.stdout, names);
}

function systemctl(host: Host, args: string[]) {
  return host.exec('systemctl', host.live ? args : [`--root=${host.root}`, ...args], { timeoutMs: 120_000 });
}

/** A systemctl call that must work for the transaction to make sense (show, reload, start of queued jobs). */
async function must(host: Host, args: string[]) {
  const r = await systemctl(host, args);
  if (r.code !== 0) throw new Error(`systemctl ${args[0]} failed (exit ${r.code}): ${firstLine(r.stderr)}`);
  return r;
}

function firstLine(text: string): string {
  return text.trim().split('\n')[0] ?? '';
}

async function bringUp(ctx: PhaseContext, mode: ApplyOptions['mode']): Promise<Applied> {
  const plan = planUnits(await findUnits(ctx.host), ctx.config.role);
  // Once per run, not per reconcile: which units the role came to, and (in the journal) when the search ended.
  if (mode === 'bootstrap') ctx.host.log('units-planned', { units: plan.enable.map((u) => u.name).join(',') });
  return applyUnits(ctx.host, plan, {
    mode,
    signal: ctx.signal,
    waiting: (on) => ctx.report({ waitingOn: on }),
    loaded: loadedOf(ctx),
  });
}

/** The unit files systemd had loaded, as last seen, per run (see ApplyOptions.loaded). */
const loadedFiles = new WeakMap<PhaseContext, Map<string, string>>();

function loadedOf(ctx: PhaseContext): Map<string, string> {
  const known = loadedFiles.get(ctx) ?? new Map<string, string>();
  loadedFiles.set(ctx, known);
  return known;
}

/** The status line for a set that is not ready: every unit that is not, with its reason. */
function notReady(units: readonly UnitStatus[]): string {
  return units
    .filter((u) => !isReady(u))
    .map((u) => `${u.name}: ${u.state}${u.error ? ` (${u.error})` : ''}`)
    .join('; ');
}

/** The unit states last written to status.json, per run. */
const published = new WeakMap<PhaseContext, string>();

export const unitsPhase: Phase = {
  name: 'units',
  roles: ['master', 'minion'],
  async run(ctx) {
    const applied = await bringUp(ctx, 'bootstrap');
    await ctx.report({ facts: { units: applied.units } });
    published.set(ctx, JSON.stringify(applied.units));
    if (!applied.ok) throw new Error(notReady(applied.units));
  },
  // One read when nothing drifted. Units that appear later (a package upgrade) are enabled and started, a
  // failed unit is started again; a unit stopped by hand stays stopped.
  async reconcile(ctx) {
    try {
      const applied = await bringUp(ctx, 'reconcile');
      // status.json follows the units (an operator's stop shows) without a write per pass.
      const text = JSON.stringify(applied.units);
      if (published.get(ctx) !== text) await ctx.report({ facts: { units: applied.units } });
      published.set(ctx, text);
      if (!applied.ok) ctx.host.log('reconcile-failed', { phase: 'units', error: notReady(applied.units) });
    } catch (err) {
      if (err instanceof Interrupted) throw err;
      ctx.host.log('reconcile-failed', { phase: 'units', error: describeError(err) });
    }
    return 60_000;
  },
};
