// The configuration files the Kubernetes units read, rendered from the role file and the secrets: pure
// text, so the pki phase can compare before it writes and tests can read them without a node.
// Kubeconfigs, the kubelet config and manifests are written as JSON: every consumer reads YAML, JSON is YAML,
// and a YAML library would be most of the agent bundle (its start-up time under TCG).
import { renderEnvFile } from './contract/env-file.js';
import type { BootstrapToken } from './bootstrap-token.js';
import { CNI_BIN_DIR, CNI_CONF_DIR } from './cni.js';
import type { ServiceCidr } from './service-cidr.js';

export const KUBE_DIR = '/etc/kubernetes';
export const PKI_DIR = `${KUBE_DIR}/pki`;
/** Manifests kube-bootstrap.service applies on a master. */
export const BOOTSTRAP_MANIFESTS_DIR = `${KUBE_DIR}/bootstrap`;
/** Read by every Kubernetes unit with EnvironmentFile= (SERVICE_CIDR, CLUSTER_DNS). */
export const CLUSTER_ENV = `${KUBE_DIR}/cluster.env`;
export const KUBELET_CONFIG = `${KUBE_DIR}/kubelet-config.yaml`;
export const SCHEDULER_CONFIG = `${KUBE_DIR}/kube-scheduler.yaml`;
export const KUBE_PROXY_CONFIG = `${KUBE_DIR}/kube-proxy.yaml`;
/**
 * The pod sandbox image, pinned by digest so every node runs the same bytes: the pause version kubeadm pins
 * for current releases (cmd/kubeadm/app/constants PauseVersion), at the digest registry.k8s.io serves for it.
 */
export const PAUSE_IMAGE = 'registry.k8s.io/pause:3.10.1@sha256:278fb9dbcca9518083ad1e11276933a2e96f23de604a3a08cc3c80002767d24c';
export const BOOTSTRAP_KUBECONFIG = `${KUBE_DIR}/bootstrap-kubelet.kubeconfig`;
export const CONTAINERD_CONFIG = '/etc/containerd/config.toml';
export const CONTAINERD_SOCKET = 'unix:///run/containerd/containerd.sock';
/** The master's own API server: for its kubelet, kube-proxy and admin kubeconfig, whatever DNS says about the others. */
export const LOCAL_API_SERVER = 'https://127.0.0.1:6443';

/** A kubeconfig, config file or manifest: indented JSON with a final newline. */
export function jsonDocument(doc: unknown): string {
  return `${JSON.stringify(doc, null, 2)}\n`;
}

export function clusterEnv(service: ServiceCidr): string {
  return renderEnvFile('Written by kubeseed-agent (phase pki); read by the Kubernetes units.', [
    ['SERVICE_CIDR', service.cidr],
    ['CLUSTER_DNS', service.dnsIp],
  ]);
}

/** What a master's kubelet registers with, as kubeadm taints control-plane nodes: no workload is scheduled there. */
export const CONTROL_PLANE_TAINT = { key: 'node-role.kubernetes.io/control-plane', effect: 'NoSchedule' } as const;

export interface Taint {
  key: string;
  value?: string;
  effect: 'NoSchedule' | 'PreferNoSchedule' | 'NoExecute';
}

/**
 * The kubelet's own settings: only the cluster CA's clients and webhook-authorised callers may use its API
 * (no anonymous access, no read-only port), and it renews its client certificate before it expires.
 * `registerWithTaints` (KubeletConfiguration v1beta1, k8s.io/kubelet/config/v1beta1 types.go; the config-file
 * form of --register-with-taints) applies at the node's first registration only.
 */
export function kubeletConfig(service: ServiceCidr, taints: readonly Taint[] = []): string {
  return jsonDocument({
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    authentication: {
      anonymous: { enabled: false },
      webhook: { enabled: true },
      x509: { clientCAFile: `${PKI_DIR}/ca.crt` },
    },
    authorization: { mode: 'Webhook' },
    readOnlyPort: 0,
    rotateCertificates: true,
    cgroupDriver: 'systemd',
    containerRuntimeEndpoint: CONTAINERD_SOCKET,
    clusterDomain: 'cluster.local',
    clusterDNS: [service.dnsIp],
    ...(taints.length ? { registerWithTaints: taints } : {}),
  });
}

