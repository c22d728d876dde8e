// systemd's own EnvironmentFile= parser, runnable without a systemd PID 1: the environment.d generator
// reads its files with the same env-file.c state machine (parse_env_file_internal). Two differences, both
// in the generator only: it expands $NAME/${NAME} in values after unquoting, and it drops assignments whose
// value systemd thinks invalid. Callers keep `$` out of what they compare.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

export const ENV_GENERATOR = '/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator';

const C_ESCAPES: Record<string, string> = { a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v' };

/** The generator prints values that need it as "..." with C escapes (systemd's cescape). */
function unquote(raw: string): string {
  if (!raw.startsWith('"')) return raw;
  return raw
    .slice(1, -1)
    .replace(/\\(x[0-9a-fA-F]{2}|[0-7]{3}|.)/gsu, (_, e: string) =>
      e.length === 3 && /^[0-7]+$/.test(e)
        ? String.fromCharCode(parseInt(e, 8))
        : e.startsWith('x') && e.length === 3
          ? String.fromCharCode(parseInt(e.slice(1), 16))
          : (C_ESCAPES[e] ?? e),
    );
}

async function generatorOutput(files: string[]): Promise<Map<string, string>> {
  const home = await mkdtemp(path.join(tmpdir(), 'kubeseed-envd-'));
  try {
    await mkdir(path.join(home, 'environment.d'));
    for (const [i, text] of files.entries()) await writeFile(path.join(home, 'environment.d', `${50 + i}-test.conf`), text);
    const { stdout } = await promisify(execFile)(ENV_GENERATOR, [], { env: { XDG_CONFIG_HOME: home }, encoding: 'utf8' });
    const vars = new Map<string, string>();
    for (const line of stdout.split('\n').filter(Boolean)) {
      const eq = line.indexOf('=');
      vars.set(line.slice(0, eq), unquote(line.slice(eq + 1)));
    }
    return vars;
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}

let baseline: Promise<Map<string, string>> | undefined;

/** What systemd reads from an env file: KEY → value (last wins), minus what the machine's own environment.d sets. */
export async function systemdReadsEnvFile(text: string): Promise<Map<string, string>> {
  baseline ??= generatorOutput([]);
  const [base, vars] = await Promise.all([baseline, generatorOutput([text])]);
  for (const [k, v] of base) if (vars.get(k) === v) vars.delete(k);
  return vars;
}
