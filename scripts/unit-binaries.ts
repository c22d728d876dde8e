// npx tsx scripts/unit-binaries.ts [UNITS_DIR]: the absolute paths of the programs the units run, one a
// line, sorted. The units are the one source: the image installs exactly these (Kubernetes binaries
// under /usr/local/bin) and the units test makes stubs of exactly these for `systemd-analyze verify`.
import { readFile, readdir } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { existingDirectory, parseCommandLine, runMain, UsageError } from '../agent/command-line.js';
import { parseUnitFile } from '../agent/unit-file.js';
import { unitExecutables } from '../agent/unit-needs.js';

export const UNITS_DIR = fileURLToPath(new URL('../units/', import.meta.url));

export async function unitBinaries(dir = UNITS_DIR): Promise<string[]> {
  const programs = new Set<string>();
  for (const name of await readdir(dir)) {
    const file = path.join(dir, name);
    const { unit, problems } = parseUnitFile(await readFile(file, 'utf8'), file);
    if (problems[0]) throw problems[0];
    for (const program of unitExecutables(unit)) programs.add(program);
  }
  return [...programs].sort();
}

const USAGE = `usage: npx tsx scripts/unit-binaries.ts [UNITS_DIR]
  UNITS_DIR defaults to units/. Exit 0 listed, 1 a unit file is unreadable or malformed (named), 2 usage error.`;

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  runMain({ name: 'unit-binaries', usage: USAGE }, async (argv) => {
    const { positionals } = parseCommandLine(argv, {}, { positionals: true });
    if (positionals.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[1])}`);
    const dir = positionals[0];
    if (dir !== undefined) existingDirectory('UNITS_DIR', dir);
    console.log((await unitBinaries(dir)).join('\n'));
  });
}
