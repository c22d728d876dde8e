// `npm run components [-- --manifest FILE] [--strict]`: what the image pins (name, version, sha256, URL), and
// whether the manifest is well formed: https URLs that name their version, sha256 as 64 hex digits, install
// targets, and a component for every program the units run from /usr/local or /opt. Exit 1 on any problem.
// A component without a sha256 is listed as UNPINNED (provision refuses it); --strict makes that a problem too.
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { unitBinaries } from '../scripts/unit-binaries.js';

export const MANIFEST = fileURLToPath(new URL('./components.json', import.meta.url));

export interface Component {
  name: string;
  version: string;
  url: string;
  sha256: string | null;
  file?: string;
  source?: string;
  install: { kind: 'file' | 'tar'; dest: string; strip?: number; members?: string[]; provides?: string[] };
}

export interface ManifestCheck {
  components: Component[];
  problems: string[];
  unpinned: string[];
}

const NAME = /^[a-z0-9][a-z0-9.-]*$/;
const SHA256 = /^[0-9a-f]{64}$/;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isAbsolute = (p: unknown): p is string => typeof p === 'string' && p.startsWith('/') && !p.split('/').includes('..');

function checkUrl(url: unknown, version: string, where: string, problems: string[]): void {
  if (typeof url !== 'string') return void problems.push(`${where}: url must be a string`);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return void problems.push(`${where}: url ${JSON.stringify(url)} is not a URL`);
  }
  if (parsed.protocol !== 'https:') problems.push(`${where}: url ${url} must use https`);
  if (parsed.search || parsed.hash || parsed.username) problems.push(`${where}: url ${url} must be a plain file URL (no query, fragment or user)`);
  if (!parsed.pathname.split('/').pop()) problems.push(`${where}: url ${url} must end in a file name`);
  if (version && !url.includes(version)) problems.push(`${where}: url ${url} does not name version ${version}`);
}

/** Every problem of a parsed manifest, each naming the component; pure. */
export function checkManifest(doc: unknown): ManifestCheck {
  const problems: string[] = [];
  const unpinned: string[] = [];
  if (!isObject(doc) || !Array.isArray(doc.components)) return { components: [], problems: ['"components" must be a list'], unpinned };
  if (doc.components.length === 0) problems.push('"components" is empty');
  const seen = new Set<string>();
  doc.components.forEach((c: unknown, i: number) => {
    if (!isObject(c)) return void problems.push(`components[${i}] must be an object`);
    const name = typeof c.name === 'string' && NAME.test(c.name) ? c.name : undefined;
    const where = name ?? `components[${i}]`;
    if (!name) problems.push(`${where}: name must be lowercase letters, digits, '.', '-'`);
    else if (seen.has(name)) problems.push(`${where}: listed twice`);
    else seen.add(name);
    const version = typeof c.version === 'string' && c.version.trim() ? c.version : '';
    if (!version) problems.push(`${where}: version must be a non-empty string`);
    checkUrl(c.url, version, where, problems);
    if (c.sha256 === null || c.sha256 === undefined) {
      unpinned.push(where);
      if (typeof c.source !== 'string' || !c.source) problems.push(`${where}: sha256 is null: say why in "source"`);
    } else if (typeof c.sha256 !== 'string' || !SHA256.test(c.sha256)) {
      problems.push(`${where}: sha256 ${JSON.stringify(c.sha256)} is not 64 lowercase hex digits`);
    }
    if (c.file !== undefined && (typeof c.file !== 'string' || !c.file || c.file.includes('/'))) problems.push(`${where}: file must be a plain file name`);
    const inst = c.install;
    if (!isObject(inst)) return void problems.push(`${where}: install must be an object`);
    if (inst.kind !== 'file' && inst.kind !== 'tar') problems.push(`${where}: install.kind must be "file" or "tar"`);
    if (!isAbsolute(inst.dest)) problems.push(`${where}: install.dest must be an absolute path without ".."`);
    if (inst.strip !== undefined && !(Number.isInteger(inst.strip) && (inst.strip as number) >= 0)) problems.push(`${where}: install.strip must be a whole number`);
    for (const key of ['members', 'provides'] as const) {
      const list = inst[key];
      if (list !== undefined && !(Array.isArray(list) && list.every((m) => typeof m === 'string' && m && !/[\s]/.test(m))))
        problems.push(`${where}: install.${key} must be a list of paths without spaces`);
    }
    if (inst.kind === 'tar' && !Array.isArray(inst.provides)) problems.push(`${where}: a tar install must say what it "provides"`);
    if (Array.isArray(inst.provides) && !inst.provides.every(isAbsolute)) problems.push(`${where}: install.provides must be absolute paths`);
  });
  return { components: problems.length ? [] : (doc.components as Component[]), problems, unpinned };
}

/** The absolute paths the components put on the machine. */
export function providedPaths(components: readonly Component[]): Set<string> {
  return new Set(components.flatMap((c) => (c.install.kind === 'file' ? [c.install.dest] : (c.install.provides ?? []))));
}

/** Programs the units run from where components live (/usr/local, /opt) that no component provides. */
export function missingPrograms(programs: readonly string[], components: readonly Component[]): string[] {
  const provided = providedPaths(components);
  return programs.filter((p) => /^\/(usr\/local|opt)\//.test(p) && !provided.has(p));
}

export function formatTable(components: readonly Component[]): string[] {
  const rows = components.map((c) => [c.name, c.version, c.sha256 ? `${c.sha256.slice(0, 12)}…` : 'UNPINNED', c.url]);
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => (r[i] as string).length)));
  return rows.map((r) => r.map((cell, i) => (i < 3 ? cell.padEnd(widths[i] as number) : cell)).join('  '));
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, strict: true, options: { manifest: { type: 'string' }, strict: { type: 'boolean', default: false } } });
  const file = path.resolve(values.manifest ?? MANIFEST);
  let doc: unknown;
  try {
    doc = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    console.error(`components: ${file}: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
  const { components, problems, unpinned } = checkManifest(doc);
  if (components.length) {
    for (const line of formatTable(components)) console.log(line);
    for (const p of missingPrograms(await unitBinaries(), components)) problems.push(`the units run ${p}, but no component installs it`);
  }
  if (values.strict) for (const name of unpinned) problems.push(`${name}: no pinned sha256`);
  for (const p of problems) console.error(`components: ${file}: ${p}`);
  const pinned = components.length - unpinned.length;
  console.log(`${components.length} components, ${pinned} pinned, ${unpinned.length} unpinned${unpinned.length ? ` (provision refuses: ${unpinned.join(', ')})` : ''}, ${problems.length} problems`);
  return problems.length ? 1 : 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then((code) => (process.exitCode = code));
}
