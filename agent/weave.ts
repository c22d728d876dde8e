// The Weave overlay, on masters and minions alike (the API server must reach pod addresses). The agent never
// launches the router itself: it writes weave.service's launch arguments (/run/kubeseed/weave.env: peer name,
// allocation range, IPAM start mode, peers) and systemd runs `weaver`. Afterwards the reconcile loop follows
// the records through the router's HTTP API on 127.0.0.1 (/connect, /forget), never with a relaunch: the IPAM
// start mode is fixed at the first launch and kept across reboots.
import * as os from 'node:os';
import { envFileVars, renderEnvFile } from './contract/env-file.js';
import { roleRecordName, type Role } from './dns-names.js';
import { InputError } from './errors.js';
import type { Host } from './host.js';
import type { Phase, PhaseContext } from './phase.js';
import {
  awaitMembership,
  describeLookup,
  localIPv4,
  lookupPeers,
  samePeers,
  compareIPv4,
  type GoodLookup,
  type Interfaces,
  type PeerView,
  type WaitOptions,
} from './peers.js';
import { DEFAULT_CLUSTER_CIDR, DEFAULT_SERVICE_CIDR, parseClusterCidr, parseServiceCidr } from './service-cidr.js';
import { UNIT_DIRS } from './units.js';
import { checkPasswordFile } from './weave-password.js';
import { readPeerName } from './weave-peer-name.js';
import { connectPeers, DEFAULT_ROUTER_OPTIONS, forgetPeers, routerStatus, WeaveRouterError, type WeaveRouterOptions } from './weave-router.js';

export const WEAVE_ENV = '/run/kubeseed/weave.env';
export const WEAVE_UNIT = 'weave.service';
/** Survives reboots (/run does not): the consensus value of the first launch, and the last change. */
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
  /** --ipalloc-init of the first launch: never changes afterwards (IPAM's ring depends on it). */
  init: string;
  launchedAt: string;
  lastChange?: PeerChange;
}

