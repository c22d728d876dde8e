// @ts-check
// `node image/install-components.mjs --root DIR --manifest FILE [--components-dir DIR]`: provision's components
// step. Every component is fetched (or taken from --components-dir), verified against its pinned digest and
// unpacked into a work directory first; only when all of them are good is anything written into the root, so a
// bad digest or a missing member leaves the root as it was. Runs on Debian's node inside the machine being
// built: plain JavaScript, node's own modules, GNU tar and curl.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, copyFile, lstat, mkdir, mkdtemp, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { checkManifest } from './manifest.mjs';

/** @typedef {import('./manifest.mjs').Component} Component */
/** @typedef {{ from: string, to: string }} Staged  a verified file in the work directory and its path in the root */
/** @typedef {(algorithm: string, hex: string, what: 'manifest' | 'layer') => Promise<string>} BlobSource  the path of one blob */

/** A failure that is the input's fault: one line, no stack. */
class Failure extends Error {}

const MANIFEST_TYPES = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
];
const PLATFORM = { os: 'linux', architecture: 'amd64' };

/** @param {string} cmd @param {string[]} args @returns {Promise<{ code: number, stdout: string, stderr: string }>} */
function run(cmd, args) {
  return new Promise((resolve) =>
    execFile(cmd, args, { maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    ),
  );
}

/** @param {string} file @param {string} algorithm @returns {Promise<string>} */
function fileDigest(file, algorithm) {
  return new Promise((resolve, reject) => {
    const hash = createHash(algorithm);
    createReadStream(file)
      .on('error', reject)
      .on('data', (chunk) => hash.update(chunk))
      .on('end', () => resolve(hash.digest('hex')));
  });
}

/** @param {Component} c @param {string} file @param {string} algorithm @param {string} expected */
async function verify(c, file, algorithm, expected) {
  const actual = await fileDigest(file, algorithm);
  if (actual !== expected) throw new Failure(`${algorithm} mismatch for component ${c.name} (${file}): expected ${expected}, got ${actual}`);
}

/** @param {string} p */
const exists = (p) => stat(p).then(() => true, () => false);
/** Archive member names are compared without a leading "./" (the CNI plugins tarball has one). @param {string} m */
const normal = (m) => m.replace(/^(\.\/)+/, '');

/** The archive's member names, normalized → as stored. @param {string} archive @param {Component} c */
async function listArchive(archive, c) {
  const r = await run('tar', ['-tf', archive]);
  if (r.code !== 0) throw new Failure(`component ${c.name}: ${archive} is not a readable archive: ${r.stderr.trim().split('\n')[0]}`);
  return new Map(r.stdout.split('\n').filter(Boolean).map((m) => [normal(m), m]));
}

/**
 * Extracts the named members of one archive into `into` and returns where each landed; a member must be a
 * regular file (a symlink or device from an archive is never installed).
 * @param {string} archive @param {string[]} members raw names as stored @param {string} into @param {Component} c
 */
async function extract(archive, members, into, c) {
  await mkdir(into, { recursive: true });
  const r = await run('tar', ['-xf', archive, '-C', into, '--no-same-owner', '--no-same-permissions', '--', ...members]);
  if (r.code !== 0) throw new Failure(`component ${c.name}: cannot extract from ${archive}: ${r.stderr.trim().split('\n')[0]}`);
  for (const m of members) {
    const st = await lstat(path.join(into, m));
    if (!st.isFile()) throw new Failure(`component ${c.name}: member ${m} of ${archive} is not a regular file`);
  }
}

/** @param {Component} c @param {string} archive @param {string} work @returns {Promise<Staged[]>} */
async function stageTarball(c, archive, work) {
  const names = await listArchive(archive, c);
  const missing = c.installs.filter((i) => !names.has(normal(/** @type {string} */ (i.from))));
  if (missing.length) throw new Failure(`component ${c.name}: ${archive} has no member ${missing.map((i) => i.from).join(', ')}`);
  const raw = c.installs.map((i) => /** @type {string} */ (names.get(normal(/** @type {string} */ (i.from)))));
  await extract(archive, raw, work, c);
  return c.installs.map((i, n) => ({ from: path.join(work, /** @type {string} */ (raw[n])), to: i.to }));
}

/** "sha256:HEX" → [algorithm, hex], refusing anything else (a digest is a path in the blob store). @param {unknown} digest @param {Component} c */
function splitDigest(digest, c) {
  const m = typeof digest === 'string' ? /^(sha256|sha512):([0-9a-f]+)$/.exec(digest) : null;
  if (!m || m[2]?.length !== (m[1] === 'sha256' ? 64 : 128)) throw new Failure(`component ${c.name}: the image names a malformed digest ${JSON.stringify(digest)}`);
  return /** @type {[string, string]} */ ([m[1], m[2]]);
}

/**
 * The layer files of the pinned image, each verified, bottom first. `blob(algorithm, hex)` gives the path of a
 * blob (from an OCI layout, or downloaded); the pinned digest may name an index (the platform's manifest is
 * picked from it) or a manifest.
 * @param {Component} c @param {BlobSource} blob
 */
async function imageLayers(c, blob) {
  /** @param {string} algorithm @param {string} hex */
  const verified = async (algorithm, hex, /** @type {'manifest' | 'layer'} */ what) => {
    const file = await blob(algorithm, hex, what);
    await verify(c, file, algorithm, hex);
    return file;
  };
  const readJson = async (/** @type {string} */ algorithm, /** @type {string} */ hex) => JSON.parse(await readFile(await verified(algorithm, hex, 'manifest'), 'utf8'));
  let manifest = await readJson(c.algorithm, c.digest);
  if (Array.isArray(manifest.manifests)) {
    const entry = manifest.manifests.find((/** @type {any} */ m) => m.platform?.os === PLATFORM.os && m.platform?.architecture === PLATFORM.architecture);
    if (!entry) throw new Failure(`component ${c.name}: image ${c.image} has no ${PLATFORM.os}/${PLATFORM.architecture} manifest`);
    manifest = await readJson(...splitDigest(entry.digest, c));
  }
  if (!Array.isArray(manifest.layers) || manifest.layers.length === 0) throw new Failure(`component ${c.name}: image ${c.image} has no layers`);
  const layers = [];
  for (const layer of manifest.layers) layers.push(await verified(...splitDigest(layer.digest, c), 'layer'));
  return layers;
}

/**
 * Each member from the topmost layer that has it; a whiteout (".wh.NAME") above it means the image deleted it.
 * @param {Component} c @param {string[]} layers @param {string} work @returns {Promise<Staged[]>}
 */
async function stageImage(c, layers, work) {
  const listings = await Promise.all(layers.map((l) => listArchive(l, c)));
  /** @type {Map<number, string[]>} layer index → raw member names to extract from it */
  const wanted = new Map();
  /** @type {Staged[]} */
  const staged = [];
  const missing = [];
  for (const { from, to } of c.installs) {
    const member = normal(/** @type {string} */ (from));
    const whiteout = path.posix.join(path.posix.dirname(member), `.wh.${path.posix.basename(member)}`);
    let found = -1;
    for (let n = layers.length - 1; n >= 0 && found < 0; n--) {
      if (listings[n]?.has(whiteout)) break;
      if (listings[n]?.has(member)) found = n;
    }
    if (found < 0) {
      missing.push(member);
      continue;
    }
    const raw = /** @type {string} */ (listings[found]?.get(member));
    wanted.set(found, [...(wanted.get(found) ?? []), raw]);
    staged.push({ from: path.join(work, `layer-${found}`, raw), to });
  }
  if (missing.length) throw new Failure(`component ${c.name}: image ${c.image}@${c.algorithm}:${c.digest} has no member ${missing.join(', ')}`);
  for (const [n, members] of wanted) await extract(/** @type {string} */ (layers[n]), members, path.join(work, `layer-${n}`), c);
  return staged;
}

/** `Bearer realm="...",service="...",scope="..."` → the token URL. @param {string | null} header */
function tokenUrl(header) {
  if (!header || !/^Bearer /i.test(header)) return undefined;
  const params = Object.fromEntries([...header.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
  if (!params.realm) return undefined;
  const url = new URL(params.realm);
  for (const key of ['service', 'scope']) if (params[key]) url.searchParams.set(key, params[key]);
  return url;
}

/**
 * Blobs of an image straight from its registry (the distribution API, anonymous pull tokens), stored by digest
 * under `dir`; verification is imageLayers' job, as for a layout on disk.
 * @param {Component} c @param {string} dir
 */
function registryBlobs(c, dir) {
  const [host, ...rest] = c.image.split('/');
  const registry = host === 'docker.io' ? 'registry-1.docker.io' : host;
  const repository = rest.join('/');
  /** @type {string | undefined} */
  let token;
  /** @param {string} url */
  const get = async (url) => {
    const headers = { Accept: MANIFEST_TYPES.join(', '), ...(token ? { Authorization: `Bearer ${token}` } : {}) };
    let res = await fetch(url, { headers });
    const auth = res.status === 401 && !token ? tokenUrl(res.headers.get('www-authenticate')) : undefined;
    if (auth) {
      const t = await fetch(auth);
      if (!t.ok) throw new Failure(`component ${c.name}: ${auth.origin}: pull token refused (HTTP ${t.status})`);
      const body = /** @type {{ token?: string, access_token?: string }} */ (await t.json());
      token = body.token ?? body.access_token;
      res = await fetch(url, { headers: { ...headers, Authorization: `Bearer ${token}` } });
    }
    if (!res.ok) throw new Failure(`component ${c.name}: ${url}: HTTP ${res.status}`);
    return Buffer.from(await res.arrayBuffer());
  };
  /** @type {BlobSource} */
  return async (algorithm, hex, what) => {
    const file = path.join(dir, 'blobs', algorithm, hex);
    const bytes = await get(`https://${registry}/v2/${repository}/${what === 'manifest' ? 'manifests' : 'blobs'}/${algorithm}:${hex}`);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, bytes);
    return file;
  };
}

/** @param {Component} c @param {string | undefined} componentsDir @param {string} work */
async function fetchFile(c, componentsDir, work) {
  if (componentsDir) {
    const file = path.join(componentsDir, c.file);
    if (!(await exists(file))) throw new Failure(`component ${c.name}: ${file} not found in --components-dir`);
    return file;
  }
  const file = path.join(work, c.file);
  const r = await run('curl', ['-fsSL', '--retry', '3', '--proto', '=https', '-o', file, c.url]);
  if (r.code !== 0) throw new Failure(`component ${c.name}: download failed: ${c.url}: ${r.stderr.trim()}`);
  return file;
}

/** Fetches, verifies and unpacks one component into `work`; writes nothing else. @param {Component} c @param {string | undefined} componentsDir @param {string} work */
async function stageComponent(c, componentsDir, work) {
  await mkdir(work, { recursive: true });
  if (c.kind === 'oci') {
    /** @type {BlobSource} */
    let blob;
    if (componentsDir) {
      // An OCI image layout in one tar, its blobs under their original digests (the pinned one among them).
      const layout = path.join(work, 'layout');
      await mkdir(layout);
      const archive = await fetchFile(c, componentsDir, work);
      const r = await run('tar', ['-xf', archive, '-C', layout, '--no-same-owner', 'blobs']);
      if (r.code !== 0) throw new Failure(`component ${c.name}: ${archive} is not an OCI image layout archive: ${r.stderr.trim().split('\n')[0]}`);
      blob = async (algorithm, hex) => {
        const file = path.join(layout, 'blobs', algorithm, hex);
        if (!(await exists(file))) throw new Failure(`component ${c.name}: ${archive} has no blob ${algorithm}:${hex}`);
        return file;
      };
    } else blob = registryBlobs(c, path.join(work, 'registry'));
    return stageImage(c, await imageLayers(c, blob), path.join(work, 'members'));
  }
  const file = await fetchFile(c, componentsDir, work);
  await verify(c, file, c.algorithm, c.digest);
  if (c.kind === 'file') return c.installs.map((i) => ({ from: file, to: i.to }));
  return stageTarball(c, file, path.join(work, 'members'));
}

/** Copies a staged file into the root under a temporary name, then renames it: a reader never sees half a binary. @param {string} from @param {string} to */
async function place(from, to) {
  await mkdir(path.dirname(to), { recursive: true });
  const tmp = `${to}.kubeseed-new`;
  await copyFile(from, tmp);
  await chmod(tmp, 0o755);
  await rename(tmp, to);
}

/** @param {string} target @param {string} link */
async function placeLink(target, link) {
  await mkdir(path.dirname(link), { recursive: true });
  const tmp = `${link}.kubeseed-new`;
  await rm(tmp, { force: true });
  await symlink(target, tmp);
  await rename(tmp, link);
}

/** @param {{ root: string, manifest: string, componentsDir?: string }} opts */
export async function installComponents(opts) {
  let doc;
  try {
    doc = JSON.parse(await readFile(opts.manifest, 'utf8'));
  } catch (err) {
    throw new Failure(`${opts.manifest}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const { components, problems } = checkManifest(doc);
  if (problems.length) throw new Failure(`${opts.manifest}: ${problems.join('; ')}`);
  // On the root's own disk: Debian 13's /tmp is a RAM disk, too small for Kubernetes' server tarball on a small build machine.
  const scratch = path.join(opts.root, 'var', 'tmp');
  await mkdir(scratch, { recursive: true });
  const work = await mkdtemp(path.join(scratch, 'kubeseed-components-'));
  try {
    /** @type {Staged[]} */
    const staged = [];
    for (const c of components) staged.push(...(await stageComponent(c, opts.componentsDir, path.join(work, c.name))));
    for (const s of staged) await place(s.from, path.join(opts.root, s.to));
    for (const c of components) for (const l of c.links) await placeLink(l.target, path.join(opts.root, l.path));
    for (const c of components) console.log(`provision: component ${c.name} ${c.version}: ${c.algorithm} verified, ${[...c.installs.map((i) => i.to), ...c.links.map((l) => l.path)].join(' ')}`);
    return components.length;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

const USAGE = 'usage: node image/install-components.mjs --root DIR --manifest FILE [--components-dir DIR]';

/**
 * node's parseArgs errors in the words of the project's command-line convention (agent/command-line.ts, which
 * this plain-JS build tool cannot import): the flag as typed, never node's own phrasing or error code.
 * @param {unknown} err
 */
function usageMessage(err) {
  const message = err instanceof Error ? err.message : String(err);
  const code = /** @type {{ code?: string }} */ (err).code;
  const flag = /'(-[^ ']+)/.exec(message)?.[1] ?? '';
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return `unknown flag ${flag}`;
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') return `${flag} needs a value`;
  if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') return `unexpected argument ${JSON.stringify(/'([^']*)'/.exec(message)?.[1] ?? '')}`;
  return message;
}

async function main() {
  if (process.argv.slice(2).some((a) => a === '--help' || a === '-h')) {
    console.log(USAGE);
    return 0;
  }
  let values;
  try {
    ({ values } = parseArgs({ options: { root: { type: 'string' }, manifest: { type: 'string' }, 'components-dir': { type: 'string' } }, strict: true }));
    if (!values.root || !values.manifest) throw new Error('--root and --manifest are required');
  } catch (err) {
    console.error(`install-components: ${usageMessage(err)}`);
    console.error(USAGE);
    return 2;
  }
  try {
    const n = await installComponents({ root: values.root, manifest: values.manifest, ...(values['components-dir'] ? { componentsDir: values['components-dir'] } : {}) });
    console.log(`provision: components: ${n} verified and installed`);
    return 0;
  } catch (err) {
    const detail = err instanceof Failure ? err.message : `${err instanceof Error ? err.message : String(err)}`;
    console.error(`provision: ${detail}`);
    return 1;
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main().then((code) => (process.exitCode = code));
