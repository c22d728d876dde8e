// The boot flow of `agent run`, top to bottom: read the role file, run the role's phases in order
// (each recorded in status.json as it starts and ends), then, unless --once, keep reconciling.
import { Interrupted, monotonicMs, sleep } from './abort.js';
import { acquireLock } from './lock.js';
import { nameserverFromResolvConf, type Nameserver } from './dns.js';
import { describeError } from './errors.js';
import type { Host } from './host.js';
import type { Phase, PhaseContext, RoleConfig } from './phase.js';
import { loadPhases } from './phases.js';
import { loadRole } from './role-file.js';
import { endWait, initialStatus, writeStatus, type PhaseStatus, type Status } from './status.js';

export interface RunOptions {
  host: Host;
  once: boolean;
  /** --nameserver; beats the role file's NAMESERVER, which beats <root>/etc/resolv.conf. */
  nameserver?: Nameserver;
  signal: AbortSignal;
  agentVersion: string;
  phases?: readonly Phase[];
  now?: () => Date;
}

/** Exit code of `agent run`: 128+SIGTERM when interrupted, as a shell would report it. */
export const EXIT_INTERRUPTED = 143;

/** The boot flow under the root's lock: a second agent on the same root waits instead of racing this one. */
export async function runAgent(opts: RunOptions): Promise<number> {
  let lock;
  try {
    lock = await acquireLock(opts.host, opts.signal);
  } catch (err) {
    if (err instanceof Interrupted) return EXIT_INTERRUPTED;
    throw err;
  }
  try {
    return await runLocked(opts);
  } finally {
    await lock.release();
  }
}

async function runLocked(opts: RunOptions): Promise<number> {
  const { host, signal } = opts;
  const now = opts.now ?? (() => new Date());
  const status = await initialStatus(host, opts.agentVersion, now());
  const save = async () => {
    status.updatedAt = now().toISOString();
    await writeStatus(host, status);
  };
  host.log('agent-start', { version: opts.agentVersion, root: host.root || '/', once: opts.once });

  // 1. The role file: none means there is nothing to do yet; a bad one changes nothing.
  const role = await loadRole(host);
  if (role.state === 'unconfigured') {
    status.state = 'unconfigured';
    await save();
    host.log('unconfigured', { reason: 'no role file' });
    return 4;
  }
  status.warnings = role.warnings.map((w) => w.describe());
  for (const w of role.warnings) host.log('role-file-warning', { problem: w.describe() });
  if (role.state === 'invalid') {
    status.state = 'invalid';
    status.errors = role.problems.map((p) => p.describe());
    await save();
    for (const p of role.problems) host.log('role-file-invalid', { problem: p.describe() });
    return 1;
  }
  const config = role.config;
  Object.assign(status, { role: config.role, roleFile: config.file, cluster: config.cluster, domain: config.domain, apiEndpoint: config.apiEndpoint });
  const nameserver = opts.nameserver ?? role.nameserver ?? (await systemNameserver(host));

  // 2. The role's phases, in order; the first failure stops the flow (later phases build on earlier ones).
  const phases = (opts.phases ?? (await loadPhases())).filter((p) => p.roles.includes(config.role));
  status.phases = phases.map((p): PhaseStatus => ({ name: p.name, state: 'pending' }));
  const ctx = phaseContext(host, config, nameserver, signal, status, save, now);
  const ran: Phase[] = [];
  for (const [i, phase] of phases.entries()) {
    const record = status.phases[i] as PhaseStatus;
    Object.assign(status, { phase: phase.name, state: 'running' });
    Object.assign(record, { state: 'running', startedAt: now().toISOString() });
    await save();
    host.log('phase-start', { phase: phase.name });
    let skipped: string | undefined;
    try {
      if (signal.aborted) throw new Interrupted();
      skipped = await phase.skipReason?.(ctx);
      if (!skipped) await phase.run(ctx);
    } catch (err) {
      const interrupted = signal.aborted;
      Object.assign(record, { state: interrupted ? 'interrupted' : 'failed', endedAt: now().toISOString() });
      status.state = interrupted ? 'interrupted' : 'failed';
      if (!interrupted) {
        record.error = describeError(err);
        status.errors = [`${phase.name}: ${record.error}`];
      }
      await save();
      host.log(interrupted ? 'interrupted' : 'phase-failed', { phase: phase.name, error: record.error });
      return interrupted ? EXIT_INTERRUPTED : 1;
    }
    endWait(status, now());
    if (skipped) {
      Object.assign(record, { state: 'skipped', reason: skipped, endedAt: now().toISOString() });
      status.warnings.push(`${phase.name} skipped: ${skipped}`);
    } else {
      Object.assign(record, { state: 'done', endedAt: now().toISOString() });
      ran.push(phase);
    }
    await save();
    host.log(skipped ? 'phase-skipped' : 'phase-done', { phase: phase.name, reason: skipped });
  }
  status.state = 'ready';
  await save();
  host.log('ready', { role: config.role, cluster: config.cluster });
  if (opts.once) return 0;

  // 3. Keep things right: each phase's reconcile() says when it wants its next pass.
  await reconcileLoop(ran, ctx, host);
  host.log('agent-stop', { reason: 'signal' });
  return 0;
}

function phaseContext(
  host: Host,
  config: RoleConfig,
  nameserver: Nameserver,
  signal: AbortSignal,
  status: Status,
  save: () => Promise<void>,
  now: () => Date,
): PhaseContext {
  return {
    host,
    config,
    nameserver,
    signal,
    async report({ waitingOn, facts, warning }) {
      if (facts) Object.assign(status, facts);
      if (warning && !status.warnings.includes(warning)) status.warnings.push(warning);
      if (waitingOn) {
        // "since" is when waiting began, not when its reason last changed (DNS → HTTP is progress).
        if (!status.waitingOn) status.waitingSince = now().toISOString();
        Object.assign(status, { waitingOn, state: 'waiting' });
      } else if (waitingOn === null) {
        endWait(status, now());
        if (status.state === 'waiting') status.state = 'running';
      }
      await save();
    },
  };
}

/** Who answers for the cluster's names when neither --nameserver nor NAMESERVER says: resolv.conf, else glibc's default. */
async function systemNameserver(host: Host): Promise<Nameserver> {
  return nameserverFromResolvConf((await host.readFile('/etc/resolv.conf')) ?? '') ?? { host: '127.0.0.1', port: 53 };
}

async function reconcileLoop(phases: readonly Phase[], ctx: PhaseContext, host: Host): Promise<void> {
  const due = new Map(phases.filter((p) => p.reconcile).map((p) => [p, monotonicMs()]));
  if (!due.size) {
    // Nothing to reconcile: stay up (the service is the node's agent) until told to stop.
    await sleep(2 ** 31 - 1, ctx.signal).catch(() => undefined);
    return;
  }
  while (!ctx.signal.aborted) {
    const next = Math.min(...due.values());
    try {
      await sleep(Math.max(0, next - monotonicMs()), ctx.signal);
    } catch {
      return;
    }
    for (const [phase, at] of due) {
      if (at > monotonicMs() || ctx.signal.aborted) continue;
      let wait = 60_000;
      try {
        wait = await (phase.reconcile as NonNullable<Phase['reconcile']>)(ctx);
      } catch (err) {
        if (ctx.signal.aborted) return;
        host.log('reconcile-failed', { phase: phase.name, error: describeError(err) });
      }
      due.set(phase, monotonicMs() + wait);
    }
  }
}
