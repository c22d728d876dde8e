// A recorded status stream of three nodes, made by the agent's own code: runAgent (agent/run.ts) runs on
// a temporary root per node with the real phase list's names and roles, each phase replaced by a script
// of what it did (how long, what it waited on), under a scripted clock. Every status.json the agent writes
// is kept, as `agent status --json` would have printed it at that moment. So the documents have exactly the
// shape agent/status.ts gives them, and change with it.
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Interrupted } from '../../agent/abort.js';
import type { Role } from '../../agent/dns-names.js';
import { createHost } from '../../agent/host.js';
import type { Phase, PhaseContext } from '../../agent/phase.js';
import { loadPhases } from '../../agent/phases.js';
import { ROLE_FILES } from '../../agent/contract/role-file.js';
import { runAgent } from '../../agent/run.js';
import { exitCodeFor, STATUS_FILE, type Status } from '../../agent/status.js';
import type { UnitStatus } from '../../agent/units.js';
import type { ExecResult } from '../../scripts/check/ssh-session.js';

export interface StreamNode {
  name: string;
  role: Role;
  poweredOnAt: number;
}

export interface StreamEvent {
  /** ms since the epoch, on the recording's clock. */
  at: number;
  node: string;
  /** What `agent status --json` answered over SSH at that moment. */
  result: ExecResult;
}

export const STUCK_REASON = 'masters.local.k8s: no A record from 10.0.2.2:53';
const MASTER_WAIT = 'https://masters.local.k8s:6443/readyz (connection refused from 192.168.100.10)';

/**
 * What each phase does on a node: seconds of work, what it waits on (forever when `stuck`), and the units it
 * reports (as the units phase publishes them).
 */
type Script = Record<string, { seconds: number; waitingOn?: string; waitSeconds?: number; stuck?: boolean; units?: UnitStatus[] }>;

/** The master's units as its units phase reports them once they are up. */
export const MASTER_UNITS: UnitStatus[] = [
  { name: 'kube-apiserver.service', file: '/usr/lib/systemd/system/kube-apiserver.service', state: 'active' },
  { name: 'etcd.service', file: '/usr/lib/systemd/system/etcd.service', state: 'active' },
  { name: 'kubeseed-certs.service', file: '/usr/lib/systemd/system/kubeseed-certs.service', state: 'succeeded' },
];
interface Plan {
  name: string;
  role: Role;
  /** Seconds after the recording's start. */
  powerOn: number;
  agentStart: number;
  script: Script;
}

const PLANS: Plan[] = [
  { name: 'master-1', role: 'master', powerOn: 0, agentStart: 41, script: { pki: { seconds: 3 }, units: { seconds: 9, units: MASTER_UNITS } } },
  {
    name: 'minion-1',
    role: 'minion',
    powerOn: 1,
    agentStart: 44,
    script: { pki: { seconds: 2 }, 'wait-for-masters': { seconds: 0, waitingOn: MASTER_WAIT, waitSeconds: 10 }, cni: { seconds: 1 }, weave: { seconds: 4 }, units: { seconds: 7 } },
  },
  { name: 'minion-2', role: 'minion', powerOn: 2, agentStart: 47, script: { pki: { seconds: 2 }, 'wait-for-masters': { seconds: 1, waitingOn: STUCK_REASON, stuck: true } } },
];

async function recordNode(plan: Plan, start: number, events: StreamEvent[]): Promise<void> {
  const root = await mkdtemp(path.join(tmpdir(), `kubeseed-stream-${plan.name}-`));
  let clock = start + plan.agentStart * 1000;
  let recording = true;
  try {
    await mkdir(path.join(root, path.dirname(ROLE_FILES[plan.role])), { recursive: true });
    await writeFile(path.join(root, ROLE_FILES[plan.role]), 'CLUSTER_NAME=local\n');
    const host = createHost({ root, write: () => undefined });
    const recordingHost = {
      ...host,
      writeFile: async (nodePath: string, data: string, mode?: number) => {
        if (nodePath === STATUS_FILE && recording) {
          const doc = JSON.parse(data) as Status;
          events.push({ at: clock, node: plan.name, result: { code: exitCodeFor(doc.state), stdout: data, stderr: '' } });
        }
        return host.writeFile(nodePath, data, mode);
      },
    };
    const controller = new AbortController();
    const scripted = (phase: Phase): Phase => ({
      name: phase.name,
      roles: phase.roles,
      run: async (ctx: PhaseContext) => {
        const step = plan.script[phase.name] ?? { seconds: 0 };
        clock += step.seconds * 1000;
        if (step.units) await ctx.report({ facts: { units: step.units } });
        if (step.waitingOn) {
          await ctx.report({ waitingOn: step.waitingOn });
          if (step.stuck) {
            // The recording ends while this node still waits: what a watcher sees of a stuck node.
            recording = false;
            controller.abort();
            throw new Interrupted();
          }
          clock += (step.waitSeconds ?? 0) * 1000;
          await ctx.report({ waitingOn: null });
        }
      },
    });
    await runAgent({ host: recordingHost, once: true, signal: controller.signal, agentVersion: '0.1.0', phases: (await loadPhases()).map(scripted), now: () => new Date(clock) });
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/** The three nodes' stream, in time order, recorded as if the cluster was powered on at `start`. */
export async function recordStatusStream(start: number): Promise<{ nodes: StreamNode[]; events: StreamEvent[] }> {
  const events: StreamEvent[] = [];
  for (const plan of PLANS) await recordNode(plan, start, events);
  return {
    nodes: PLANS.map((p) => ({ name: p.name, role: p.role, poweredOnAt: start + p.powerOn * 1000 })),
    events: events.sort((a, b) => a.at - b.at),
  };
}
