// Where a node's boot went, from what the node reports once it is ready: its `agent status --json`
// (phases with start, end and time spent waiting) and `systemd-analyze`. Pure: `cluster up` prints it,
// `npm run bench` records it.

/** Seconds, one decimal's worth of precision is all a TCG boot deserves. */
export interface BootTiming {
  /** Power-on (QEMU started) to the agent first saying ready, as seen from the host. */
  powerOnToReady: number;
  /** Power-on to the agent's start: the floor, what the image and systemd cost before the agent runs. */
  beforeAgent: number;
  /** Agent start to ready, minus every wait: the agent's own share. */
  agentOwn: number;
  /** Waiting on other nodes (the masters' API, the minions' DNS record agreeing). */
  waitingOnOthers: number;
  /** Waiting for the role's units to come up (systemd's work, after the agent asked). */
  unitsStarting: number;
  /** `systemd-analyze`: kernel + userspace to the default target, when systemd says the boot finished. */
  systemd?: number;
  /** Each phase's duration. */
  phases: Record<string, number>;
}

interface PhaseDoc {
  name?: unknown;
  startedAt?: unknown;
  endedAt?: unknown;
  waitedMs?: unknown;
}

const seconds = (ms: number) => Math.round(ms / 100) / 10;

/** From a ready node's status document; undefined when it lacks what is needed (an older agent). */
export function bootTiming(status: Record<string, unknown> | undefined, poweredOnAt: number, readyAt: number, systemdAnalyze?: string): BootTiming | undefined {
  const phases = Array.isArray(status?.phases) ? (status.phases as PhaseDoc[]) : [];
  const started = Date.parse(String(status?.startedAt));
  const ended = Math.max(...phases.map((p) => Date.parse(String(p.endedAt))).filter((t) => !Number.isNaN(t)));
  if (Number.isNaN(started) || !Number.isFinite(ended)) return undefined;
  const waited = (p: PhaseDoc) => (typeof p.waitedMs === 'number' ? p.waitedMs : 0);
  const unitsWait = phases.filter((p) => p.name === 'units').reduce((sum, p) => sum + waited(p), 0);
  const othersWait = phases.filter((p) => p.name !== 'units').reduce((sum, p) => sum + waited(p), 0);
  const agentToReady = ended - started;
  const systemd = systemdAnalyze === undefined ? undefined : systemdTotal(systemdAnalyze);
  return {
    powerOnToReady: seconds(readyAt - poweredOnAt),
    // Host clock for the whole, guest clock for the agent's part: each difference stays on one clock.
    beforeAgent: seconds(readyAt - poweredOnAt - agentToReady),
    agentOwn: seconds(agentToReady - unitsWait - othersWait),
    waitingOnOthers: seconds(othersWait),
    unitsStarting: seconds(unitsWait),
    ...(systemd === undefined ? {} : { systemd }),
    phases: Object.fromEntries(
      phases
        .filter((p) => typeof p.name === 'string' && p.startedAt && p.endedAt)
        .map((p) => [p.name as string, seconds(Date.parse(String(p.endedAt)) - Date.parse(String(p.startedAt)))]),
    ),
  };
}

/** `Startup finished in 2.1s (kernel) + 1min 3.5s (userspace) = 1min 5.6s` → 65.6; undefined while booting. */
export function systemdTotal(text: string): number | undefined {
  const total = /Startup finished in .*= ([^\n]+)/.exec(text)?.[1];
  if (!total) return undefined;
  let sum = 0;
  for (const [, n, unit] of total.matchAll(/([\d.]+)(min|ms|s|h)\b/g)) {
    sum += Number(n) * ({ h: 3600, min: 60, s: 1, ms: 0.001 } as Record<string, number>)[unit as string]!;
  }
  return Math.round(sum * 10) / 10;
}

const cell = (n: number | undefined) => (n === undefined ? '-' : `${n} s`);

/** The rows of the "where the time went" table, one per node that has a timing. */
export function timingRows(nodes: readonly { name: string; role: string; timing?: BootTiming }[]): string[][] {
  const rows = [['NODE', 'ROLE', 'POWER-ON TO READY', 'BEFORE AGENT (FLOOR)', 'AGENT OWN', 'WAITING ON OTHERS', 'UNITS STARTING', 'SYSTEMD-ANALYZE']];
  for (const n of nodes) {
    const t = n.timing;
    if (!t) continue;
    rows.push([n.name, n.role, cell(t.powerOnToReady), cell(t.beforeAgent), cell(t.agentOwn), cell(t.waitingOnOthers), cell(t.unitsStarting), cell(t.systemd)]);
  }
  return rows;
}
