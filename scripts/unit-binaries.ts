// npx tsx scripts/unit-binaries.ts [UNITS_DIR]: the absolute paths of the programs the units run, one a
// line, sorted. The units are the one source: the image installs exactly these (Kubernetes binaries
// under /usr/local/bin) and the units test makes stubs of exactly these for `systemd-analyze verify`.
import { readFile, readdir } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeError } from '../agent/errors.js';
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

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  unitBinaries(process.argv[2]).then(
    (list) => console.log(list.join('\n')),
    (err: unknown) => {
      console.error(`unit-binaries: ${describeError(err)}`);
      process.exitCode = 1;
    },
  );
}
