// `npm run secrets`: makes whatever of the cluster's secrets is missing in DIR and checks whatever is
// there, so a re-run keeps the CA (and every node's trust in it) and only fills gaps. Nothing is written
// until every existing file has been checked.
import { constants as fsc } from 'node:fs';
import { chmod, mkdir, open, readFile, rename } from 'node:fs/promises';
import * as path from 'node:path';
import {
  checkTokenCurrent,
  formatTokenExpiry,
  newBootstrapToken,
  parseBootstrapToken,
  parseTokenExpiry,
} from '../../agent/bootstrap-token.js';
import { InputError } from '../../agent/errors.js';
import { parse as parseYaml } from 'yaml';
import { jsonDocument } from '../../agent/kube-files.js';
import { renderKubeconfig, withServer } from '../../agent/kubeconfig.js';
import { SECRET_FILES } from '../../agent/secrets-layout.js';
import type { ServiceCidr } from '../../agent/service-cidr.js';
import {
  checkCoversIp,
  checkCoversName,
  checkCurrent,
  checkIssuedBy,
  checkKeyMatches,
  parseCertificate,
  parsePrivateKey,
} from '../../agent/x509.js';
import { newKeyPair, selfSignedCa, signedLeaf } from './openssl.js';
import { planSecrets, type LeafSpec } from '../../agent/cluster-certs.js';

export interface SecretsOptions {
  cluster: string;
  domain: string;
  service: ServiceCidr;
  out: string;
  caDays: number;
  certDays: number;
  tokenDays: number;
  now?: Date;
}

export interface SecretsResult {
  created: string[];
  kept: string[];
}

const isPrivate = (name: string) => {
  const entry = SECRET_FILES.find((f) => f.name === name);
  if (!entry) throw new Error(`${name} is not in SECRET_FILES`);
  return entry.private;
};

async function readIfThere(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Atomic, and private from the first byte (the temp file is created 0600 or 0644, never wider). */
async function writeSecret(dir: string, name: string, data: string): Promise<void> {
  const file = path.join(dir, name);
  const mode = isPrivate(name) ? 0o600 : 0o644;
  const tmp = `${file}.tmp-${process.pid}`;
  const handle = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, mode);
  try {
    await handle.writeFile(data);
    await handle.chmod(mode);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, file);
}

