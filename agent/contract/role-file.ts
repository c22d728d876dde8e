// The role file: the one input of a node (DESIGN.md "The role file"), written by user-data and read both by
// systemd units (EnvironmentFile=) and by the agent. One owner for what it may say: user-data rendering and
// the agent both use this module, and the renderer refuses exactly what the agent would refuse, with the
// agent's own message, before anything is written.
import { DEFAULT_DNS_DOMAIN, isDnsLabel, isDnsName, roleRecordName, type Role } from '../dns-names.js';
import { parseNameserver, type Nameserver } from '../dns.js';
import { checkNetworksApart, DEFAULT_CLUSTER_CIDR, parseClusterCidr } from '../cluster-cidr.js';
import { InputError, type Where } from '../errors.js';
import type { RoleConfig } from '../phase.js';
import { DEFAULT_SERVICE_CIDR, parseServiceCidr } from '../service-cidr.js';
import { parseMasterCount } from '../weave-consensus.js';
import { WEAVE_PASSWORD_FILE, WEAVE_PASSWORD_KEY } from '../weave-password.js';
import { envValueProblem, parseEnvironmentFile, renderEnvFile, type Assignment } from './env-file.js';

export const ROLE_FILES: Readonly<Record<Role, string>> = {
  master: '/etc/sysconfig/kubernetes-masters',
  minion: '/etc/sysconfig/kubernetes-minions',
};

/** Keys the agent or the units read; any other key is kept (units may use it) but warned about. */
export const KNOWN_KEYS: ReadonlySet<string> = new Set([
  'CLUSTER_NAME',
  'DNS_DOMAIN',
  'CLOUD_PROVIDER',
  'KUBELET_HOSTNAME',
  'API_ENDPOINT',
  'NAMESERVER',
  'SERVICE_CIDR',
  'CLUSTER_CIDR',
  'MASTER_COUNT',
]);

/**
 * The one CLOUD_PROVIDER value besides empty: the kubelet (--cloud-provider) refuses to start with any other
 * since the in-tree providers were removed (kubernetes/kubernetes pkg/kubelet/kubelet.go NewMainKubelet:
 * "cloud provider %q was specified, but built-in cloud providers are disabled"; kubernetes#130161, 1.33).
 */
const EXTERNAL_CLOUD_PROVIDER = 'external';

export interface RoleValidation {
  config?: RoleConfig;
  /** The nameserver the role file names (NAMESERVER), if any. */
  nameserver?: Nameserver;
  problems: InputError[];
  warnings: InputError[];
}

/** What the role file says, checked against DESIGN.md's table. Pure: no file access. */
export function validateRole(role: Role, file: string, text: string): RoleValidation {
  const { assignments, problems, unterminated } = parseEnvironmentFile(text, file);
  const warnings: InputError[] = [];
  const last = new Map<string, Assignment>();
  for (const a of assignments) {
    const earlier = last.get(a.key);
    if (earlier) warnings.push(new InputError(`${a.key} is set again (line ${earlier.line} is overridden, as systemd does)`, { file, line: a.line }));
    // Every unit that loads the role file (kubelet, kube-proxy) would have the secret in its environment,
    // and the file is world-readable: the password has its own 0600 file that only weave.service loads.
    if (a.key === WEAVE_PASSWORD_KEY)
      problems.push(new InputError(`${WEAVE_PASSWORD_KEY} does not belong in the role file (world-readable, loaded by kubelet and kube-proxy): put it in ${WEAVE_PASSWORD_FILE}, mode 0600, as the user-data renderer does`, { file, line: a.line }));
    else if (!KNOWN_KEYS.has(a.key)) warnings.push(new InputError(`unknown key ${a.key} (ignored by the agent)`, { file, line: a.line }));
    const problem = envValueProblem(a.key, a.value);
    if (problem) problems.push(new InputError(problem, { file, line: a.line }));
    last.set(a.key, a);
  }
  const at = (a: Assignment) => ({ file, line: a.line, value: a.value });
  // Optional keys set to '' mean "not set": user-data templates often leave them blank.
  const optional = (k: string) => {
    const a = last.get(k);
    return a && a.value !== '' ? a : undefined;
  };

  const clusterA = last.get('CLUSTER_NAME');
  let cluster: string | undefined;
  if (!clusterA) {
    if (unterminated !== 'CLUSTER_NAME') problems.push(new InputError('CLUSTER_NAME is required', { file }));
  }
  else if (clusterA.value === '') problems.push(new InputError('CLUSTER_NAME is empty', at(clusterA)));
  else if (clusterA.value.length > 63)
    problems.push(new InputError(`CLUSTER_NAME is ${clusterA.value.length} characters long; a DNS label has at most 63`, at(clusterA)));
  else if (!isDnsLabel(clusterA.value))
    problems.push(
      new InputError(
        `CLUSTER_NAME ${JSON.stringify(clusterA.value)} is not a DNS label (letters, digits and inner '-' only)`,
        at(clusterA),
      ),
    );
  else cluster = clusterA.value.toLowerCase();

  const domainA = optional('DNS_DOMAIN');
  let domain = DEFAULT_DNS_DOMAIN;
  if (domainA) {
    if (isDnsName(domainA.value)) domain = domainA.value.toLowerCase().replace(/\.$/, '');
    else problems.push(new InputError(`DNS_DOMAIN ${JSON.stringify(domainA.value)} is not a DNS name`, at(domainA)));
  }

  const endpointA = optional('API_ENDPOINT');
  let apiEndpoint = cluster ? `https://${roleRecordName('master', cluster, domain)}:6443` : '';
  if (endpointA) {
    const problem = checkEndpoint(endpointA.value);
    if (problem) problems.push(new InputError(`API_ENDPOINT ${JSON.stringify(endpointA.value)} ${problem}`, at(endpointA)));
    else apiEndpoint = endpointA.value.replace(/\/+$/, '');
  }

  const nsA = optional('NAMESERVER');
  let nameserver: Nameserver | undefined;
  if (nsA) {
    try {
      nameserver = parseNameserver(nsA.value, 'NAMESERVER');
    } catch (err) {
      problems.push(new InputError((err as Error).message, at(nsA)));
    }
  }

  problems.push(...checkNetworks(optional('SERVICE_CIDR'), optional('CLUSTER_CIDR'), file));

  const cloudA = optional('CLOUD_PROVIDER');
  if (cloudA && cloudA.value !== EXTERNAL_CLOUD_PROVIDER)
    problems.push(
      new InputError(
        `CLOUD_PROVIDER ${JSON.stringify(cloudA.value)} is not one the kubelet takes: Kubernetes 1.36 has no built-in cloud providers, so it is "${EXTERNAL_CLOUD_PROVIDER}" (a cloud-controller-manager initialises the nodes) or empty`,
        at(cloudA),
      ),
    );

  const countA = optional('MASTER_COUNT');
  if (countA) {
    try {
      parseMasterCount(countA.value, at(countA));
    } catch (err) {
      problems.push(err as InputError);
    }
  }

  if (problems.length || !cluster) return { problems, warnings };
  const cloudProvider = optional('CLOUD_PROVIDER')?.value;
  const kubeletHostname = optional('KUBELET_HOSTNAME')?.value;
  const config: RoleConfig = {
    role,
    file,
    cluster,
    domain,
    apiEndpoint,
    ...(cloudProvider ? { cloudProvider } : {}),
    ...(kubeletHostname ? { kubeletHostname } : {}),
    vars: Object.fromEntries([...last].map(([k, a]) => [k, a.value])),
  };
  return { config, ...(nameserver ? { nameserver } : {}), problems, warnings };
}

