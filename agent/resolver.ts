// The node's own resolver, on bare metal. The kubelet and kube-proxy reach the API as
// masters.<cluster>.<domain> through the system resolver, but only the agent reads NAMESERVER: a metal node
// left on the site's DNS (or told of a server on a port other than 53, which resolv.conf cannot name) never
// finds its masters while the agent calls it ready. systemd-resolved can route one domain to one server,
// port included: a drop-in sends the cluster's domain to NAMESERVER, and every other name still goes to the
// servers DHCP or cloud-init gave the node.
import { zoneName } from './dns-names.js';
import { parseNameserver, type Nameserver } from './dns.js';
import { applyFilePlan, type FilePlan } from './file-plan.js';
import type { Phase, RoleConfig } from './phase.js';

export const RESOLVED_DROP_IN = '/etc/systemd/resolved.conf.d/kubeseed-cluster.conf';
/** Debian's systemd-resolved package; the image installs it (image/packages). */
export const RESOLVED_UNIT_FILE = '/usr/lib/systemd/system/systemd-resolved.service';

/** resolved.conf's DNS= form: `a.b.c.d:port`, `[v6]:port` (its man page: brackets when a port follows). */
function resolvedAddress(ns: Nameserver): string {
  return ns.host.includes(':') ? `[${ns.host}]:${ns.port}` : `${ns.host}:${ns.port}`;
}

/**
 * The drop-in for a role file that names NAMESERVER, or undefined when it names none (EC2: the VPC's
 * resolver already serves the Route53 zone). `~zone` is a routing-only domain: names under it go to this
 * server alone, and it is not added to the search list.
 */
export function resolvedDropIn(config: Pick<RoleConfig, 'cluster' | 'domain' | 'vars'>): string | undefined {
  const text = config.vars.NAMESERVER;
  if (text === undefined) return undefined;
  const ns = parseNameserver(text, 'NAMESERVER');
  const zone = zoneName(config.cluster, config.domain);
  return [
    '# Written by kubeseed-agent (phase resolver) from NAMESERVER in the role file:',
    `# names under ${zone} are asked of the cluster's DNS server, every other name of the site's.`,
    '[Resolve]',
    `DNS=${resolvedAddress(ns)}`,
    `Domains=~${zone}`,
    '',
  ].join('\n');
}

export function decideResolver(config: Pick<RoleConfig, 'cluster' | 'domain' | 'vars'>): FilePlan | undefined {
  const content = resolvedDropIn(config);
  if (content === undefined) return undefined;
  return { dirs: [{ path: '/etc/systemd/resolved.conf.d', mode: 0o755 }], files: [{ path: RESOLVED_DROP_IN, content, mode: 0o644 }] };
}

export const resolverPhase: Phase = {
  name: 'resolver',
  roles: ['master', 'minion'],
  // A skip is a warning in agent status: only a NAMESERVER the system resolver cannot be told of deserves one.
  async skipReason(ctx) {
    if (ctx.config.vars.NAMESERVER === undefined) return undefined;
    if (!(await ctx.host.stat(RESOLVED_UNIT_FILE))) return `NAMESERVER is set but systemd-resolved is not installed (${RESOLVED_UNIT_FILE} missing): only the agent will use it`;
    return undefined;
  },
  async run(ctx) {
    const plan = decideResolver(ctx.config);
    const zone = zoneName(ctx.config.cluster, ctx.config.domain);
    // No NAMESERVER (EC2: the VPC's resolver serves the zone): the network's resolver is already the right one.
    if (!plan) return ctx.report({ facts: { resolver: { zone, nameserver: 'system' } } });
    const changed = await applyFilePlan(ctx.host, plan, 'resolver-changed');
    // Only a changed file costs a reload: a reboot or a second run finds it right and touches nothing.
    if (changed.includes(RESOLVED_DROP_IN) && ctx.host.live) {
      const r = await ctx.host.exec('systemctl', ['try-reload-or-restart', 'systemd-resolved.service'], { timeoutMs: 60_000 });
      if (r.code !== 0) throw new Error(`systemctl try-reload-or-restart systemd-resolved.service failed (exit ${r.code}): ${r.stderr.trim().split('\n')[0] ?? ''}`);
    }
    await ctx.report({ facts: { resolver: { zone, nameserver: ctx.config.vars.NAMESERVER, dropIn: RESOLVED_DROP_IN } } });
  },
};
