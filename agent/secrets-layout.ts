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
  { name: 'front-proxy-ca.key', roles: ['master'], private: true },
  { name: 'admin.kubeconfig', roles: ['master'], private: true },
  /** `<id>.<secret>`, the kubelet's TLS-bootstrap token. */
  { name: 'bootstrap-token', roles: ['master', 'minion'], private: true },
];

export function secretsForRole(role: Role): SecretFile[] {
  return SECRET_FILES.filter((f) => f.roles.includes(role));
}
