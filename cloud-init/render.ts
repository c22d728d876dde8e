// Role user-data: one `#cloud-config` whose write_files carry the role file, Weave's password file when one is
// set, and, when given a secrets directory, the role's share of the cluster secrets. The same text serves EC2 (launch) and bare-metal NoCloud.
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { Document } from 'yaml';
import { clusterOfCa } from '../agent/cluster-certs.js';
import { InputError } from '../agent/errors.js';
import { roleRecordName, type Role } from '../agent/dns-names.js';
import { SECRETS_DIR, secretsForRole } from '../agent/secrets-layout.js';
import { renderRoleFile, ROLE_FILES } from '../agent/contract/role-file.js';
import { renderPasswordFile, WEAVE_PASSWORD_FILE, WEAVE_PASSWORD_KEY } from '../agent/weave-password.js';
import { endpointNotNamed, parseCertificate, subjectAltNames } from '../agent/x509.js';

export interface UserDataOptions {
  role: Role;
  cluster: string;
  domain?: string;
  vars?: Record<string, string>;
  /** a directory laid out as `npm run secrets` writes it: one file per SECRET_FILES name */
  secretsDir?: string;
}

interface WriteFile {
  path: string;
  content: string;
  encoding?: 'b64';
  owner: string;
  permissions: string;
}

// Text that YAML and cloud-init carry verbatim (PEM, tokens, kubeconfigs) stays readable; anything else
// (binary, invalid UTF-8, control characters) travels base64 so its bytes arrive exactly.
function secretEntry(name: string, bytes: Buffer): WriteFile {
  const text = bytes.toString('utf8');
  const plain = Buffer.from(text, 'utf8').equals(bytes) && !/[\0-\x08\x0b-\x1f\x7f]/.test(text);
  return {
    path: `${SECRETS_DIR}/${name}`,
    ...(plain ? { content: text } : { content: bytes.toString('base64'), encoding: 'b64' as const }),
    owner: 'root:root',
    // Every file in SECRETS_DIR is 0600, certificates included: the agent copies them to where they
    // are used, and a uniform rule there is one less thing to get wrong.
    permissions: '0600',
  };
}

async function readSecrets(role: Role, cluster: string, dir: string): Promise<WriteFile[]> {
  const files = await Promise.all(
    secretsForRole(role).map(async ({ name }) => {
      const file = path.join(dir, name);
      const bytes = await readFile(file).catch((err: NodeJS.ErrnoException) => {
        throw new InputError(`cannot read secret ${name} for role ${role}: ${err.code ?? err.message}`, { file });
      });
      return { name, bytes };
    }),
  );
  // Another cluster's CA would leave the node unable to trust its masters, and hand it keys it must not hold.
  const ca = files.find((f) => f.name === 'ca.crt');
  const owner = ca && clusterOfCa(ca.bytes);
  if (owner !== undefined && owner.toLowerCase() !== cluster.toLowerCase()) {
    throw new InputError(`the secrets are of cluster ${JSON.stringify(owner)}, not ${JSON.stringify(cluster)}`, { file: path.join(dir, 'ca.crt') });
  }
  return files.map(({ name, bytes }) => secretEntry(name, bytes));
}

/**
 * An API_ENDPOINT the serving certificate does not name would leave every minion refusing the masters:
 * refused here, where the secrets (and so the certificate) are known, rather than on the node.
 */
async function checkEndpoint(opts: UserDataOptions, dir: string): Promise<void> {
  const endpoint = opts.vars?.API_ENDPOINT ?? `https://${roleRecordName('master', opts.cluster, opts.domain)}:6443`;
  const file = path.join(dir, 'apiserver.crt');
  const pem = await readFile(file, 'utf8').catch(() => undefined);
  // Without the certificate (a minion-only copy of the secrets) the agent checks at start, against the
  // names every cluster certificate is issued with; a malformed URL is the agent's to refuse, by line.
  if (pem === undefined || !URL.canParse(endpoint)) return;
  const unnamed = endpointNotNamed(endpoint, subjectAltNames(parseCertificate(pem, file)), file);
  if (unnamed) throw new InputError(unnamed, { value: endpoint });
}

/**
 * WEAVE_PASSWORD given as a variable travels in its own file, 0600, that only weave.service loads: the role
 * file is world-readable and kubelet and kube-proxy load it (the agent refuses a role file that holds it).
 */
function weavePasswordFile(password: string | undefined): WriteFile[] {
  if (password === undefined || password === '') return [];
  return [{ path: WEAVE_PASSWORD_FILE, content: renderPasswordFile(password), owner: 'root:root', permissions: '0600' }];
}

export async function renderUserData(opts: UserDataOptions): Promise<string> {
  const { [WEAVE_PASSWORD_KEY]: password, ...vars } = opts.vars ?? {};
  const roleFile: WriteFile = {
    path: ROLE_FILES[opts.role],
    content: renderRoleFile({ ...opts, vars }),
    owner: 'root:root',
    permissions: '0644',
  };
  const secrets = opts.secretsDir === undefined ? [] : await readSecrets(opts.role, opts.cluster, opts.secretsDir);
  if (opts.secretsDir !== undefined) await checkEndpoint(opts, opts.secretsDir);
  // cloud-init reads YAML 1.1 (PyYAML): emitting with the 1.1 schema makes the library quote every
  // string 1.1 would read as something else (yes, on, 0600, 12:30).
  const doc = new Document({ write_files: [roleFile, ...weavePasswordFile(password), ...secrets] }, { version: '1.1' });
  return `#cloud-config\n${doc.toString({ lineWidth: 0 })}`;
}
