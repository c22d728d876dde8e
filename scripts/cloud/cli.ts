// What the AWS operator scripts (userdata, launch, dns-sync) share beyond the command-line convention of
// agent/command-line.ts: repeated `--set KEY=VALUE` pairs, the user-data flags, and one line for an AWS error.
import { asUsage, required, UsageError, wholeNumber } from '../../agent/command-line.js';
import type { Role } from '../../agent/dns-names.js';
import { describeError } from '../../agent/errors.js';
import { masterCountVars, MAX_MASTER_COUNT, parseMasterCount } from '../../agent/weave-consensus.js';
import { renderUserData } from '../../cloud-init/render.js';

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

/** The flags that say what a role's user-data holds, as `npm run userdata` and `npm run launch` both take them. */
export const USER_DATA_FLAGS = {
  role: { type: 'string' },
  cluster: { type: 'string' },
  domain: { type: 'string' },
  set: { type: 'string', multiple: true },
  secrets: { type: 'string' },
  masters: { type: 'string' },
} as const;

export interface UserDataFlags {
  role?: string;
  cluster?: string;
  domain?: string;
  set?: string[];
  secrets?: string;
  masters?: string;
}

/**
 * How many masters the cluster has: `--masters N`, else `--set MASTER_COUNT=N`, else one. Every node's
 * user-data must carry the same count (etcd forms, and Weave's consensus is sized, from it), so the two
 * spellings disagreeing is an error rather than a guess.
 */
export async function mastersFromFlags(flags: UserDataFlags, vars: Readonly<Record<string, string>>): Promise<number> {
  const text = vars.MASTER_COUNT;
  const set = text ? await asUsage(() => parseMasterCount(text)) : undefined;
  if (flags.masters === undefined) return set ?? 1;
  const masters = wholeNumber('--masters', flags.masters, { min: 1, max: MAX_MASTER_COUNT });
  if (set !== undefined && set !== masters) throw new UsageError(`--masters ${masters} disagrees with --set MASTER_COUNT=${text}: give one`);
  return masters;
}

/**
 * The role's user-data from its flags. Everything renderUserData refuses is a value or a file named on the
 * command line, so it is a usage error (exit 2) naming it, found before anything else happens.
 */
export async function userDataFromFlags(flags: UserDataFlags): Promise<{ role: Role; cluster: string; masters: number; userData: string }> {
  const role = required(flags.role, '--role') as Role;
  // One spelling of the cluster for the role file, the tags and the template name, as `npm run secrets` and the
  // metal inventory write it: DNS names are lowercase anyway.
  const cluster = required(flags.cluster, '--cluster').toLowerCase();
  const set = parsePairs(flags.set);
  const masters = await mastersFromFlags(flags, set);
  const vars = { ...set, ...masterCountVars(masters) };
  const userData = await asUsage(() =>
    renderUserData({
      role,
      cluster,
      ...(flags.domain !== undefined && { domain: flags.domain }),
      vars,
      ...(flags.secrets !== undefined && { secretsDir: flags.secrets }),
    }),
  );
  return { role, cluster, masters, userData };
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