export async function makeSecrets(opts: SecretsOptions): Promise<SecretsResult> {
  const now = opts.now ?? new Date();
  const dir = path.resolve(opts.out);
  const plan = planSecrets(opts.cluster, opts.domain, opts.service);
  const at = (name: string) => path.join(dir, name);
  await mkdir(dir, { recursive: true, mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
    throw new InputError(err.code === 'EEXIST' || err.code === 'ENOTDIR' ? 'not a directory' : `cannot create the directory (${err.code})`, {
      file: dir,
    });
  });

  const existing = new Map<string, string>();
  for (const { name } of SECRET_FILES) {
    const text = await readIfThere(at(name));
    if (text !== undefined) existing.set(name, text);
  }
  // A pair is kept whole or made whole; half a pair could only be completed by guessing.
  const pairState = (crt: string, key: string) => {
    const has = [existing.has(crt), existing.has(key)];
    if (has[0] !== has[1]) {
      const [present, missing] = has[0] ? [crt, key] : [key, crt];
      throw new InputError(`${present} is there but ${missing} is not: restore ${missing}, or delete ${present} to issue both anew`, {
        file: at(present),
      });
    }
    return has[0];
  };

  // Check everything that is there before writing anything.
  for (const ca of plan.cas) {
    if (!pairState(`${ca.name}.crt`, `${ca.name}.key`)) continue;
    const cert = parseCertificate(existing.get(`${ca.name}.crt`)!, at(`${ca.name}.crt`));
    checkKeyMatches(cert, parsePrivateKey(existing.get(`${ca.name}.key`)!, at(`${ca.name}.key`)), at(`${ca.name}.key`));
    checkCurrent(cert, now, at(`${ca.name}.crt`));
  }
  const checkLeaf = (leaf: LeafSpec) => {
    if (!pairState(`${leaf.name}.crt`, `${leaf.name}.key`)) return;
    const crtFile = at(`${leaf.name}.crt`);
    const cert = parseCertificate(existing.get(`${leaf.name}.crt`)!, crtFile);
    checkKeyMatches(cert, parsePrivateKey(existing.get(`${leaf.name}.key`)!, at(`${leaf.name}.key`)), at(`${leaf.name}.key`));
    const caPem = existing.get(`${leaf.issuer}.crt`);
    if (caPem === undefined) {
      throw new InputError(`${leaf.issuer}.crt is missing, so nothing can vouch for this certificate: delete it to reissue`, { file: crtFile });
    }
    checkIssuedBy(cert, parseCertificate(caPem, at(`${leaf.issuer}.crt`)), crtFile, `${leaf.issuer}.crt`);
    checkCurrent(cert, now, crtFile);
    for (const name of leaf.dns ?? []) checkCoversName(cert, name, crtFile);
    for (const ip of leaf.ip ?? []) checkCoversIp(cert, ip, crtFile);
  };
  plan.leaves.forEach(checkLeaf);
  pairState('sa.pub', 'sa.key');
  // An admin.kubeconfig from before kubeseed wrote JSON is YAML, which the agent no longer reads: the same
  // document is rewritten as JSON below (it still counts as kept).
  const adminFromYaml = existing.has('admin.kubeconfig') ? yamlAsJson(existing.get('admin.kubeconfig')!) : undefined;
  if (adminFromYaml !== undefined) existing.set('admin.kubeconfig', adminFromYaml);
  if (existing.has('admin.kubeconfig')) withServer(existing.get('admin.kubeconfig')!, plan.server, at('admin.kubeconfig'));
  if (existing.has('bootstrap-token') !== existing.has('bootstrap-token.expires')) {
    throw new InputError('bootstrap-token and bootstrap-token.expires go together: delete the one left to issue a new token', {
      file: at(existing.has('bootstrap-token') ? 'bootstrap-token' : 'bootstrap-token.expires'),
    });
  }
  if (existing.has('bootstrap-token')) {
    parseBootstrapToken(existing.get('bootstrap-token')!, at('bootstrap-token'));
    const expires = parseTokenExpiry(existing.get('bootstrap-token.expires')!, at('bootstrap-token.expires'));
    checkTokenCurrent(expires, now, at('bootstrap-token.expires'));
  }

  if (adminFromYaml !== undefined) await writeSecret(dir, 'admin.kubeconfig', adminFromYaml);
  const created: string[] = [];
  const put = async (name: string, data: string) => {
    await writeSecret(dir, name, data);
    existing.set(name, data);
    created.push(name);
  };
  for (const ca of plan.cas) {
    if (existing.has(`${ca.name}.crt`)) continue;
    const { keyPem } = newKeyPair();
    await put(`${ca.name}.key`, keyPem);
    await put(`${ca.name}.crt`, await selfSignedCa(ca.subject, keyPem, opts.caDays));
  }
  const issue = async (leaf: LeafSpec) => {
    const { keyPem } = newKeyPair();
    const cert = await signedLeaf(leaf, keyPem, existing.get(`${leaf.issuer}.crt`)!, at(`${leaf.issuer}.key`), opts.certDays);
    return { keyPem, cert };
  };
  for (const leaf of plan.leaves) {
    if (existing.has(`${leaf.name}.crt`)) continue;
    const { keyPem, cert } = await issue(leaf);
    await put(`${leaf.name}.key`, keyPem);
    await put(`${leaf.name}.crt`, cert);
  }
  if (!existing.has('sa.key')) {
    const { keyPem, publicPem } = newKeyPair();
    await put('sa.key', keyPem);
    await put('sa.pub', publicPem);
  }
  if (!existing.has('admin.kubeconfig')) {
    const { keyPem, cert } = await issue(plan.admin);
    await put(
      'admin.kubeconfig',
      renderKubeconfig({
        cluster: opts.cluster,
        server: plan.server,
        caPem: existing.get('ca.crt')!,
        user: plan.admin.subject.cn,
        credentials: { certPem: cert, keyPem },
      }),
    );
  }
  if (!existing.has('bootstrap-token')) {
    await put('bootstrap-token', `${newBootstrapToken()}\n`);
    await put('bootstrap-token.expires', formatTokenExpiry(new Date(now.getTime() + opts.tokenDays * 86_400_000)));
  }
  // Files that were there keep their content; their modes are put right (a copied DIR may have lost them).
  for (const name of existing.keys()) {
    if (!created.includes(name)) await chmod(at(name), isPrivate(name) ? 0o600 : 0o644);
  }
  await chmod(dir, 0o700);
  return { created, kept: [...existing.keys()].filter((n) => !created.includes(n)) };
}

/** JSON text of a YAML document that is not JSON already; undefined when it is JSON or does not parse (withServer says why). */
function yamlAsJson(text: string): string | undefined {
  try {
    JSON.parse(text);
    return undefined;
  } catch {
    try {
      return jsonDocument(parseYaml(text));
    } catch {
      return undefined;
    }
  }
}
