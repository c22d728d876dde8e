// CNI on every node: the directories the container runtime looks in and Weave's network config. Only
// containerd reads them (its CRI config names the same directories): the kubelet has had no CNI flags since
// dockershim went (1.24), so nothing is written for it. The plan is pure data; applying it through the Host is
// idempotent (a second run finds everything right and changes nothing).
import { applyFilePlan, type FilePlan } from './file-plan.js';
import type { Host } from './host.js';
import type { Phase } from './phase.js';

export const CNI_BIN_DIR = '/opt/cni/bin';
export const CNI_CONF_DIR = '/etc/cni/net.d';
export const WEAVE_CONFLIST = `${CNI_CONF_DIR}/10-weave.conflist`;

export type CniPlan = FilePlan;

/**
 * Weave's own chain, as its Kubernetes launcher writes it: the `weave-net` plugin (IPAM through the
 * router on 127.0.0.1:6784) and `portmap` for hostPort. `cniVersion` 0.3.0 is what weave-net speaks.
 */
export function weaveConflist(): string {
  const conflist = {
    cniVersion: '0.3.0',
    name: 'weave',
    plugins: [
      { name: 'weave', type: 'weave-net', hairpinMode: true },
      { type: 'portmap', capabilities: { portMappings: true }, snat: true },
    ],
  };
  return `${JSON.stringify(conflist, null, 2)}\n`;
}

export function decideCni(): CniPlan {
  return {
    dirs: [
      { path: CNI_BIN_DIR, mode: 0o755 },
      { path: CNI_CONF_DIR, mode: 0o755 },
    ],
    files: [{ path: WEAVE_CONFLIST, content: weaveConflist(), mode: 0o644 }],
  };
}

/** Applies the plan; returns the node paths it changed (empty when everything was already right). */
export function applyCni(host: Host, plan: CniPlan): Promise<string[]> {
  return applyFilePlan(host, plan, 'cni-changed');
}

export const cniPhase: Phase = {
  name: 'cni',
  // Masters run a kubelet too (tainted NoSchedule): they are on the overlay.
  roles: ['master', 'minion'],
  async run(ctx) {
    const plan = decideCni();
    await applyCni(ctx.host, plan);
    await ctx.report({ facts: { cni: { binDir: CNI_BIN_DIR, confDir: CNI_CONF_DIR, config: WEAVE_CONFLIST } } });
  },
};
