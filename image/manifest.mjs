// @ts-check
// The pinned-components manifest (image/components.json): what a well-formed entry is, and the entry with its
// `{version}` filled in. Pure. Plain JavaScript because image/provision runs it inside the machine being built
// (Debian's node, no node_modules, no TypeScript); `npm run components` imports the same checks.
//
// An entry is one thing an upstream publishes, verified the way that upstream publishes its checksum:
//   kind "file"     one file at `url`, installed as `dest`
//   kind "tarball"  an archive at `url`; only the named `members` are installed, each to its path
//   kind "oci"      a container image `image` pinned by the digest of its index or manifest; named `members`
//                   of its filesystem are installed, each to its path (every blob is verified on the way)
// `digest` is lowercase hex: 64 digits are a sha256, 128 a sha512 (Kubernetes publishes sha512 for its
// tarballs). `{version}` in `url`, `file` and member names is replaced by `version`, so a patch release is one
// edit of `version` and `digest`. `links` (optional) makes symlinks: {"/opt/cni/bin/weave-ipam": "weave-net"}.

const NAME = /^[a-z0-9][a-z0-9.-]*$/;
const HEX = /^[0-9a-f]+$/;
/** Digest length in hex digits → the algorithm it is. */
const ALGORITHMS = new Map([[64, 'sha256'], [128, 'sha512']]);
const KINDS = ['file', 'tarball', 'oci'];
/** An image reference without tag or digest: registry host, then the repository path. */
const IMAGE_REF = /^[a-z0-9.-]+(:[0-9]+)?\/[a-z0-9]+([._\/-][a-z0-9]+)*$/;

/**
 * @typedef {{ from: string | null, to: string }} Install  a member (null: the file itself) and where it goes
 * @typedef {{
 *   name: string, version: string, kind: 'file' | 'tarball' | 'oci', source: string,
 *   url: string, image: string, file: string,
 *   algorithm: string, digest: string,
 *   installs: Install[], links: { path: string, target: string }[],
 * }} Component
 */

/** @param {unknown} v @returns {v is Record<string, unknown>} */
const isObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);
/** @param {unknown} p @returns {p is string} */
const isAbsolute = (p) => typeof p === 'string' && p.startsWith('/') && !p.endsWith('/') && !p.split('/').includes('..') && !/[\s]/.test(p);
/** @param {unknown} v @returns {v is string} */
const isText = (v) => typeof v === 'string' && v.trim() !== '' && !/[\t\n\r]/.test(v);
/** @param {string} text @param {string} version */
const fill = (text, version) => text.split('{version}').join(version);
const quote = JSON.stringify;

/** The algorithm a digest is, or why it is none. @param {unknown} digest @returns {{ algorithm: string } | { problem: string }} */
export function digestKind(digest) {
  if (typeof digest !== 'string' || digest === '') return { problem: 'has no "digest": pin the sha256 or sha512 its upstream publishes' };
  if (!HEX.test(digest)) return { problem: `digest ${quote(digest)} is not lowercase hex` };
  const algorithm = ALGORITHMS.get(digest.length);
  if (!algorithm) return { problem: `digest ${quote(digest)} has ${digest.length} hex digits: a sha256 has 64, a sha512 128` };
  return { algorithm };
}

/** @param {string} url @param {string} version @param {string[]} problems @param {string} where */
function checkUrl(url, version, where, problems) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return void problems.push(`${where}: url ${quote(url)} is not a URL`);
  }
  if (parsed.protocol !== 'https:') problems.push(`${where}: url ${url} must use https`);
  if (parsed.search || parsed.hash || parsed.username) problems.push(`${where}: url ${url} must be a plain file URL (no query, fragment or user)`);
  if (!parsed.pathname.split('/').pop()) problems.push(`${where}: url ${url} must end in a file name`);
  if (version && !url.includes(version)) problems.push(`${where}: url ${url} does not name version ${version}`);
}

/**
 * Member name → absolute destination, `{version}` filled in. @param {unknown} members @param {string} version
 * @param {string} where @param {string[]} problems @returns {Install[]}
 */
function checkMembers(members, version, where, problems) {
  if (!isObject(members) || Object.keys(members).length === 0) {
    problems.push(`${where}: "members" must map each archive member to install to its absolute path`);
    return [];
  }
  /** @type {Install[]} */
  const installs = [];
  for (const [from, to] of Object.entries(members)) {
    const member = fill(from, version);
    if (!isText(member) || member.startsWith('/') || member.split('/').includes('..')) problems.push(`${where}: member ${quote(from)} must be a relative path inside the archive`);
    else if (!isAbsolute(to)) problems.push(`${where}: member ${member} must go to an absolute path without "..", got ${quote(to)}`);
    else installs.push({ from: member, to });
  }
  return installs;
}

