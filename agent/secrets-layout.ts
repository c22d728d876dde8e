// Where the cluster secrets live, end to end: `npm run secrets` writes them as <name> in its --out DIR,
// the user-data renderer ships the role's subset to SECRETS_DIR/<name> (mode 0600), and the agent installs
// them under /etc/kubernetes. Kept in one table so the three can never disagree.
import type { Role } from './dns-names.js';

export const SECRETS_DIR = '/etc/kubeseed/secrets';

export interface SecretFile {
  name: string;
  roles: readonly Role[];
  /** true for private keys and tokens: 0600 everywhere, never logged. */
  private: boolean;
}

export const SECRET_FILES: readonly SecretFile[] = [
  { name: 'ca.crt', roles: ['master', 'minion'], private: false },
  { name: 'ca.key', roles: ['master'], private: true },
  { name: 'apiserver.crt', roles: ['master'], private: false },
  { name: 'apiserver.key', roles: ['master'], private: true },
  { name: 'sa.key', roles: ['master'], private: true },
  { name: 'sa.pub', roles: ['master'], private: false },
  { name: 'front-proxy-ca.crt', roles: ['master'], private: false },
  { name: 'front-proxy-ca.key', roles: [], private: true }, // signs only front-proxy-client.crt, at the operator's
  { name: 'admin.kubeconfig', roles: ['master'], private: true },
  /** `<id>.<secret>`, the kubelet's TLS-bootstrap token. */
  { name: 'bootstrap-token', roles: ['master', 'minion'], private: true },
  /** RFC 3339 time after which the API server no longer accepts the token. */
  { name: 'bootstrap-token.expires', roles: ['master', 'minion'], private: false },
  // etcd has its own CA so that no certificate from the cluster CA (a kubelet's, say) opens the store.
  // Masters hold its key to issue their own etcd member certificates, which carry addresses known only
  // on the node (phase etcd); it stays in SECRETS_DIR, where no component reads it.
  { name: 'etcd-ca.crt', roles: ['master'], private: false },
  { name: 'etcd-ca.key', roles: ['master'], private: true },
  { name: 'etcd-server.crt', roles: ['master'], private: false },
  { name: 'etcd-server.key', roles: ['master'], private: true },
  { name: 'apiserver-etcd-client.crt', roles: ['master'], private: false },
  { name: 'apiserver-etcd-client.key', roles: ['master'], private: true },
  { name: 'apiserver-kubelet-client.crt', roles: ['master'], private: false },
  { name: 'apiserver-kubelet-client.key', roles: ['master'], private: true },
  { name: 'front-proxy-client.crt', roles: ['master'], private: false },
  { name: 'front-proxy-client.key', roles: ['master'], private: true },
  { name: 'controller-manager.crt', roles: ['master'], private: false },
  { name: 'controller-manager.key', roles: ['master'], private: true },
  { name: 'scheduler.crt', roles: ['master'], private: false },
  { name: 'scheduler.key', roles: ['master'], private: true },
  // Masters run kube-proxy too: they are on the overlay, so the API server reaches services and pods.
  { name: 'kube-proxy.crt', roles: ['master', 'minion'], private: false },
  { name: 'kube-proxy.key', roles: ['master', 'minion'], private: true },
];

export function secretsForRole(role: Role): SecretFile[] {
  return SECRET_FILES.filter((f) => f.roles.includes(role));
}
