// Phase `pki` (both roles): turns the secrets user-data left in SECRETS_DIR into what the Kubernetes units
// read. A master gets the cluster PKI in /etc/kubernetes/pki, component kubeconfigs for its own API server
// and the bootstrap manifests; a minion gets the CA, a bootstrap kubeconfig for TLS bootstrapping, kube-proxy's
// kubeconfig and the kubelet/containerd settings, and never a CA key. Everything is checked before anything is
// written: a bad secret changes nothing and names its file. Runs before wait-for-masters, which needs the CA.
import type { X509Certificate } from 'node:crypto';
import { checkTokenCurrent, parseBootstrapToken, parseTokenExpiry } from './bootstrap-token.js';
import { planSecrets } from './cluster-certs.js';
import { InputError } from './errors.js';
import { applyFilePlan, type FilePlan } from './file-plan.js';
import type { Host } from './host.js';
import {
  BOOTSTRAP_KUBECONFIG,
  BOOTSTRAP_MANIFESTS_DIR,
  CLUSTER_ENV,
  CONTAINERD_CONFIG,
  CONTROL_PLANE_TAINT,
  KUBE_DIR,
  KUBELET_CONFIG,
  KUBE_PROXY_CONFIG,
  LOCAL_API_SERVER,
  PKI_DIR,
  SCHEDULER_CONFIG,
  bootstrapTokenSecret,
  clusterEnv,
  containerdConfig,
  kubeProxyConfig,
  kubeletConfig,
  nodeBootstrapRbac,
  schedulerConfig,
} from './kube-files.js';
import { renderKubeconfig, withServer } from './kubeconfig.js';
import type { Phase, RoleConfig } from './phase.js';
import { SECRETS_DIR, SECRET_FILES, secretsForRole } from './secrets-layout.js';
import { DEFAULT_SERVICE_CIDR, parseServiceCidr } from './service-cidr.js';
import {
  checkCoversIp,
  checkCoversName,
  checkCurrent,
  checkIssuedBy,
  checkKeyMatches,
  checkPublicHalf,
  endpointNotNamed,
  parseCertificate,
  parsePrivateKey,
  subjectAltNames,
} from './x509.js';

export interface SecretInput {
  text: string;
  mode: number;
  uid: number;
}

export interface PkiPlan extends FilePlan {
  /** For status: when the bootstrap token stops working (not a secret). */
  tokenExpires: string;
  /** Set when the token has expired but the kubelet no longer needs it: said in status, not fatal. */
  tokenWarning?: string;
}

/**
 * Where the kubelet keeps the client certificate the cluster signed for it (--cert-dir in kubelet.service;
 * the kubelet's certificate store names the current pair `kubelet-client-current.pem`). Once it is there the
 * bootstrap token has done its job: the kubelet authenticates with the certificate and rotates it itself.
 */
export const KUBELET_CLIENT_CERT = '/var/lib/kubelet/pki/kubelet-client-current.pem';

/** Secrets that are not put under /etc/kubernetes/pki as they are. */
// etcd-ca.key is read only by the etcd phase, from SECRETS_DIR: no component needs it under pki/.
const NOT_PKI = new Set(['admin.kubeconfig', 'bootstrap-token', 'bootstrap-token.expires', 'etcd-ca.key']);

const where = (name: string) => ({ file: `${SECRETS_DIR}/${name}` });

function checkFileSafety(name: string, input: SecretInput): void {
  if (input.mode & 0o077) {
    throw new InputError(`mode ${input.mode.toString(8).padStart(4, '0')} is too open: secrets must be 0600 (chmod 600)`, where(name));
  }
  if (input.uid !== 0) throw new InputError(`owned by uid ${input.uid}, not root: secrets must belong to root`, where(name));
}

