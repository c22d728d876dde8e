// What the AWS operator scripts (userdata, launch, dns-sync) share beyond the command-line convention of
// agent/command-line.ts: repeated `--set KEY=VALUE` pairs, and one line for an AWS error.
import { UsageError } from '../../agent/command-line.js';
import { describeError } from '../../agent/errors.js';

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
