// The one command-line convention of every kubeseed command (the agent, the operator scripts, the image tools):
//   --help (or -h)   usage on stdout, exit 0
//   usage mistake    one line naming the flag and the value on stderr, then the usage, exit 2
//   runtime error    one line on stderr, exit 1 (the command may choose other codes, e.g. `agent status`)
//   never a stack trace, unless --debug is given.
// It lives in agent/ because the agent bundle (plain node, no node_modules) needs it too; it imports only
// node:fs, node:util and errors.ts, so esbuild bundles it as it is.
import { statSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { describeError, InputError } from './errors.js';

export type OptionSpecs = NonNullable<ParseArgsConfig['options']>;

/** A mistake in how the command was called: exit 2, with the usage. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** --help was given: the runner prints the usage and exits 0. */
class HelpRequest extends Error {}

const quote = (text: string) => JSON.stringify(text);

/**
 * Says what is wrong with one argument list, in the words the user typed. Returns the arguments with a value
 * that starts with one dash (`--port -1`) joined to its flag (`--port=-1`): node's strict parser calls such a
 * value ambiguous and throws its own message, while here it is the flag's value and reaches the command's own
 * check, which names it.
 */
function checkTokens(args: string[], options: OptionSpecs, positionals: boolean): string[] {
  const { tokens } = parseArgs({ args, options, strict: false, allowPositionals: true, tokens: true });
  /** Token index -> the flag with its value joined; the value's own index is dropped. */
  const joined = new Map<number, string>();
  if (tokens.some((t) => t.kind === 'option' && (t.name === 'help' || t.rawName === '-h'))) throw new HelpRequest();
  for (const t of tokens) {
    if (t.kind === 'positional') {
      if (!positionals) throw new UsageError(`unexpected argument ${quote(t.value)}`);
      continue;
    }
    if (t.kind !== 'option' || t.name === 'debug') continue;
    const spec = options[t.name];
    if (!spec || t.rawName !== `--${t.name}`) throw new UsageError(`unknown flag ${t.rawName}`);
    if (spec.type === 'boolean') {
      if (t.value !== undefined) throw new UsageError(`${t.rawName} takes no value, got ${quote(t.value)}`);
      continue;
    }
    // `--out --json` would make "--json" the directory: a value that looks like a flag is taken as a missing value.
    if (t.value === undefined || (!t.inlineValue && t.value.startsWith('--'))) throw new UsageError(`${t.rawName} needs a value`);
    if (!t.inlineValue && t.value.startsWith('-')) joined.set(t.index, `${t.rawName}=${t.value}`);
  }
  return args.flatMap((a, i) => (joined.has(i) ? [joined.get(i)!] : joined.has(i - 1) ? [] : [a]));
}

/**
 * node:util parseArgs with the convention's errors: an unknown flag, a flag without its value, a value on a
 * switch or a stray argument is a UsageError naming it; --help anywhere is a request for the usage.
 */
export function parseCommandLine<T extends OptionSpecs, P extends boolean = false>(args: string[], options: T, config: { positionals?: P } = {}) {
  const positionals = (config.positionals ?? false) as P;
  const checked = checkTokens(args, options, positionals);
  return parseArgs({ args: checked.filter((a) => a !== '--debug'), options, strict: true, allowPositionals: positionals });
}

/** A flag the command cannot do without. */
export function required<V>(value: V | undefined, flag: string): V {
  if (value === undefined || value === '') throw new UsageError(`${flag} is required`);
  return value;
}

/**
 * A folder named on the command line must be there: a mistyped one would otherwise be created empty, read as
 * "nothing configured", or served as if it held something. Usage error naming the flag and the value.
 */
export function existingDirectory(flag: string, dir: string): string {
  const isDirectory = (() => {
    try {
      return statSync(dir).isDirectory();
    } catch {
      return false;
    }
  })();
  if (!isDirectory) throw new UsageError(`${flag} ${quote(dir)} is not an existing directory`);
  return dir;
}

/**
 * A flag's value as a whole number in [min, max]; anything else is a usage error that names the flag and
 * what was given (`--days must be a whole number of days from 1 to 999999, got "1.5"`).
 */
export function wholeNumber(flag: string, text: string, range: { min: number; max?: number; unit?: string }): number {
  const n = Number(text);
  if (/^\d+$/.test(text) && n >= range.min && (range.max === undefined || n <= range.max)) return n;
  const bounds = range.max === undefined ? `of at least ${range.min}` : `from ${range.min} to ${range.max}`;
  throw new UsageError(`${flag} must be a whole number${range.unit ? ` of ${range.unit}` : ''} ${bounds}, got ${quote(text)}`);
}

/** Runs a step whose InputError is the caller's mistake: a usage error (exit 2) with the same message. */
export async function asUsage<T>(step: () => T | Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    if (err instanceof InputError) throw new UsageError(err.describe());
    throw err;
  }
}

export interface CommandIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

export interface CommandSpec {
  /** The prefix of every error line, e.g. `secrets`. */
  name: string;
  usage: string;
  /** One line for a runtime error (default: describeError). */
  describe?: (err: unknown) => string;
}

const processIo: CommandIo = {
  out: (text) => process.stdout.write(`${text}\n`),
  err: (text) => process.stderr.write(`${text}\n`),
};

/** Runs a command body and turns whatever it throws into the convention's output and exit code. */
export async function runCommand(spec: CommandSpec, argv: readonly string[], body: () => Promise<number | void>, io: CommandIo = processIo): Promise<number> {
  try {
    return (await body()) ?? 0;
  } catch (err) {
    if (err instanceof HelpRequest) {
      io.out(spec.usage);
      return 0;
    }
    if (err instanceof UsageError) {
      io.err(`${spec.name}: ${err.message}`);
      io.err(spec.usage);
      return 2;
    }
    io.err(`${spec.name}: ${(spec.describe ?? describeError)(err)}`);
    if (argv.includes('--debug') && err instanceof Error && err.stack) io.err(err.stack);
    return 1;
  }
}

/**
 * The whole life of a command process: run the body on process.argv, then exit with its code. The exit is
 * explicit so that a half-open socket or a timer left by an interrupted call cannot keep the process alive
 * (stdout and stderr are synchronous for files and pipes on Linux, so nothing written is lost).
 */
export function runMain(spec: CommandSpec, body: (argv: string[]) => Promise<number | void>): void {
  const argv = process.argv.slice(2);
  void runCommand(spec, argv, () => body(argv)).then((code) => process.exit(code));
}
