// The contract between the boot flow (agent/run.ts) and its phases. A phase decides what should be
// (pure code, tested alone) and applies it through ctx.host; a re-run changes nothing already right.
import type { Role } from './dns-names.js';
import type { Host } from './host.js';
import type { Nameserver } from './dns.js';

/** The validated role file: the one input of a node. */
export interface RoleConfig {
  role: Role;
  /** Node path of the role file, e.g. /etc/sysconfig/kubernetes-minions. */
  file: string;
  cluster: string;
  /** DNS_DOMAIN, default `k8s`. */
  domain: string;
  /** API_ENDPOINT, default `https://masters.<cluster>.<domain>:6443`. */
  apiEndpoint: string;
  cloudProvider?: string;
  kubeletHostname?: string;
  /** Every key of the file as written (e.g. WEAVE_PASSWORD); values are data, never code. */
  vars: Readonly<Record<string, string>>;
}

/** Extra facts a phase publishes in status.json (merged at top level). Never secrets. */
export type StatusFacts = Record<string, unknown>;

export interface PhaseContext {
  host: Host;
  config: RoleConfig;
  nameserver: Nameserver;
  /** Aborted on SIGTERM/SIGINT: waits must end promptly and leave the status "interrupted". */
  signal: AbortSignal;
  /** Say what the phase is waiting on (null when it stops waiting), publish facts, add a warning; written atomically. */
  report(update: { waitingOn?: string | null; facts?: StatusFacts; warning?: string }): Promise<void>;
}

export interface Phase {
  /** Kebab-case, as shown in `agent status` (e.g. `wait-for-masters`). */
  name: string;
  roles: readonly Role[];
  /**
   * Why this node has nothing for the phase to do (its image carries no overlay, user-data gave it no
   * secrets), or undefined to run it. A skipped phase is shown as such, with the reason, never as done.
   */
  skipReason?(ctx: PhaseContext): Promise<string | undefined>;
  run(ctx: PhaseContext): Promise<void>;
  /** For the reconcile loop (agent run without --once): one pass; returns ms until the next pass. */
  reconcile?(ctx: PhaseContext): Promise<number>;
}
