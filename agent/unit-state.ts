// What systemd says about the role's units, and what to do about it: pure code. agent/units.ts asks
// systemd once (`systemctl show` of the whole set) and applies the decision in one transaction.

/** The properties read for every unit, in one `systemctl show` call for the whole set. */
export const SHOW_PROPERTIES = [
  'Id',
  'LoadState',
  'LoadError',
  'ActiveState',
  'SubState',
  'Result',
  'Type',
  'UnitFileState',
  'NeedDaemonReload',
  'FragmentPath',
  'DropInPaths',
  'InactiveExitTimestampMonotonic',
  'Job',
] as const;

export type UnitProperties = Partial<Record<(typeof SHOW_PROPERTIES)[number], string>>;

/**
 * `systemctl show -p ... a b c`: one block per unit, separated by blank lines, in the order asked.
 * Throws when the count does not match (systemctl printed something else).
 */
export function parseShow(stdout: string, names: readonly string[]): Map<string, UnitProperties> {
  const blocks = stdout
    .split(/\n\s*\n/)
    .map((b) => b.trim())
    .filter((b) => b !== '');
  if (blocks.length !== names.length) {
    throw new Error(`systemctl show gave ${blocks.length} unit blocks for ${names.length} units`);
  }
  const out = new Map<string, UnitProperties>();
  blocks.forEach((block, i) => {
    const props: Record<string, string> = {};
    for (const line of block.split('\n')) {
      const eq = line.indexOf('=');
      if (eq > 0) props[line.slice(0, eq)] = line.slice(eq + 1);
    }
    out.set(names[i] as string, props);
  });
  return out;
}

/**
 * - enabled: offline (--root), its [Install] links are in place
 * - active: running; succeeded: a oneshot that finished well
 * - starting: on its way (or restarting after a failure: see the reason)
 * - stopped: inactive, not failed: stopped by hand, which reconcile respects
 * - failed, invalid (does not parse or load), missing (systemd does not find it), masked
 */
export type UnitStateName = 'enabled' | 'active' | 'succeeded' | 'starting' | 'stopped' | 'failed' | 'invalid' | 'missing' | 'masked';

export interface UnitState {
  state: UnitStateName;
  error?: string;
}

/**
 * `started`: this transaction has just started the unit. A oneshot without RemainAfterExit that finished well
 * is inactive again, and systemd may already have unloaded it (an unreferenced inactive unit is garbage
 * collected, its timestamps with it): after our start, inactive with no job and no failure means it succeeded.
 */
export function classify(p: UnitProperties, started = false): UnitState {
  switch (p.LoadState) {
    case 'loaded':
      break;
    case 'not-found':
      return { state: 'missing', error: 'systemd does not find this unit (LoadState=not-found)' };
    case 'masked':
      return { state: 'masked', error: 'masked (LoadState=masked): an operator turned it off' };
    default:
      return { state: 'invalid', error: `systemd cannot load it (LoadState=${p.LoadState ?? '?'}${p.LoadError ? `: ${loadErrorText(p.LoadError)}` : ''})` };
  }
  const oneshot = p.Type === 'oneshot';
  const result = p.Result && p.Result !== 'success' ? ` (Result=${p.Result})` : '';
  switch (p.ActiveState) {
    case 'active':
    case 'reloading':
      return { state: oneshot ? 'succeeded' : 'active' };
    case 'failed':
      return { state: 'failed', error: `failed${result || ` (SubState=${p.SubState ?? '?'})`}` };
    case 'activating':
      return p.SubState === 'auto-restart' ? { state: 'starting', error: `restarting after a failure${result}` } : { state: 'starting' };
    case 'deactivating':
      return { state: 'starting', error: 'stopping' };
    default: {
      // inactive with a job: queued behind its After= units, not started yet.
      if (p.Job) return { state: 'starting', error: 'queued' };
      // inactive: a oneshot without RemainAfterExit that ran and exited well is done; anything else is stopped.
      const ran = started || Number(p.InactiveExitTimestampMonotonic ?? '0') > 0;
      if (oneshot && ran && !result) return { state: 'succeeded' };
      return { state: 'stopped', ...(result ? { error: `stopped${result}` } : {}) };
    }
  }
}

/** `org.freedesktop.systemd1.BadUnitSetting "Unit x has a bad unit file setting."` → the quoted text. */
function loadErrorText(loadError: string): string {
  return /"(.*)"/.exec(loadError)?.[1] ?? loadError;
}

/** Nothing more to wait for: up, done, linked (offline), or masked (an operator's choice the agent leaves alone). */
export const isReady = (s: UnitState) => s.state === 'active' || s.state === 'succeeded' || s.state === 'enabled' || s.state === 'masked';

/** Units that cannot be part of the transaction: nothing is enabled while one of these is in the set. */
export const isUnusable = (s: UnitState) => s.state === 'missing' || s.state === 'invalid';

export interface Transaction {
  /** Units to refuse the whole set for, with their reasons. */
  unusable: string[];
  /** One daemon-reload first: a unit file changed on disk since systemd loaded it. */
  reload: boolean;
  /** One `systemctl enable --no-reload` of these. */
  enable: string[];
  /** Failed units: reset-failed (a start limit may have been hit), then started. */
  resetFailed: string[];
  /** One `systemctl start --no-block` of these. */
  start: string[];
}

/**
 * The one transaction that brings the set where it should be. `asLoaded`: units whose files are known to
 * be what systemd loaded (agent/units.ts compares them with what it read when systemd had them fresh). `bootstrap` (agent run) starts every unit that
 * is not running; reconcile starts only failed ones, so a unit an operator stopped stays stopped. Masked units
 * are the operator's too: left alone.
 */
export function planTransaction(
  units: ReadonlyMap<string, UnitProperties>,
  mode: 'bootstrap' | 'reconcile',
  asLoaded: ReadonlySet<string> = new Set(),
): Transaction {
  const t: Transaction = { unusable: [], reload: false, enable: [], resetFailed: [], start: [] };
  for (const [name, p] of units) {
    const s = classify(p);
    // systemd 257 says NeedDaemonReload=yes for every unit once any [Install] link changes (our own enable
    // --no-reload): only a unit whose files differ from what systemd loaded is worth a reload.
    if (p.NeedDaemonReload === 'yes' && !asLoaded.has(name)) t.reload = true;
    if (isUnusable(s)) t.unusable.push(name);
    if (s.state === 'masked' || isUnusable(s)) continue;
    if (p.UnitFileState === 'disabled') t.enable.push(name);
    if (s.state === 'failed') t.resetFailed.push(name);
    if (s.state === 'failed' || (mode === 'bootstrap' && s.state === 'stopped')) t.start.push(name);
  }
  return t;
}

export const changesNothing = (t: Transaction) => !t.unusable.length && !t.reload && !t.enable.length && !t.start.length;
