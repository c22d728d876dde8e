// `npm run components [-- --manifest FILE]`: what the image pins (name, version, digest kind, source), and whether
// the manifest is well formed (image/manifest.mjs: https URLs that name their version, a sha256 or sha512 for
// every component, install targets), and whether a component installs every program the units run from
// /usr/local or /opt. Exit 1 on any unpinned or malformed entry, each named; exit 2 on a usage mistake.
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { InputError } from '../agent/errors.js';
import { parseCommandLine, runMain, type CommandIo } from '../agent/command-line.js';
import { unitBinaries } from '../scripts/unit-binaries.js';
import { checkManifest, providedPaths, type Component } from './manifest.mjs';

export { checkManifest, type Component };

export const MANIFEST = fileURLToPath(new URL('./components.json', import.meta.url));

const USAGE = `usage: npm run components [-- --manifest FILE]
  Lists each pinned component (name, version, digest kind, source) and checks the manifest
  (default: image/components.json). Exit 0 when every component is pinned and well formed, 1 otherwise.`;

/** Programs the units run from where components live (/usr/local, /opt) that no component provides. */
export function missingPrograms(programs: readonly string[], components: readonly Component[]): string[] {
  const provided = providedPaths(components);
  return programs.filter((p) => /^\/(usr\/local|opt)\//.test(p) && !provided.has(p));
}

export function formatTable(components: readonly Component[]): string[] {
  const rows = [['NAME', 'VERSION', 'DIGEST', 'SOURCE'], ...components.map((c) => [c.name, c.version, c.algorithm, c.source])];
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => (r[i] as string).length)));
  return rows.map((r) => r.map((cell, i) => (i < 3 ? cell.padEnd(widths[i] as number) : cell)).join('  '));
}

/** The whole command on an argument list; returns the exit code. */
export async function components(argv: string[], io: CommandIo): Promise<number> {
  const { values } = parseCommandLine(argv, { manifest: { type: 'string' } });
  const file = path.resolve(values.manifest ?? MANIFEST);
  let doc: unknown;
  try {
    doc = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new InputError(`cannot read the manifest: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { file });
  }
  const { components, problems } = checkManifest(doc);
  if (components.length) {
    for (const line of formatTable(components)) io.out(line);
    for (const p of missingPrograms(await unitBinaries(), components)) problems.push(`the units run ${p}, but no component installs it`);
  }
  for (const p of problems) io.err(`components: ${file}: ${p}`);
  io.out(`${components.length} components pinned, ${problems.length} problems`);
  return problems.length ? 1 : 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  runMain({ name: 'components', usage: USAGE }, (argv) => components(argv, { out: (t) => console.log(t), err: (t) => console.error(t) }));
}
