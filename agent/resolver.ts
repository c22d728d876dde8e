// The node's own resolver, on bare metal. The kubelet and kube-proxy reach the API as
// masters.<cluster>.<domain> through the system resolver, but only the agent reads NAMESERVER: a metal node
// left on the site's DNS (or told of a server on a port other than 53, which resolv.conf cannot name) never
// finds its masters while the agent calls it ready. systemd-resolved can route one domain to one server,
// port included: a drop-in sends the cluster's domain to NAMESERVER, and every other name still goes to the
// servers DHCP or cloud-init gave the node.
import { zoneName } from './dns-names.js';
import { parseNameserver, type Nameserver } from './dns.js';
import { applyFilePlan, type FilePlan } from './file-plan.js';
import type { Host } from './host.js';
import type { Phase, RoleConfig } from './phase.js';
import { listValues, parseUnitFile } from './unit-file.js';

export const RESOLVED_DROP_IN = '/etc/systemd/resolved.conf.d/kubeseed-cluster.conf';
/** Debian's systemd-resolved package; the image installs it (image/packages). */
export const RESOLVED_UNIT_FILE = '/usr/lib/systemd/system/systemd-resolved.service';
/** resolved's processes: systemd 257 mounts only the unified (v2) cgroup hierarchy. */
export const RESOLVED_CGROUP_PROCS = '/sys/fs/cgroup/system.slice/systemd-resolved.service/cgroup.procs';

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

/**
 * Whether resolved reloads on SIGHUP: its unit says Type=notify-reload (systemd 253 and later), for which
 * `systemctl reload` does no more than send SIGHUP and wait for READY=1. An older resolved would die of it.
 */
export function reloadsOnSighup(unitText: string | undefined): boolean {
  if (unitText === undefined) return false;
  return listValues(parseUnitFile(unitText, RESOLVED_UNIT_FILE).unit, 'Service', 'Type').at(-1)?.value === 'notify-reload';
}

/**
 * Makes a running resolved read the new drop-in, and leaves a stopped one alone (it reads it when it starts).
 * SIGHUP straight to its processes where it reloads on that: a `systemctl` start cost 1.3-3 s of a node's boot
 * under TCG, and nothing the agent does next needs the reload to have finished (the kubelet, the first user of
 * the system resolver, starts in the units phase).
 */
async function reloadResolved(host: Host): Promise<void> {
  if (reloadsOnSighup(await host.readFile(RESOLVED_UNIT_FILE))) {
    const pids = ((await host.readFile(RESOLVED_CGROUP_PROCS)) ?? '').split('\n').filter(Boolean).map(Number);
    const signalled = pids.filter((pid) => host.kill(pid, 'SIGHUP'));
    if (signalled.length) host.log('resolved-reloaded', { pid: signalled.join(','), signal: 'SIGHUP' });
    else host.log('resolved-not-running', { reason: 'it reads the drop-in when it starts' });
    return;
  }
  const r = await host.exec('systemctl', ['try-reload-or-restart', 'systemd-resolved.service'], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`systemctl try-reload-or-restart systemd-resolved.service failed (exit ${r.code}): ${r.stderr.trim().split('\n')[0] ?? ''}`);
  host.log('resolved-reloaded', { by: 'systemctl try-reload-or-restart' });
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
    if (changed.includes(RESOLVED_DROP_IN) && ctx.host.live) await reloadResolved(ctx.host);
    await ctx.report({ facts: { resolver: { zone, nameserver: ctx.config.vars.NAMESERVER, dropIn: RESOLVED_DROP_IN } } });
  },
};