async function readState(host: Host): Promise<WeaveState | undefined> {
  const text = await host.readFile(WEAVE_STATE);
  if (text === undefined) return undefined;
  try {
    const state = JSON.parse(text) as WeaveState & { consensus?: number };
    // Written before the router ran without the weave script: the consensus count alone.
    if (state.init === undefined && Number.isInteger(state.consensus) && state.consensus! > 0) return { ...state, init: `consensus=${state.consensus}` };
    if (typeof state.init === 'string' && isIpallocInit(state.init)) return state;
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

const OTHER_ROLE: Readonly<Record<Role, Role>> = { master: 'minion', minion: 'master' };

/** The other role's nodes that are peers too: masters and minions share one overlay. Pure. */
export function mergePeers(own: readonly string[], other: readonly string[], self: readonly string[]): string[] {
  return [...new Set([...own, ...other])].filter((a) => !self.includes(a)).sort(compareIPv4);
}

/** The launch arguments that do not depend on DNS, checked before anything is written. */
async function launchBasics(ctx: PhaseContext): Promise<{ name: string; range: string; encrypted: boolean }> {
  const where = { file: ctx.config.file };
  const service = parseServiceCidr(ctx.config.vars.SERVICE_CIDR || DEFAULT_SERVICE_CIDR, where);
  const range = parseClusterCidr(ctx.config.vars.CLUSTER_CIDR || DEFAULT_CLUSTER_CIDR, service, where);
  const { encrypted } = await checkPasswordFile(ctx.host);
  return { name: await readPeerName(ctx.host), range, encrypted };
}

export function createWeavePhase(overrides: Partial<WeaveOptions> = {}): Phase {
  const opts = { ...DEFAULT_WEAVE_OPTIONS, ...overrides };
  // Carried between passes, so every report gives the whole overlay picture.
  let degraded: { reason: string; since: string } | undefined;
  let failure: string | undefined;
  let lastGood: GoodLookup | undefined;
  let lastSeen = '';
  let basics: { name: string; range: string; encrypted: boolean } | undefined;

  const records = (ctx: PhaseContext) => ({
    own: roleRecordName(ctx.config.role, ctx.config.cluster, ctx.config.domain),
    other: roleRecordName(OTHER_ROLE[ctx.config.role], ctx.config.cluster, ctx.config.domain),
  });

  const facts = (ctx: PhaseContext, peers: readonly string[], state: WeaveState, router?: string) => ({
    peers: [...peers],
    overlay: {
      records: Object.values(records(ctx)),
      self: lastGood?.view.self ?? [],
      name: basics?.name,
      range: basics?.range,
      ipallocInit: state.init,
      encrypted: basics?.encrypted,
      lastChange: state.lastChange ?? null,
      dns: degraded ? { state: 'degraded', reason: degraded.reason, since: degraded.since } : { state: 'ok', transport: lastGood?.transport },
      ...(router === undefined ? {} : { router }),
      error: failure ?? null,
    },
  });

  /** Logs what a record holds that is not a peer, once per distinct picture (not at every pass). */
  const noteOddities = (host: Host, record: string, view: PeerView) => {
    const key = JSON.stringify([record, view.ignored, view.duplicates]);
    if (key === lastSeen) return;
    lastSeen = key;
    for (const { address, reason } of view.ignored) host.log('peer-ignored', { record, address, reason });
    if (view.duplicates.length) host.log('peer-duplicates', { record, addresses: view.duplicates.join(',') });
  };

  /**
   * The other role's record, looked at once: its nodes are peers when it lists any (and none when it is empty:
   * no masters yet, or a cluster without minions). Undefined when DNS cannot say, so nothing is changed on it.
   */
  const otherPeers = async (ctx: PhaseContext, local: ReadonlySet<string>): Promise<string[] | { reason: string }> => {
    const record = records(ctx).other;
    const lookup = await lookupPeers(record, ctx.nameserver, local, opts.dnsTimeoutMs, ctx.signal);
    if (lookup.kind === 'dns-down') return { reason: describeLookup(record, lookup, local) };
    return lookup.view.peers;
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
      const { own } = records(ctx);
      basics = await launchBasics(ctx); // bad input fails before anything is written
      const local = localIPv4(opts.interfaces());
      const lookup = await awaitMembership(ctx, own, local, opts);
      lastGood = lookup;
      noteOddities(ctx.host, own, lookup.view);
      let other = await otherPeers(ctx, local);
      if (!Array.isArray(other)) {
        // This node's own record answered: start with its peers; the reconcile loop adds the others.
        ctx.host.log('overlay-degraded', { record: records(ctx).other, reason: other.reason });
        other = [];
      }
      const peers = mergePeers(lookup.view.peers, other, lookup.view.self);
      let state = await readState(ctx.host);
      const members = peers.length + 1;
      if (state && state.init !== `consensus=${members}`) ctx.host.log('weave-ipalloc-init-kept', { init: state.init, listed: members });
      state ??= { init: `consensus=${members}`, launchedAt: opts.now().toISOString() };
      const wanted: WeaveEnv = { ...basics, init: state.init, peers };
      const current = parseWeaveEnv((await ctx.host.readFile(WEAVE_ENV)) ?? '');
      let router: string | undefined;
      let envPeers: readonly string[] = peers;
      if (current && ctx.host.live) {
        // weave.service already runs with the env it was given: follow, never relaunch.
        try {
          state = await follow(ctx, state, current, peers);
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
        ctx.host.log('weave-env-written', { path: WEAVE_ENV, peers: envPeers.length, init: state.init });
      }
      await writeState(ctx.host, state);
      await ctx.report({ facts: facts(ctx, envPeers, state, router) });
    },

    async reconcile(ctx) {
      const { own } = records(ctx);
      let state = await readState(ctx.host);
      const current = parseWeaveEnv((await ctx.host.readFile(WEAVE_ENV)) ?? '');
      if (!state || !current) {
        // /run was emptied under a running agent: the next run phase launches again; nothing to follow here.
        ctx.host.log('weave-not-launched', { path: WEAVE_ENV });
        return opts.ttlFloorMs;
      }
      const local = localIPv4(opts.interfaces());
      const lookup = await lookupPeers(own, ctx.nameserver, local, opts.dnsTimeoutMs, ctx.signal);
      const other = lookup.kind === 'ok' ? await otherPeers(ctx, local) : undefined;
      if (lookup.kind !== 'ok' || !Array.isArray(other)) {
        // DNS down, or an answer that is not a trustworthy picture (empty, or without this node):
        // keep the last good set rather than tell the router to forget everyone.
        const reason = lookup.kind !== 'ok' ? describeLookup(own, lookup, local) : (other as { reason: string }).reason;
        if (!degraded || degraded.reason !== reason) {
          degraded = { reason, since: degraded?.since ?? opts.now().toISOString() };
          ctx.host.log('overlay-degraded', { record: own, reason, peers: current.peers.length });
        }
        await ctx.report({ facts: facts(ctx, current.peers, state, await routerState(ctx)) });
        return opts.ttlFloorMs;
      }
      lastGood = lookup;
      if (degraded) {
        ctx.host.log('overlay-recovered', { record: own, since: degraded.since });
        degraded = undefined;
      }
      noteOddities(ctx.host, own, lookup.view);
      const next = mergePeers(lookup.view.peers, other, lookup.view.self);
      try {
        state = await follow(ctx, state, current, next);
      } catch (err) {
        if (!(err instanceof WeaveRouterError)) throw err;
        ctx.host.log('weave-router-failed', { route: err.route, error: err.message });
        failure = err.message;
        await ctx.report({ facts: facts(ctx, current.peers, state, await routerState(ctx)) });
        return opts.ttlFloorMs;
      }
      failure = undefined;
      await ctx.report({ facts: facts(ctx, next, state, await routerState(ctx)) });
      return nextPassMs(lookup.ttl, opts.ttlFloorMs, opts.ttlCapMs);
    },
  };
}

export const weavePhase = createWeavePhase();
