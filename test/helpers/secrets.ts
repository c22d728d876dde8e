// Cluster secrets for tests, made by the real `npm run secrets` code (openssl included), and a temp root
// laid out as user-data leaves a node: the role file plus the role's secrets in SECRETS_DIR, 0600 root.
import { execFileSync } from 'node:child_process';
import { chmod, copyFile, mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Role } from '../../agent/dns-names.js';
import { SECRETS_DIR, secretsForRole } from '../../agent/secrets-layout.js';
import { DEFAULT_SERVICE_CIDR, parseServiceCidr } from '../../agent/service-cidr.js';
import { makeSecrets } from '../../scripts/secrets/generate.js';

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(path.join(tmpdir(), `kubeseed-${prefix}-`));
}

export async function makeTestSecrets(cluster = 'demo', opts: { domain?: string; now?: Date; tokenDays?: number } = {}): Promise<string> {
  const out = path.join(await tempDir('secrets'), 'out');
  await makeSecrets({
    cluster,
    domain: opts.domain ?? 'k8s',
    service: parseServiceCidr(DEFAULT_SERVICE_CIDR),
    out,
    caDays: 3650,
    certDays: 365,
    tokenDays: opts.tokenDays ?? 30,
    ...(opts.now ? { now: opts.now } : {}),
  });
  return out;
}

/** A node root with `roleFileText` as the role's file and the role's secrets from `secrets`. */
export async function nodeRoot(role: Role, secrets: string, roleFileText: string): Promise<string> {
  const root = await tempDir(`root-${role}`);
  await mkdir(path.join(root, 'etc/sysconfig'), { recursive: true });
  await writeFile(path.join(root, `etc/sysconfig/kubernetes-${role}s`), roleFileText);
  const dir = path.join(root, SECRETS_DIR);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  for (const { name } of secretsForRole(role)) {
    await copyFile(path.join(secrets, name), path.join(dir, name));
    await chmod(path.join(dir, name), 0o600);
  }
  return root;
}

/**
 * A self-signed apiserver.crt (and .key) naming `sans`, for tests whose other secrets only look like PEM:
 * the user-data renderer reads this one to check API_ENDPOINT against it.
 */
export function writeServingCert(dir: string, sans = 'DNS:masters.demo.k8s,IP:10.96.0.1,IP:127.0.0.1'): void {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=kube-apiserver', '-addext', `subjectAltName=${sans}`,
    '-keyout', path.join(dir, 'apiserver.key'), '-out', path.join(dir, 'apiserver.crt')], { stdio: 'pipe' });
}
