// `agent run | status | check`: arguments in, an exit code out. Everything else lives in the modules
// these call, so the bundle's main.ts only wires signals and the process.
// Only what `agent status` needs is imported here: it is run most often (by people, cluster-check, the
// watchers) and on a TCG guest every module evaluated at start is time. The role file, DNS and the
// phases (with node:crypto, node:net, child_process) are imported by the commands that use them.
import { asUsage, existingDirectory, parseCommandLine, runCommand, UsageError, type CommandIo } from './command-line.js';
import type { Nameserver } from './dns.js';
import { describeError, type InputError } from './errors.js';
import { createHost, type Host } from './host.js';
import { exitCodeFor, formatStatus, readStatus, STATUS_FILE, type Status } from './status.js';

export const USAGE = `usage: agent <command> [options]

  run [--root DIR] [--once] [--nameserver HOST[:PORT]]
      Read the role file, wait for the masters (minions), enable the role's units, write
      <root>${STATUS_FILE}; then keep reconciling unless --once. Live (no --root) it also starts
      the units. Exit 0 ready, 1 failed or bad role file, 4 no role file, 143 interrupted.
  status [--root DIR] [--json]
      Show <root>${STATUS_FILE}. Exit 0 ready, 1 failed, 3 in progress or waiting,
      4 unconfigured (no role file).
  check [--root DIR]
      Validate the role file and every unit file offline; list every problem. Changes nothing.
      Exit 0 valid, 1 problems found, 4 no role file (units valid).
  --version, --help

--root DIR   prefix every path the agent reads or writes (an offline root, e.g. an image being built);
             it must be an existing directory
--debug      show the stack trace of an unexpected error
Every command exits 2 on a usage error (unknown command or flag, a flag without its value, a bad value).`;

export interface CliIo extends CommandIo {
  signal: AbortSignal;
  version: string;
  env?: NodeJS.ProcessEnv;
}

export async function cli(argv: string[], io: CliIo): Promise<number> {
  const [command, ...rest] = argv;
  if (command === '--version' || command === 'version') {
    io.out(`kubeseed-agent ${io.version}`);
    return 0;
  }
  if (command === 'help') {
    io.out(USAGE);
    return 0;
  }
  return runCommand(
    { name: 'agent', usage: USAGE },
    argv,
    async () => {
      const args = await parseCommand(command, rest);
      const host = createHost({ root: args.root, ...(io.env ? { env: io.env } : {}), write: io.out });
      switch (args.command) {
        case 'run': {
          // Loaded only for `run`: `status`, the command run most often by people and cluster-check, starts lighter.
          const { runAgent } = await import('./run.js');
          return runAgent({ host, once: args.once, ...(args.nameserver ? { nameserver: args.nameserver } : {}), signal: io.signal, agentVersion: io.version });
        }
        case 'status':
          return showStatus(host, args.json, io);
        case 'check':
          return check(host, io);
      }
    },
    io,
  );
}

type Command =
  | { command: 'run'; root?: string; once: boolean; nameserver?: Nameserver }
  | { command: 'status'; root?: string; json: boolean }
  | { command: 'check'; root?: string };

const OPTIONS = {
  root: { type: 'string' },
  once: { type: 'boolean' },
  nameserver: { type: 'string' },
  json: { type: 'boolean' },
} as const;
const ALLOWED: Record<string, (keyof typeof OPTIONS)[]> = {
  run: ['root', 'once', 'nameserver'],
  status: ['root', 'json'],
  check: ['root'],
};

async function parseCommand(command: string | undefined, rest: string[]): Promise<Command> {
  // `agent --help` and `agent run --help` alike: the flags are read before the command is judged.
  const mine = Object.fromEntries((ALLOWED[command ?? ''] ?? []).map((k) => [k, OPTIONS[k]]));
  // `agent --bogus`: the "command" is a flag, and is judged as one.
  const { values } = parseCommandLine(command?.startsWith('-') ? [command, ...rest] : rest, mine);
  if (!command || !ALLOWED[command]) throw new UsageError(command ? `unknown command ${JSON.stringify(command)}` : 'no command given');
  const root = values.root as string | undefined;
  // A mistyped --root must not become an empty root that reads "unconfigured" (or gets a status file).
  if (root !== undefined) existingDirectory('--root', root);
  const base = root ? { root } : {};
  if (command === 'run') {
    const ns = values.nameserver as string | undefined;
    if (ns === undefined) return { command, ...base, once: !!values.once };
    const { parseNameserver } = await import('./dns.js');
    return { command, ...base, once: !!values.once, nameserver: await asUsage(() => parseNameserver(ns, '--nameserver')) };
  }
  if (command === 'status') return { command, ...base, json: !!values.json };
  return { command: 'check', ...base };
}

async function showStatus(host: Host, json: boolean, io: CliIo): Promise<number> {
  let status: Status | Pick<Status, 'state'> | undefined;
  try {
    status = await readStatus(host);
  } catch (err) {
    io.err(`agent: ${describeError(err)}`);
    return 1;
  }
  if (!status) {
    // No document yet: either there is no role file, or the agent has not got to write one.
    const [{ loadRole }, { ROLE_FILES }] = await Promise.all([import('./role-file.js'), import('./contract/role-file.js')]);
    const configured = (await loadRole(host)).state !== 'unconfigured';
    const state = configured ? 'starting' : 'unconfigured';
    if (json) io.out(JSON.stringify({ state }));
    else
      io.out(
        configured
          ? `state:    starting (the agent has not written ${STATUS_FILE} yet)`
          : `state:    unconfigured (no role file: ${ROLE_FILES.master} or ${ROLE_FILES.minion})`,
      );
    return exitCodeFor(state);
  }
  io.out(json ? JSON.stringify(status, null, 2) : formatStatus(status as Status, new Date()));
  return exitCodeFor(status.state);
}

/** Every problem with the role file and the unit files, without touching anything. */
async function check(host: Host, io: CliIo): Promise<number> {
  const problems: InputError[] = [];
  const [{ loadRole }, { ROLE_FILES }] = await Promise.all([import('./role-file.js'), import('./contract/role-file.js')]);
  const role = await loadRole(host);
  if (role.state === 'invalid') problems.push(...role.problems);
  if (role.state !== 'unconfigured') for (const w of role.warnings) io.out(`warning: ${w.describe()}`);
  const { findUnits, planUnits } = await import('./units.js');
  const units = await findUnits(host, 'all');
  for (const u of units) problems.push(...u.problems);
  for (const p of problems) io.err(p.describe());
  if (role.state === 'configured') {
    const { config } = role;
    io.out(`role ${config.role} (${config.file}), cluster ${config.cluster}.${config.domain}, api ${config.apiEndpoint}`);
    const mine = planUnits(units, config.role).enable.map((u) => u.name);
    io.out(`units of the role: ${mine.length ? mine.join(' ') : '(none)'}`);
  } else if (role.state === 'unconfigured') {
    io.out(`no role file (${ROLE_FILES.master} or ${ROLE_FILES.minion}): unconfigured`);
  }
  io.out(`${units.length} unit files checked, ${problems.length} problem${problems.length === 1 ? '' : 's'}`);
  if (problems.length) return 1;
  return role.state === 'unconfigured' ? 4 : 0;
}