/** Pure: what /etc/kubernetes should hold, or the InputError that stops the phase before it writes. */
export function decidePki(
  config: RoleConfig,
  secrets: ReadonlyMap<string, SecretInput>,
  now: Date,
  /** The text of KUBELET_CLIENT_CERT, when the kubelet has one. */
  kubeletClient?: string,
): PkiPlan {
  const role = config.role;
  const wanted = secretsForRole(role);
  for (const [name, input] of secrets) {
    const entry = SECRET_FILES.find((f) => f.name === name);
    if (entry?.private && !entry.roles.includes(role)) {
      throw new InputError(`${name} must not be on a ${role}: delete it (it is not for this role's user-data)`, where(name));
    }
    checkFileSafety(name, input);
  }
  if (role === 'master' && secrets.has('ca.crt') && !secrets.has('ca.key')) {
    throw new InputError('a master needs the CA key next to the CA (the controller manager signs node certificates with it): ca.key is missing', where('ca.key'));
  }
  for (const { name } of wanted) {
    if (!secrets.has(name)) throw new InputError(`missing secret ${name} (user-data writes the role's secrets here)`, where(name));
  }
  const text = (name: string) => secrets.get(name)!.text;

  const service = parseServiceCidr(config.vars.SERVICE_CIDR ?? DEFAULT_SERVICE_CIDR, { file: config.file });
  const plan = planSecrets(config.cluster, config.domain, service);
  const cas = new Map(
    plan.cas
      .filter((ca) => secrets.has(`${ca.name}.crt`))
      .map((ca) => {
        const cert = parseCertificate(text(`${ca.name}.crt`), where(`${ca.name}.crt`).file);
        checkCurrent(cert, now, where(`${ca.name}.crt`).file);
        if (secrets.has(`${ca.name}.key`)) {
          checkKeyMatches(cert, parsePrivateKey(text(`${ca.name}.key`), where(`${ca.name}.key`).file), where(`${ca.name}.key`).file);
        }
        return [ca.name, cert] as const;
      }),
  );
  for (const leaf of plan.leaves) {
    if (!wanted.some((f) => f.name === `${leaf.name}.crt`)) continue;
    const file = where(`${leaf.name}.crt`).file;
    const cert = parseCertificate(text(`${leaf.name}.crt`), file);
    checkKeyMatches(cert, parsePrivateKey(text(`${leaf.name}.key`), where(`${leaf.name}.key`).file), where(`${leaf.name}.key`).file);
    const ca = cas.get(leaf.issuer);
    if (!ca) throw new InputError(`missing secret ${leaf.issuer}.crt, which signs ${leaf.name}.crt`, where(`${leaf.issuer}.crt`));
    checkIssuedBy(cert, ca, file, `${leaf.issuer}.crt`);
    checkCurrent(cert, now, file);
    for (const name of leaf.dns ?? []) checkCoversName(cert, name, file);
    for (const ip of leaf.ip ?? []) checkCoversIp(cert, ip, file);
  }
  // The endpoint minions and kube-proxy dial must be a name the API server's certificate carries: the
  // master's own certificate where it is here, else the names every cluster certificate is issued with.
  const apiserver = plan.leaves.find((l) => l.name === 'apiserver')!;
  const served = secrets.has('apiserver.crt')
    ? { names: subjectAltNames(parseCertificate(text('apiserver.crt'), where('apiserver.crt').file)), what: where('apiserver.crt').file }
    : { names: { dns: apiserver.dns ?? [], ip: apiserver.ip ?? [] }, what: "the API server's certificate" };
  const unnamed = endpointNotNamed(config.apiEndpoint, served.names, served.what);
  if (unnamed) throw new InputError(unnamed, { file: config.file, value: config.apiEndpoint });
  if (role === 'master') {
    checkPublicHalf(parsePrivateKey(text('sa.key'), where('sa.key').file), text('sa.pub'), where('sa.pub').file);
  }
  const token = parseBootstrapToken(text('bootstrap-token'), where('bootstrap-token').file);
  const expires = parseTokenExpiry(text('bootstrap-token.expires'), where('bootstrap-token.expires').file);
  let tokenWarning: string | undefined;
  try {
    checkTokenCurrent(expires, now, where('bootstrap-token.expires').file);
  } catch (err) {
    // A reboot after the token's 30 days: the kubelet that already has its certificate does not need it.
    if (!holdsClientCert(kubeletClient, cas.get('ca'), now)) throw err;
    tokenWarning = `bootstrap token expired at ${expires.toISOString()}; the kubelet keeps using its client certificate (${KUBELET_CLIENT_CERT}), new nodes need a new token`;
  }

  const caPem = text('ca.crt');
  const dirs = [
    { path: KUBE_DIR, mode: 0o755 },
    { path: PKI_DIR, mode: 0o755 },
  ];
  const files = wanted
    .filter((f) => !NOT_PKI.has(f.name))
    .map((f) => ({ path: `${PKI_DIR}/${f.name}`, content: text(f.name), mode: f.private ? 0o600 : 0o644 }));
  files.push({ path: CLUSTER_ENV, content: clusterEnv(service), mode: 0o644 });
  const certKubeconfig = (name: string, user: string, server: string) => ({
    path: `${KUBE_DIR}/${name}.kubeconfig`,
    content: renderKubeconfig({
      cluster: config.cluster,
      server,
      caPem,
      user,
      credentials: { certFile: `${PKI_DIR}/${name}.crt`, keyFile: `${PKI_DIR}/${name}.key` },
    }),
    mode: 0o600,
  });

  if (role === 'master') {
    dirs.push({ path: BOOTSTRAP_MANIFESTS_DIR, mode: 0o700 });
    files.push(
      // Through the masters' name (every API server's certificate carries it), so they keep working while
      // this master's own API server is down; leader election (on in their unit and config) keeps one active.
      certKubeconfig('controller-manager', 'system:kube-controller-manager', config.apiEndpoint),
      certKubeconfig('scheduler', 'system:kube-scheduler', config.apiEndpoint),
      { path: SCHEDULER_CONFIG, content: schedulerConfig(`${KUBE_DIR}/scheduler.kubeconfig`), mode: 0o644 },
      {
        path: `${KUBE_DIR}/admin.kubeconfig`,
        content: withServer(text('admin.kubeconfig'), LOCAL_API_SERVER, where('admin.kubeconfig').file),
        mode: 0o600,
      },
      { path: `${BOOTSTRAP_MANIFESTS_DIR}/bootstrap-token.yaml`, content: bootstrapTokenSecret(token, expires), mode: 0o600 },
      { path: `${BOOTSTRAP_MANIFESTS_DIR}/node-bootstrap-rbac.yaml`, content: nodeBootstrapRbac(), mode: 0o644 },
    );
  }
  // Every node runs a kubelet, kube-proxy and containerd: masters too, so the API server reaches pod addresses
  // over the overlay (webhooks, aggregated APIs); their kubelet registers tainted NoSchedule, so no workload
  // lands there. A master's node components talk to its own API server, a minion's to the endpoint.
  const server = role === 'master' ? LOCAL_API_SERVER : config.apiEndpoint;
  files.push(
    {
      path: BOOTSTRAP_KUBECONFIG,
      content: renderKubeconfig({
        cluster: config.cluster,
        server,
        caPem,
        user: 'kubelet-bootstrap',
        credentials: { token: `${token.id}.${token.secret}` },
      }),
      mode: 0o600,
    },
    certKubeconfig('kube-proxy', 'system:kube-proxy', server),
    { path: KUBE_PROXY_CONFIG, content: kubeProxyConfig(`${KUBE_DIR}/kube-proxy.kubeconfig`, config.kubeletHostname), mode: 0o644 },
    { path: KUBELET_CONFIG, content: kubeletConfig(service, role === 'master' ? [CONTROL_PLANE_TAINT] : []), mode: 0o644 },
    { path: CONTAINERD_CONFIG, content: containerdConfig(), mode: 0o644 },
  );
  return { dirs, files, tokenExpires: expires.toISOString(), ...(tokenWarning && { tokenWarning }) };
}

