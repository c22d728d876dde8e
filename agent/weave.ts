// The Weave overlay, on masters and minions alike (the API server must reach pod addresses). The agent never
// launches the router itself: it writes weave.service's launch arguments (/run/kubeseed/weave.env: peer name,
// allocation range, IPAM start mode, peers) and systemd runs `weaver`. Who starts IPAM with consensus=N and
// who joins as an observer is agent/weave-consensus.ts's decision (the masters, N = MASTER_COUNT); this phase
// does its I/O: the records, the persisted consensus set, the files. Afterwards the reconcile loop follows the
// records through the router's HTTP API on 127.0.0.1 (/connect, /forget), never with a relaunch: the
// consensus set is fixed at the first launch and kept across reboots.
import * as os from 'node:os';
import { envFileVars, renderEnvFile } from './contract/env-file.js';
import { roleRecordName, type Role } from './dns-names.js';
import { InputError } from './errors.js';
import type { Host } from './host.js';
import type { Phase, PhaseContext } from './phase.js';
import { clusterCidrOf } from './cluster-cidr.js';
import {
  awaitMembership,
  describeLookup,
  localIPv4,
  lookupPeers,
  samePeers,
  type Interfaces,
  type Lookup,
  type PeerView,
  type WaitOptions,
} from './peers.js';
import { UNIT_DIRS } from './units.js';
import { consensusStatus, decideConsensus, masterCountOf, parseConsensusSet, type ConsensusDecision, type ConsensusSet } from './weave-consensus.js';
import { checkPasswordFile } from './weave-password.js';
import { readPeerName } from './weave-peer-name.js';
import { connectPeers, DEFAULT_ROUTER_OPTIONS, forgetPeers, routerStatus, WeaveRouterError, type WeaveRouterOptions } from './weave-router.js';

export const WEAVE_ENV = '/run/kubeseed/weave.env';
export const WEAVE_UNIT = 'weave.service';
/** Survives reboots (/run does not): the consensus set chosen at the first launch, and the last change. */
export const WEAVE_STATE = '/var/lib/kubeseed/weave.json';

export interface WeaveEnv {
  /** The router's --name: a MAC-form peer name derived from /etc/machine-id. */
  name: string;
  /** --ipalloc-range: the cluster CIDR. */
  range: string;
  /** --ipalloc-init: `consensus=N` or `observer`, fixed at the first launch. */
  init: string;
  peers: readonly string[];
}

/** weave.env for systemd's EnvironmentFile=. No secret: the password has its own file (agent/weave-password.ts). */
export function renderWeaveEnv(env: WeaveEnv): string {
  return renderEnvFile('Written by kubeseed-agent (phase weave): the launch arguments of weave.service. Do not edit.', [
    ['WEAVE_NAME', env.name],
    ['IPALLOC_RANGE', env.range],
    ['IPALLOC_INIT', env.init],
    ['PEERS', env.peers.join(' ')],
  ]);
}

/** The launch arguments from a weave.env this agent wrote (undefined when it is missing or not ours). */
export function parseWeaveEnv(text: string): WeaveEnv | undefined {
  const vars = envFileVars(text, WEAVE_ENV);
  const { WEAVE_NAME: name, IPALLOC_RANGE: range, IPALLOC_INIT: init, PEERS: peers } = vars;
  if (name === undefined || range === undefined || init === undefined || peers === undefined || !isIpallocInit(init)) return undefined;
  return { name, range, init, peers: peers.split(/\s+/).filter(Boolean) };
}

/** The router's --ipalloc-init forms the agent uses (rajch/weave prog/weaver/main.go parseMode). */
export function isIpallocInit(text: string): boolean {
  return /^consensus=[1-9][0-9]*$/.test(text) || text === 'observer';
}

export interface PeerChange {
  at: string;
  added: string[];
  removed: string[];
}

export interface PeerChangePlan {
  added: string[];
  removed: string[];
  /** POST /connect with replace=true and these peers: the whole new set (undefined: nothing to tell). */
  connect?: string[];
  /** POST /forget of these peers, after the connect: the departed, so live connections to them go too. */
  forget?: string[];
}

/** What the router must be told to go from the peers it has to the peers the records list. Pure. */
export function decidePeerChange(current: readonly string[], next: readonly string[]): PeerChangePlan {
  if (samePeers(current, next)) return { added: [], removed: [] };
  const added = next.filter((a) => !current.includes(a));
  const removed = current.filter((a) => !next.includes(a));
  return { added, removed, connect: [...next], ...(removed.length ? { forget: removed } : {}) };
}