/** Each network well formed (the key named), and the pods' apart from the services' (either may be the default). */
function checkNetworks(serviceA: Assignment | undefined, clusterA: Assignment | undefined, file: string): InputError[] {
  const where = (a: Assignment | undefined) => (a ? { file, line: a.line } : { file });
  const problems: InputError[] = [];
  const parse = <T>(key: string, a: Assignment | undefined, fallback: string, parser: (text: string, at: Where) => T): T | undefined => {
    try {
      return parser(a?.value ?? fallback, where(a));
    } catch (err) {
      problems.push(new InputError(`${key} ${JSON.stringify(a?.value ?? fallback)}: ${(err as Error).message}`, { ...where(a), value: a?.value ?? fallback }));
      return undefined;
    }
  };
  const service = parse('SERVICE_CIDR', serviceA, DEFAULT_SERVICE_CIDR, parseServiceCidr);
  const cluster = parse('CLUSTER_CIDR', clusterA, DEFAULT_CLUSTER_CIDR, parseClusterCidr);
  if (service && cluster) {
    try {
      checkNetworksApart(cluster, service, where(clusterA ?? serviceA));
    } catch (err) {
      problems.push(err as InputError);
    }
  }
  return problems;
}

function checkEndpoint(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return 'is not a URL';
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'must be an http:// or https:// URL';
  if (url.username || url.password) return 'must not carry credentials';
  if (url.search || url.hash) return 'must not have a query or fragment';
  if (!url.hostname) return 'has no host';
  return undefined;
}

/** Keys the renderer sets from its own options; a `--set` for them would be a second, conflicting source. */
const OWN_KEYS = ['CLUSTER_NAME', 'DNS_DOMAIN'];

export interface RoleFileInput {
  role: Role;
  cluster: string;
  domain?: string | undefined;
  vars?: Record<string, string> | undefined;
}

/**
 * The file text for user-data. It is checked by the agent's own validation before it is returned, so a value
 * the agent would refuse is refused here, with the agent's message, and nothing is rendered.
 */
export function renderRoleFile({ role, cluster, domain, vars = {} }: RoleFileInput): string {
  if (role !== 'master' && role !== 'minion') {
    throw new InputError(`bad role ${JSON.stringify(role)}: expected master or minion`, { value: String(role) });
  }
  const own = Object.keys(vars).find((key) => OWN_KEYS.includes(key));
  if (own) throw new InputError(`${own} comes from --cluster/--domain, not from a variable`, { value: own });
  const entries: [string, string][] = [['CLUSTER_NAME', cluster]];
  if (domain !== undefined) entries.push(['DNS_DOMAIN', domain]);
  entries.push(...Object.entries(vars).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const text = renderEnvFile(`kubeseed ${role} role file, written by cloud-init user-data`, entries);
  const [problem] = validateRole(role, ROLE_FILES[role], text).problems;
  if (problem) throw new InputError(problem.message, { ...(problem.value !== undefined ? { value: problem.value } : {}) });
  return text;
}
