// The Weave overlay on a minion. The agent never launches Weave itself: it writes weave.service's
// launch arguments (/run/kubeseed/weave.env) and systemd launches it. Afterwards the reconcile loop
// follows the minions record with `weave connect --replace` and `weave forget`, never with a relaunch:
// IPAM's consensus value (MEMBERS) is fixed at the first launch and kept across reboots.
import * as os from 'node:os';
import { envFileVars, envValueProblem, renderEnvFile } from './contract/env-file.js';
import { roleRecordName } from './dns-names.js';
import { InputError } from './errors.js';
import type { Host } from './host.js';
import type { Phase, PhaseContext } from './phase.js';
import {
  awaitMembership,
  describeLookup,
  localIPv4,
  lookupPeers,
  samePeers,
  type GoodLookup,
  type Interfaces,
  type PeerView,
  type WaitOptions,
} from './peers.js';
import { UNIT_DIRS } from './units.js';

export const WEAVE_ENV = '/run/kubeseed/weave.env';
export const WEAVE_UNIT = 'weave.service';
/** Survives reboots (/run does not): the consensus value of the first launch, and the last change. */
export const WEAVE_STATE = '/var/lib/kubeseed/weave.json';

export interface WeaveEnv {
  peers: readonly string[];
  members: number;
  password?: string;
}

/** weave.env for systemd's EnvironmentFile=. The password travels in the environment, never in argv. */
export function renderWeaveEnv(env: WeaveEnv): string {
  const entries: [string, string][] = [
    ['PEERS', env.peers.join(' ')],
    ['MEMBERS', String(env.members)],
  ];
  if (env.password !== undefined) entries.push(['WEAVE_PASSWORD', env.password]);
  return renderEnvFile('Written by kubeseed-agent (phase weave): the launch arguments of weave.service. Do not edit.', entries);
}

/** PEERS and MEMBERS from a weave.env this agent wrote (undefined when it is missing or not ours). */
export function parseWeaveEnv(text: string): { peers: string[]; members: number } | undefined {
  const vars = envFileVars(text, WEAVE_ENV);
  const members = Number(vars.MEMBERS);
  const peers = vars.PEERS;
  if (peers === undefined || !Number.isInteger(members) || members < 1) return undefined;
  return { peers: peers.split(/\s+/).filter(Boolean), members };
}

/** The role file's WEAVE_PASSWORD, checked so it can ride in weave.env (and nowhere else). */
export function weavePassword(vars: Readonly<Record<string, string>>, file: string): string | undefined {
  const password = vars.WEAVE_PASSWORD;
  if (password === undefined || password === '') return undefined;
  const problem = envValueProblem('WEAVE_PASSWORD', password);
  if (problem) throw new InputError(problem, { file });
  return password;
}

export interface PeerChange {
  at: string;
  added: string[];
  removed: string[];
}

/** What Weave must be told to go from the peers it has to the peers the record lists. Pure. */
export function decidePeerChange(current: readonly string[], next: readonly string[]): { added: string[]; removed: string[]; commands: string[][] } {
  if (samePeers(current, next)) return { added: [], removed: [], commands: [] };
  const added = next.filter((a) => !current.includes(a));
  const removed = current.filter((a) => !next.includes(a));
  const commands = [['connect', '--replace', ...next]];
  if (removed.length) commands.push(['forget', ...removed]);
  return { added, removed, commands };
}

/** When to look again: the record's TTL, kept between a floor (no hammering) and a cap (no sleeping through changes). */
export function nextPassMs(ttlSeconds: number | undefined, floorMs: number, capMs: number): number {
  const ms = (ttlSeconds ?? 0) * 1000;
  return Math.min(capMs, Math.max(floorMs, ms));
}

interface WeaveState {
  consensus: number;
  launchedAt: string;
  lastChange?: PeerChange;
}

async function readState(host: Host): Promise<WeaveState | undefined> {
  const text = await host.readFile(WEAVE_STATE);
  if (text === undefined) return undefined;
  try {
    const state = JSON.parse(text) as WeaveState;
    if (Number.isInteger(state.consensus) && state.consensus > 0) return state;
  } catch {
    // fall through: a state file we cannot read is reported, never silently replaced
  }
  throw new InputError(`not a weave state file written by kubeseed-agent (remove it only if Weave's IPAM data is gone too)`, {
    file: host.resolve(WEAVE_STATE),
  });
}