/** Every problem of a parsed manifest, each naming the component, and its components as provision uses them. @param {unknown} doc */
export function checkManifest(doc) {
  /** @type {string[]} */
  const problems = [];
  /** @type {Component[]} */
  const components = [];
  if (!isObject(doc) || !Array.isArray(doc.components)) return { components, problems: ['"components" must be a list'] };
  if (doc.components.length === 0) problems.push('"components" is empty');
  const names = new Set();
  /** @type {Map<string, string>} */
  const owners = new Map();
  doc.components.forEach((/** @type {unknown} */ c, /** @type {number} */ i) => {
    if (!isObject(c)) return void problems.push(`components[${i}] must be an object`);
    const before = problems.length;
    const name = typeof c.name === 'string' && NAME.test(c.name) ? c.name : '';
    const where = name || `components[${i}]`;
    if (!name) problems.push(`${where}: name must be lowercase letters, digits, '.', '-'`);
    else if (names.has(name)) problems.push(`${where}: listed twice`);
    names.add(name);
    const version = isText(c.version) ? c.version : '';
    if (!version) problems.push(`${where}: version must be a non-empty string`);
    if (!isText(c.source)) problems.push(`${where}: "source" must say where the digest comes from`);
    const kind = /** @type {Component['kind']} */ (c.kind);
    if (!KINDS.includes(kind)) problems.push(`${where}: kind must be ${KINDS.map((k) => quote(k)).join(', ')}, got ${quote(c.kind)}`);
    const digest = digestKind(c.digest);
    if ('problem' in digest) problems.push(`${where}: ${digest.problem}`);
    let url = '';
    let image = '';
    if (kind === 'oci') {
      if (typeof c.image !== 'string' || !IMAGE_REF.test(c.image)) problems.push(`${where}: image must be REGISTRY/REPOSITORY without tag or digest (it is pinned by "digest"), got ${quote(c.image)}`);
      else image = c.image;
    } else if (typeof c.url !== 'string') problems.push(`${where}: url must be a string`);
    else checkUrl((url = fill(c.url, version)), version, where, problems);
    const fileName = c.file === undefined ? (kind === 'oci' ? `${name}-${version}.oci.tar` : url.split('/').pop() ?? '') : typeof c.file === 'string' ? fill(c.file, version) : '';
    if (!fileName || fileName.includes('/') || !isText(fileName)) problems.push(`${where}: file must be a plain file name`);
    /** @type {Install[]} */
    let installs = [];
    if (kind === 'file') {
      if (!isAbsolute(c.dest)) problems.push(`${where}: dest must be an absolute path without ".."`);
      else installs = [{ from: null, to: c.dest }];
      if (c.members !== undefined) problems.push(`${where}: a "file" has a "dest", not "members"`);
    } else if (kind === 'tarball' || kind === 'oci') {
      installs = checkMembers(c.members, version, where, problems);
      if (c.dest !== undefined) problems.push(`${where}: a ${kind} names a path per member in "members", not a "dest"`);
    }
    /** @type {Component['links']} */
    const links = [];
    if (c.links !== undefined) {
      if (!isObject(c.links)) problems.push(`${where}: "links" must map each link path to its target`);
      else
        for (const [link, target] of Object.entries(c.links)) {
          if (!isAbsolute(link) || !isText(target) || target.includes('/')) problems.push(`${where}: link ${quote(link)} must be an absolute path to a file name in the same directory, got ${quote(target)}`);
          else links.push({ path: link, target });
        }
    }
    for (const p of [...installs.map((x) => x.to), ...links.map((l) => l.path)]) {
      const owner = owners.get(p);
      if (owner) problems.push(`${where}: ${p} is installed by ${owner} too`);
      owners.set(p, where);
    }
    if (problems.length > before || !('algorithm' in digest)) return;
    components.push({ name, version, kind, source: /** @type {string} */ (c.source), url, image, file: fileName, algorithm: digest.algorithm, digest: /** @type {string} */ (c.digest), installs, links });
  });
  return { components: problems.length ? [] : components, problems };
}

/** The absolute paths the components put on the machine. @param {readonly Component[]} components */
export function providedPaths(components) {
  return new Set(components.flatMap((c) => [...c.installs.map((i) => i.to), ...c.links.map((l) => l.path)]));
}