/** Whether the kubelet's stored pair is a current certificate from this cluster's CA (it then needs no token). */
function holdsClientCert(pem: string | undefined, ca: X509Certificate | undefined, now: Date): boolean {
  const block = pem && /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/.exec(pem)?.[0];
  if (!block || !ca) return false;
  try {
    const cert = parseCertificate(block, KUBELET_CLIENT_CERT);
    checkIssuedBy(cert, ca, KUBELET_CLIENT_CERT, 'ca.crt');
    checkCurrent(cert, now, KUBELET_CLIENT_CERT);
    return true;
  } catch {
    return false;
  }
}

/** Every SECRET_FILES name present in SECRETS_DIR, with what the safety checks need. */
export async function readSecrets(host: Host): Promise<Map<string, SecretInput>> {
  const present = new Set(await host.readdir(SECRETS_DIR));
  const secrets = new Map<string, SecretInput>();
  for (const { name } of SECRET_FILES) {
    if (!present.has(name)) continue;
    const path = `${SECRETS_DIR}/${name}`;
    const [info, text] = await Promise.all([host.stat(path), host.readFile(path)]);
    if (!info?.isFile || text === undefined) throw new InputError('not a regular file', { file: path });
    secrets.set(name, { text, mode: info.mode, uid: info.uid });
  }
  return secrets;
}

/** Applies the plan; returns the node paths it changed (none on a re-run). Logs paths, never contents. */
export function applyPki(host: Host, plan: PkiPlan): Promise<string[]> {
  return applyFilePlan(host, plan, 'pki-changed');
}

export const pkiPhase: Phase = {
  name: 'pki',
  roles: ['master', 'minion'],
  // Some secrets but not all is a broken hand-over and fails below, naming the missing file; none at
  // all is a node launched without --secrets, which gets no TLS bootstrap files rather than a failure.
  async skipReason(ctx) {
    const present = new Set(await ctx.host.readdir(SECRETS_DIR));
    if (secretsForRole(ctx.config.role).some((f) => present.has(f.name))) return undefined;
    return `no cluster secrets in ${SECRETS_DIR} (render user-data with --secrets DIR to ship them)`;
  },
  async run(ctx) {
    const plan = decidePki(ctx.config, await readSecrets(ctx.host), new Date(), await ctx.host.readFile(KUBELET_CLIENT_CERT));
    const changed = await applyPki(ctx.host, plan);
    if (plan.tokenWarning) ctx.host.log('bootstrap-token-expired', { kubeletCert: KUBELET_CLIENT_CERT, expired: plan.tokenExpires });
    await ctx.report({
      facts: {
        pki: {
          bootstrapTokenExpires: plan.tokenExpires,
          changed: changed.length,
        },
      },
      ...(plan.tokenWarning && { warning: plan.tokenWarning }),
    });
  },
};
