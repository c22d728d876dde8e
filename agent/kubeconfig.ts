// Kubeconfig files: one cluster, one user, one context. Written by `npm run secrets` (admin) and by the
// agent (components, the kubelet's bootstrap), so both render through here.
import { InputError } from './errors.js';
import { jsonDocument } from './kube-files.js';

export interface KubeconfigSpec {
  cluster: string;
  server: string;
  /** PEM of the CA the server's certificate must chain to. */
  caPem: string;
  user: string;
  credentials: { certPem: string; keyPem: string } | { certFile: string; keyFile: string } | { token: string };
}

const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');

export function renderKubeconfig(spec: KubeconfigSpec): string {
  const c = spec.credentials;
  const user =
    'token' in c
      ? { token: c.token }
      : 'certPem' in c
        ? { 'client-certificate-data': b64(c.certPem), 'client-key-data': b64(c.keyPem) }
        : { 'client-certificate': c.certFile, 'client-key': c.keyFile };
  const context = `${spec.user}@${spec.cluster}`;
  return jsonDocument({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: spec.cluster, cluster: { server: spec.server, 'certificate-authority-data': b64(spec.caPem) } }],
    users: [{ name: spec.user, user }],
    contexts: [{ name: context, context: { cluster: spec.cluster, user: spec.user } }],
    'current-context': context,
  });
}

/** The same kubeconfig pointing at another server (the admin's, made for the masters' name, used on a master itself). */
export function withServer(text: string, server: string, file: string): string {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    // Kubeconfigs made before kubeseed wrote JSON are YAML: `npm run secrets` converts them in place.
    throw new InputError('not a kubeconfig in JSON (one written as YAML by an older `npm run secrets`: run it again to convert it)', { file });
  }
  const clusters = (doc as { clusters?: { cluster?: { server?: unknown } }[] } | null)?.clusters;
  if (!Array.isArray(clusters) || clusters.length === 0 || !clusters.every((c) => typeof c?.cluster?.server === 'string')) {
    throw new InputError('not a kubeconfig (no clusters with a server)', { file });
  }
  for (const c of clusters) c.cluster!.server = server;
  return jsonDocument(doc);
}