/**
 * The scheduler from its configuration file: every setting its deprecated flags (--kubeconfig, --profiling,
 * --contention-profiling, --kube-api-*) carried lives here; its kubeconfig reaches the API through the masters' name,
 * and leader election keeps one scheduler of the masters' active.
 */
export function schedulerConfig(kubeconfig: string): string {
  return jsonDocument({
    apiVersion: 'kubescheduler.config.k8s.io/v1',
    kind: 'KubeSchedulerConfiguration',
    clientConnection: { kubeconfig },
    enableProfiling: false,
    enableContentionProfiling: false,
    leaderElection: { leaderElect: true },
  });
}

/**
 * kube-proxy from its configuration file (upstream deprecates configuring it by flags): iptables mode (ipvs is
 * deprecated), metrics on loopback only, the role file's KUBELET_HOSTNAME as its node name when set.
 */
export function kubeProxyConfig(kubeconfig: string, hostnameOverride: string | undefined): string {
  return jsonDocument({
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    kind: 'KubeProxyConfiguration',
    clientConnection: { kubeconfig },
    mode: 'iptables',
    bindAddress: '0.0.0.0',
    metricsBindAddress: '127.0.0.1:10249',
    ...(hostnameOverride ? { hostnameOverride } : {}),
  });
}

/**
 * containerd's CRI settings: runc under the systemd cgroup driver (the kubelet's), the CNI directories the
 * overlay's cni phase fills, and the sandbox image pinned by digest. One file for both majors: config version 2
 * is what containerd 1.7 (Debian 13's, in the test image) reads, and containerd 2.x migrates it on start
 * (sandbox_image becomes the images plugin's pinned sandbox image), so no build-time choice is needed.
 */
export function containerdConfig(): string {
  return [
    '# Written by kubeseed-agent (phase pki).',
    'version = 2',
    '',
    '[plugins."io.containerd.grpc.v1.cri"]',
    `  sandbox_image = "${PAUSE_IMAGE}"`,
    '',
    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
    '  runtime_type = "io.containerd.runc.v2"',
    '',
    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
    '  SystemdCgroup = true',
    '',
    '[plugins."io.containerd.grpc.v1.cri".cni]',
    `  bin_dir = "${CNI_BIN_DIR}"`,
    `  conf_dir = "${CNI_CONF_DIR}"`,
    '',
  ].join('\n');
}

/** The Secret that makes the API server accept the bootstrap token until `expires` (then tokencleaner deletes it). */
export function bootstrapTokenSecret(token: BootstrapToken, expires: Date): string {
  return jsonDocument({
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: `bootstrap-token-${token.id}`, namespace: 'kube-system' },
    type: 'bootstrap.kubernetes.io/token',
    stringData: {
      description: 'kubeseed: kubelet TLS bootstrap',
      'token-id': token.id,
      'token-secret': token.secret,
      expiration: expires.toISOString().replace(/\.\d{3}Z$/, 'Z'),
      'usage-bootstrap-authentication': 'true',
    },
  });
}

/**
 * Token holders (group system:bootstrappers) may create node CSRs, and have them approved; nodes may have
 * their renewals approved. csrapproving approves exactly what these bindings allow. One `List` document:
 * kubectl reads a file that starts with `{` as a JSON stream, where a YAML `---` separator is an error.
 */
export function nodeBootstrapRbac(): string {
  const binding = (name: string, role: string, group: string) => ({
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: { name },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role },
    subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'Group', name: group }],
  });
  return jsonDocument({
    apiVersion: 'v1',
    kind: 'List',
    items: [
      binding('kubeseed:kubelet-bootstrap', 'system:node-bootstrapper', 'system:bootstrappers'),
      binding(
        'kubeseed:node-autoapprove-bootstrap',
        'system:certificates.k8s.io:certificatesigningrequests:nodeclient',
        'system:bootstrappers',
      ),
      binding(
        'kubeseed:node-autoapprove-certificate-rotation',
        'system:certificates.k8s.io:certificatesigningrequests:selfnodeclient',
        'system:nodes',
      ),
    ],
  });
}