async function writeState(host: Host, state: WeaveState): Promise<void> {
  await host.writeFile(WEAVE_STATE, `${JSON.stringify(state, null, 2)}\n`, 0o644);
}

export class WeaveCommandError extends Error {
  constructor(
    readonly args: string[],
    readonly code: number,
    readonly stderr: string,
  ) {
    super(`weave ${args[0]} exited ${code}: ${stderr.trim().split('\n').pop() ?? ''}`);
    this.name = 'WeaveCommandError';
  }
}

export interface WeaveOptions extends WaitOptions {
  /** This node's interfaces (tests inject them). */
  interfaces: () => Interfaces;
  /** The weave script, found on PATH. */
  command: string;
  ttlFloorMs: number;
  ttlCapMs: number;
  now: () => Date;
}

export const DEFAULT_WEAVE_OPTIONS: WeaveOptions = {
  interfaces: () => os.networkInterfaces(),
  command: 'weave',
  pollMs: 2_000,
  settleMs: 1_000,
  timeoutMs: 15 * 60_000,
  dnsTimeoutMs: 5_000, // resolv.conf's default; a thousand-record answer is slow to build on some servers
  ttlFloorMs: 5_000,
  ttlCapMs: 300_000,
  now: () => new Date(),
};

export function createWeavePhase(overrides: Partial<WeaveOptions> = {}): Phase {
  const opts = { ...DEFAULT_WEAVE_OPTIONS, ...overrides };
  // Carried between passes, so every report gives the whole overlay picture.
  let degraded: { reason: string; since: string } | undefined;
  let failure: string | undefined;
  let lastGood: GoodLookup | undefined;
  let lastSeen = '';

  const facts = (record: string, peers: readonly string[], state: WeaveState) => ({
    peers: [...peers],
    overlay: {
      record,
      self: lastGood?.view.self ?? [],
      members: state.consensus,
      consensus: `consensus=${state.consensus}`,
      lastChange: state.lastChange ?? null,
      dns: degraded ? { state: 'degraded', reason: degraded.reason, since: degraded.since } : { state: 'ok', transport: lastGood?.transport },
      error: failure ?? null,
    },
  });

  /** Logs what the record holds that is not a peer, once per distinct picture (not at every pass). */
  const noteOddities = (host: Host, record: string, view: PeerView) => {
    const key = JSON.stringify([view.ignored, view.duplicates]);
    if (key === lastSeen) return;
    lastSeen = key;
    for (const { address, reason } of view.ignored) host.log('peer-ignored', { record, address, reason });
    if (view.duplicates.length) host.log('peer-duplicates', { record, addresses: view.duplicates.join(',') });
  };

  /** Tells a running Weave about a new peer set, then records it. Throws WeaveCommandError, changing nothing recorded. */
  const follow = async (ctx: PhaseContext, state: WeaveState, current: readonly string[], next: readonly string[]) => {
    const change = decidePeerChange(current, next);
    if (!change.commands.length) return state;
    for (const args of change.commands) {
      const result = await ctx.host.exec(opts.command, args);
      if (result.code !== 0) throw new WeaveCommandError(args, result.code, result.stderr);
      ctx.host.log('weave-command', { command: args[0], peers: args.length - (args[0] === 'connect' ? 2 : 1) });
    }
    await writeEnv(ctx, next, state.consensus);
    const updated = { ...state, lastChange: { at: opts.now().toISOString(), added: change.added, removed: change.removed } };
    await writeState(ctx.host, updated);
    ctx.host.log('weave-peers-changed', {
      added: change.added.join(',') || undefined,
      removed: change.removed.join(',') || undefined,
      peers: next.length,
    });
    return updated;
  };

  const writeEnv = (ctx: PhaseContext, peers: readonly string[], members: number) => {
    const password = weavePassword(ctx.config.vars, ctx.config.file);
    return ctx.host.writeFile(WEAVE_ENV, renderWeaveEnv({ peers, members, ...(password === undefined ? {} : { password }) }), 0o600);
  };

  return {
    name: 'weave',
    roles: ['minion'],

    // weave.env only means something to weave.service: an image built without the overlay (or a root
    // under test holding just the role's other units) has no one to launch, so nothing to wait for.
    async skipReason(ctx) {
      for (const dir of UNIT_DIRS) if (await ctx.host.stat(`${dir}/${WEAVE_UNIT}`)) return undefined;
      return `no ${WEAVE_UNIT} in ${UNIT_DIRS.join(' or ')}: this image carries no overlay`;
    },

    async run(ctx) {
      const record = roleRecordName('minion', ctx.config.cluster, ctx.config.domain);
      weavePassword(ctx.config.vars, ctx.config.file); // bad input fails before anything is written
      const local = localIPv4(opts.interfaces());
      const lookup = await awaitMembership(ctx, record, local, opts);
      lastGood = lookup;
      noteOddities(ctx.host, record, lookup.view);
      let state = await readState(ctx.host);
      if (state && state.consensus !== lookup.view.members)
        ctx.host.log('weave-consensus-kept', { consensus: state.consensus, listed: lookup.view.members });
      state ??= { consensus: lookup.view.members, launchedAt: opts.now().toISOString() };
      const current = parseWeaveEnv((await ctx.host.readFile(WEAVE_ENV)) ?? '');
      if (current && ctx.host.live) {
        // weave.service already runs with the env it was given: follow, never relaunch.
        state = await follow(ctx, state, current.peers, lookup.view.peers);
      } else if (await writeEnv(ctx, lookup.view.peers, state.consensus)) {
        ctx.host.log('weave-env-written', { path: WEAVE_ENV, peers: lookup.view.peers.length, members: state.consensus });
      }
      await writeState(ctx.host, state);
      await ctx.report({ facts: facts(record, lookup.view.peers, state) });
    },

    async reconcile(ctx) {
      const record = roleRecordName('minion', ctx.config.cluster, ctx.config.domain);
      let state = await readState(ctx.host);
      const current = parseWeaveEnv((await ctx.host.readFile(WEAVE_ENV)) ?? '');
      if (!state || !current) {
        // /run was emptied under a running agent: the next run phase launches again; nothing to follow here.
        ctx.host.log('weave-not-launched', { path: WEAVE_ENV });
        return opts.ttlFloorMs;
      }
      const local = localIPv4(opts.interfaces());
      const lookup = await lookupPeers(record, ctx.nameserver, local, opts.dnsTimeoutMs, ctx.signal);
      if (lookup.kind !== 'ok') {
        // DNS down, or an answer that is not a trustworthy picture (empty, or without this node):
        // keep the last good set rather than tell Weave to forget everyone.
        const reason = describeLookup(record, lookup, local);
        if (!degraded || degraded.reason !== reason) {
          degraded = { reason, since: degraded?.since ?? opts.now().toISOString() };
          ctx.host.log('overlay-degraded', { record, reason, peers: current.peers.length });
        }
        await ctx.report({ facts: facts(record, current.peers, state) });
        return opts.ttlFloorMs;
      }
      lastGood = lookup;
      if (degraded) {
        ctx.host.log('overlay-recovered', { record, since: degraded.since });
        degraded = undefined;
      }
      noteOddities(ctx.host, record, lookup.view);
      try {
        state = await follow(ctx, state, current.peers, lookup.view.peers);
      } catch (err) {
        if (!(err instanceof WeaveCommandError)) throw err;
        ctx.host.log('weave-command-failed', { command: err.args[0], code: err.code, error: err.message });
        failure = err.message;
        await ctx.report({ facts: facts(record, current.peers, state) });
        return opts.ttlFloorMs;
      }
      failure = undefined;
      await ctx.report({ facts: facts(record, lookup.view.peers, state) });
      return nextPassMs(lookup.ttl, opts.ttlFloorMs, opts.ttlCapMs);
    },
  };
}

export const weavePhase = createWeavePhase();
