// How the operator scripts end: one plain line on stderr and a non-zero exit, never a stack trace.
// Usage mistakes exit 2, everything else (bad input, AWS refusing) exits 1.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { describeError } from '../../agent/errors.js';

export class UsageError extends Error {
  override name = 'UsageError';
}

/** node:util parseArgs, with its TypeErrors turned into UsageErrors that carry the usage text. */
export function parseFlags<T extends ParseArgsConfig['options']>(argv: string[], options: T, usage: string) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false });
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n${usage}`);
  }
}

/** `KEY=VALUE` pairs from repeated `--set`; the value may itself contain '='. */
export function parsePairs(pairs: string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of pairs ?? []) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`--set expects KEY=VALUE, got ${JSON.stringify(pair)}`);
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

/**
 * One line for any error. AWS service errors carry their code in `name` (e.g. InvalidAMIID.NotFound)
 * and a `$fault`; errors below that (DNS, refused connections) have no `$fault`.
 */
export function errorLine(err: unknown): string {
  if (err instanceof Error && '$fault' in err) return `AWS ${err.name}: ${err.message}`;
  if (err instanceof Error && '$metadata' in err) return `cannot reach AWS: ${err.message}`;
  return describeError(err);
}

export function runMain(main: () => Promise<number | void>): void {
  main().then(
    (code) => {
      process.exitCode = code ?? 0;
    },
    (err: unknown) => {
      process.stderr.write(`error: ${errorLine(err)}\n`);
      process.exitCode = err instanceof UsageError ? 2 : 1;
    },
  );
}
