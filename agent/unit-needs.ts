// What a unit needs from the machine before it can start: the programs its Exec*= lines run and the
// EnvironmentFile=s it reads. The image installs the former (scripts/unit-binaries.ts lists them from
// units/); the pki phase writes the latter, and a required one that is missing makes systemd refuse to
// start the unit, so it is checked (missingEnvironmentFiles) rather than discovered at boot.
import type { Host } from './host.js';
import { listValues, type UnitFile } from './unit-file.js';

const EXEC_KEYS = ['ExecCondition', 'ExecStartPre', 'ExecStart', 'ExecStartPost', 'ExecReload', 'ExecStop', 'ExecStopPost'];

/** Absolute program paths, without systemd's `-@:+!` prefixes. */
export function unitExecutables(unit: UnitFile): string[] {
  const programs = EXEC_KEYS.flatMap((key) => listValues(unit, 'Service', key)).map(
    (e) => e.value.replace(/^[-@:+!]+/, '').split(/\s+/)[0] ?? '',
  );
  return [...new Set(programs.filter((p) => p.startsWith('/')))];
}

export interface EnvironmentFileRef {
  path: string;
  /** `EnvironmentFile=-/path`: a missing file is fine. */
  optional: boolean;
  line: number;
}

export function unitEnvironmentFiles(unit: UnitFile): EnvironmentFileRef[] {
  return listValues(unit, 'Service', 'EnvironmentFile').map((e) => ({
    path: e.value.replace(/^-/, ''),
    optional: e.value.startsWith('-'),
    line: e.line,
  }));
}

/** The required EnvironmentFile=s of `unit` that do not exist on the host. */
export async function missingEnvironmentFiles(host: Host, unit: UnitFile): Promise<EnvironmentFileRef[]> {
  const missing: EnvironmentFileRef[] = [];
  for (const ref of unitEnvironmentFiles(unit)) {
    if (!ref.optional && !(await host.stat(ref.path))?.isFile) missing.push(ref);
  }
  return missing;
}
