// CNI on every node: the directories the container runtime looks in, Weave's network config, and an
// environment file through which the kubelet unit learns those directories. The plan is pure data;
// applying it through the Host is idempotent (a second run finds everything right and changes nothing).
import { renderEnvFile } from './contract/env-file.js';
import { applyFilePlan, type FilePlan } from './file-plan.js';
import type { Host } from './host.js';
import type { Phase } from './phase.js';

export const CNI_BIN_DIR = '/opt/cni/bin';
export const CNI_CONF_DIR = '/etc/cni/net.d';
export const WEAVE_CONFLIST = `${CNI_CONF_DIR}/10-weave.conflist`;
/** Read by the kubelet unit with `EnvironmentFile=-` (the units engineer's side of this contract). */
export const KUBELET_CNI_ENV = '/etc/kubernetes/kubelet-cni.env';

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

export function kubeletCniEnv(): string {
  return renderEnvFile('Written by kubeseed-agent (phase cni): where CNI plugins and network configs live.', [
    ['CNI_BIN_DIR', CNI_BIN_DIR],
    ['CNI_CONF_DIR', CNI_CONF_DIR],
  ]);
}

export function decideCni(): CniPlan {
  return {
    dirs: [
      { path: CNI_BIN_DIR, mode: 0o755 },
      { path: CNI_CONF_DIR, mode: 0o755 },
    ],
    files: [
      { path: WEAVE_CONFLIST, content: weaveConflist(), mode: 0o644 },
      { path: KUBELET_CNI_ENV, content: kubeletCniEnv(), mode: 0o644 },
    ],
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