/** When to look again: the record's TTL, kept between a floor (no hammering) and a cap (no sleeping through changes). */
export function nextPassMs(ttlSeconds: number | undefined, floorMs: number, capMs: number): number {
  const ms = (ttlSeconds ?? 0) * 1000;
  return Math.min(capMs, Math.max(floorMs, ms));
}

interface WeaveState {
  /** The consensus set this node chose at its first launch (agent/weave-consensus.ts): never changes afterwards. */
  set: ConsensusSet;
  launchedAt: string;
  lastChange?: PeerChange;
}

/**
 * The persisted state, or undefined when there is none yet. A state from before the consensus rule (a count
 * of minions, no set) counts as none: the node chooses now, and weaver ignores --ipalloc-init once it has
 * IPAM data of its own (ipam/allocator.go Start: "Initialising with persisted data").
 */
async function readState(host: Host): Promise<WeaveState | undefined> {
  const text = await host.readFile(WEAVE_STATE);
  if (text === undefined) return undefined;
  try {
    const state = JSON.parse(text) as Partial<WeaveState> & { consensus?: unknown; init?: unknown };
    const set = parseConsensusSet(state.set);
    if (set && typeof state.launchedAt === 'string') return { ...(state as WeaveState), set };
    if (state.set === undefined && (Number.isInteger(state.consensus) || typeof state.init === 'string')) return undefined;
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

export interface WeaveOptions extends WaitOptions {
  /** This node's interfaces (tests inject them). */
  interfaces: () => Interfaces;
  /** Where the router's HTTP API listens (weave.service's --http-addr). */
  router: WeaveRouterOptions;
  ttlFloorMs: number;
  ttlCapMs: number;
  now: () => Date;
}

export const DEFAULT_WEAVE_OPTIONS: WeaveOptions = {
  interfaces: () => os.networkInterfaces(),
  router: DEFAULT_ROUTER_OPTIONS,
  pollMs: 2_000,
  settleMs: 1_000,
  timeoutMs: 15 * 60_000,
  dnsTimeoutMs: 5_000, // resolv.conf's default; a thousand-record answer is slow to build on some servers
  ttlFloorMs: 5_000,
  ttlCapMs: 300_000,
  now: () => new Date(),
};

/** Why a look at the records cannot be trusted to change the router's peers, or undefined when it can. Pure. */
export function distrust(role: Role, records: { masters: string; minions: string }, masters: Lookup, minions: Lookup, local: ReadonlySet<string>): string | undefined {
  if (masters.kind === 'dns-down' || masters.kind === 'empty') return describeLookup(records.masters, masters, local);
  // A master is in its own record, or the answer is not the cluster as it is.
  if (role === 'master' && masters.kind === 'absent') return describeLookup(records.masters, masters, local);
  if (minions.kind === 'dns-down') return describeLookup(records.minions, minions, local);
  // A minion exists, so an emptied minions record is bookkeeping gone wrong, not zero minions (for a master it
  // can be a cluster without minions yet). A minion absent from a capped record is normal: never distrusted.
  if (role === 'minion' && minions.kind === 'empty') return describeLookup(records.minions, minions, local);
  return undefined;
}

/** The A answers of the masters record as the consensus decision takes them (undefined: DNS said nothing). */
const masterAnswers = (lookup: Lookup) => (lookup.kind === 'dns-down' ? undefined : [...lookup.view.self, ...lookup.view.peers]);
const viewOf = (lookup: Lookup) => (lookup.kind === 'dns-down' ? undefined : lookup.view);

/** The launch arguments that do not depend on DNS, checked before anything is written. */
async function launchBasics(ctx: PhaseContext): Promise<{ name: string; range: string; encrypted: boolean }> {
  // The role file's validation has already refused a CLUSTER_CIDR that overlaps SERVICE_CIDR.
  const range = clusterCidrOf(ctx.config.vars);
  const { encrypted } = await checkPasswordFile(ctx.host);
  return { name: await readPeerName(ctx.host), range, encrypted };
}

export function createWeavePhase(overrides: Partial<WeaveOptions> = {}): Phase {
  const opts = { ...DEFAULT_WEAVE_OPTIONS, ...overrides };
  // Carried between passes, so every report gives the whole overlay picture.
  let degraded: { reason: string; since: string } | undefined;
  let failure: string | undefined;
  let self: string[] = [];
  let transport: string | undefined;
  let lastSeen = '';
  let basics: { name: string; range: string; encrypted: boolean } | undefined;

  const records = (ctx: PhaseContext) => ({
    masters: roleRecordName('master', ctx.config.cluster, ctx.config.domain),
    minions: roleRecordName('minion', ctx.config.cluster, ctx.config.domain),
  });

  const facts = (ctx: PhaseContext, peers: readonly string[], state: WeaveState, decision: ConsensusDecision, router?: string) => ({
    peers: [...peers],
    weaveConsensus: consensusStatus(decision),
    overlay: {
      records: Object.values(records(ctx)),
      self,
      name: basics?.name,
      range: basics?.range,
      ipallocInit: decision.ipallocInit,
      encrypted: basics?.encrypted,
      lastChange: state.lastChange ?? null,
      dns: degraded ? { state: 'degraded', reason: degraded.reason, since: degraded.since } : { state: 'ok', transport },
      ...(router === undefined ? {} : { router }),
      error: failure ?? null,
    },
  });

  /** Logs what the records hold that is not a peer, once per distinct picture (not at every pass). */
  const noteOddities = (host: Host, views: [string, PeerView | undefined][]) => {
    const key = JSON.stringify(views.map(([record, view]) => [record, view?.ignored, view?.duplicates]));
    if (key === lastSeen) return;
    lastSeen = key;
    for (const [record, view] of views) {
      for (const { address, reason } of view?.ignored ?? []) host.log('peer-ignored', { record, address, reason });
      if (view?.duplicates.length) host.log('peer-duplicates', { record, addresses: view.duplicates.join(',') });
    }
  };

  /** The consensus decision for this look at the records, remembering what this node lists as itself. */
  const decide = (ctx: PhaseContext, masters: Lookup, minions: Lookup, local: ReadonlySet<string>, chosen: ConsensusSet | undefined) => {
    const { masters: mastersRecord, minions: minionsRecord } = records(ctx);
    const own = ctx.config.role === 'master' ? masters : minions;
    self = viewOf(own)?.self ?? [];
    transport = own.kind === 'ok' ? own.transport : transport;
    noteOddities(ctx.host, [
      [mastersRecord, viewOf(masters)],
      [minionsRecord, viewOf(minions)],
    ]);
    return decideConsensus({
      role: ctx.config.role,
      masterCount: masterCountOf(ctx.config.vars),
      file: ctx.config.file,
      mastersRecord,
      local,
      masters: masterAnswers(masters),
      minions: viewOf(minions)?.peers ?? [],
      chosen,
    });
  };

  /** Tells the running router about a new peer set, then records it. Throws WeaveRouterError, changing nothing recorded. */
  const follow = async (ctx: PhaseContext, state: WeaveState, env: WeaveEnv, next: readonly string[]) => {
    const change = decidePeerChange(env.peers, next);
    if (!change.connect) return state;
    await connectPeers(change.connect, true, opts.router);
    ctx.host.log('weave-router-connect', { peers: change.connect.length, replace: true });
    if (change.forget) {
      await forgetPeers(change.forget, opts.router);
      ctx.host.log('weave-router-forget', { peers: change.forget.length });
    }
    await writeEnv(ctx, { ...env, peers: next });
    const updated = { ...state, lastChange: { at: opts.now().toISOString(), added: change.added, removed: change.removed } };
    await writeState(ctx.host, updated);
    ctx.host.log('weave-peers-changed', {
      added: change.added.join(',') || undefined,
      removed: change.removed.join(',') || undefined,
      peers: next.length,
    });
    return updated;
  };

  const writeEnv = (ctx: PhaseContext, env: WeaveEnv) => ctx.host.writeFile(WEAVE_ENV, renderWeaveEnv(env), 0o600);

  /** The router's own word on whether it is up, for `agent status` (live nodes only: offline there is no router). */
  const routerState = async (ctx: PhaseContext) => {
    if (!ctx.host.live) return undefined;
    try {
      return (await routerStatus(opts.router)).ready ? 'ready' : 'starting';
    } catch (err) {
      if (!(err instanceof WeaveRouterError)) throw err;
      return `unreachable (${err.message})`;
    }
  };

  const look = (ctx: PhaseContext, record: string, local: ReadonlySet<string>) => lookupPeers(record, ctx.nameserver, local, opts.dnsTimeoutMs, ctx.signal);

  return {
    name: 'weave',
    roles: ['master', 'minion'],

    // weave.env only means something to weave.service: an image built without the overlay (or a root
    // under test holding just the role's other units) has no one to launch, so nothing to wait for.
    async skipReason(ctx) {
      for (const dir of UNIT_DIRS) if (await ctx.host.stat(`${dir}/${WEAVE_UNIT}`)) return undefined;
      return `no ${WEAVE_UNIT} in ${UNIT_DIRS.join(' or ')}: this image carries no overlay`;
    },

    async run(ctx) {
      const names = records(ctx);
      basics = await launchBasics(ctx); // bad input fails before anything is written
      const known = await readState(ctx.host);
      const local = localIPv4(opts.interfaces());
      // A master waits until its record lists it, settled (it is one of the consensus set); a minion never
      // waits to see itself (a capped record may never list it): it joins whatever the masters record says.
      const masters = ctx.config.role === 'master' ? await awaitMembership(ctx, names.masters, local, opts) : await look(ctx, names.masters, local);
      const minions = await look(ctx, names.minions, local);
      if (minions.kind === 'dns-down') ctx.host.log('overlay-degraded', { record: names.minions, reason: describeLookup(names.minions, minions, local) });
      const decision = decide(ctx, masters, minions, local, known?.set);
      if (decision.contradiction) ctx.host.log('weave-consensus-contradicted', { contradiction: decision.contradiction });
      let state: WeaveState = { ...known, set: decision.set, launchedAt: known?.launchedAt ?? opts.now().toISOString() };
      const wanted: WeaveEnv = { ...basics, init: decision.ipallocInit, peers: decision.peers };
      const current = parseWeaveEnv((await ctx.host.readFile(WEAVE_ENV)) ?? '');
      let router: string | undefined;
      let envPeers: readonly string[] = decision.peers;
      if (current && ctx.host.live) {
        // weave.service already runs with the env it was given: follow, never relaunch.
        try {
          state = await follow(ctx, state, current, decision.peers);
          failure = undefined;
        } catch (err) {
          if (!(err instanceof WeaveRouterError)) throw err;
          // weave.env keeps saying what the router was last told, so the reconcile loop tries again.
          ctx.host.log('weave-router-failed', { route: err.route, error: err.message });
          failure = err.message;
          router = `unreachable (${err.message})`;
          envPeers = current.peers;
        }
      }
      if (await writeEnv(ctx, { ...wanted, peers: envPeers })) {
        ctx.host.log('weave-env-written', { path: WEAVE_ENV, peers: envPeers.length, init: decision.ipallocInit });
      }
      await writeState(ctx.host, state);
      await ctx.report({ facts: facts(ctx, envPeers, state, decision, router) });
    },

    async reconcile(ctx) {
      const names = records(ctx);
      let state = await readState(ctx.host);
      const current = parseWeaveEnv((await ctx.host.readFile(WEAVE_ENV)) ?? '');
      if (!state || !current) {
        // /run was emptied under a running agent: the next run phase launches again; nothing to follow here.
        ctx.host.log('weave-not-launched', { path: WEAVE_ENV });
        return opts.ttlFloorMs;
      }
      const local = localIPv4(opts.interfaces());
      const masters = await look(ctx, names.masters, local);
      const minions = await look(ctx, names.minions, local);
      const reason = distrust(ctx.config.role, names, masters, minions, local);
      const decision = decide(ctx, masters, minions, local, state.set);
      if (reason) {
        // DNS down, or an answer that is not a trustworthy picture: keep the last good set rather than tell
        // the router to forget everyone.
        if (!degraded || degraded.reason !== reason) {
          degraded = { reason, since: degraded?.since ?? opts.now().toISOString() };
          ctx.host.log('overlay-degraded', { reason, peers: current.peers.length });
        }
        await ctx.report({ facts: facts(ctx, current.peers, state, decision, await routerState(ctx)) });
        return opts.ttlFloorMs;
      }
      if (degraded) {
        ctx.host.log('overlay-recovered', { since: degraded.since });
        degraded = undefined;
      }
      if (JSON.stringify(decision.set) !== JSON.stringify(state.set)) {
        // Masters registered after this node chose join the set (up to N); its size never changes.
        state = { ...state, set: decision.set };
        await writeState(ctx.host, state);
      }
      try {
        state = await follow(ctx, state, current, decision.peers);
      } catch (err) {
        if (!(err instanceof WeaveRouterError)) throw err;
        ctx.host.log('weave-router-failed', { route: err.route, error: err.message });
        failure = err.message;
        await ctx.report({ facts: facts(ctx, current.peers, state, decision, await routerState(ctx)) });
        return opts.ttlFloorMs;
      }
      failure = undefined;
      await ctx.report({ facts: facts(ctx, decision.peers, state, decision, await routerState(ctx)) });
      const ttls = [masters, minions].flatMap((l) => (l.kind === 'ok' && l.ttl !== undefined ? [l.ttl] : []));
      return nextPassMs(ttls.length ? Math.min(...ttls) : undefined, opts.ttlFloorMs, opts.ttlCapMs);
    },
  };
}

export const weavePhase = createWeavePhase();
