// `npm run cluster-check -- --hosts a,b,c --key FILE --known-hosts FILE`: asks every node for
// `agent status --json` over SSH and says whether the cluster is ready. Host keys are checked against a
// known_hosts file built from what the nodes reported on their consoles; an unknown key is refused.
// Works the same for the local QEMU cluster (forwarded ports on 127.0.0.1) and for cloud nodes.
import { readFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import { asUsage, parseCommandLine, required, runCommand, UsageError, wholeNumber } from '../agent/command-line.js';
import { InputError, describeError } from '../agent/errors.js';
import { parseKnownHosts } from './check/known-hosts.js';
import { checkNodes, renderReports } from './check/node-report.js';
import { DEFAULT_TIMEOUT_MS, parseTargets } from './check/ssh-session.js';

const USAGE = `usage: npm run cluster-check -- --hosts HOST[:PORT],... --key FILE --known-hosts FILE [--user NAME] [--port N] [--timeout SECONDS] [--json]
Exit 0 every node ready, 1 some node is not (or unreachable), 2 bad usage or input (the message names it).`;

/** Exit code: 0 every node ready, 1 some node is not, 2 bad usage or input. */
export async function main(argv: string[], out = (s: string) => console.log(s), err = (s: string) => console.error(s)): Promise<number> {
  return runCommand({ name: 'cluster-check', usage: USAGE }, argv, async () => {
    const { values } = parseCommandLine(argv, {
      hosts: { type: 'string' },
      key: { type: 'string' },
      'known-hosts': { type: 'string' },
      user: { type: 'string', default: 'root' },
      port: { type: 'string', default: '22' },
      timeout: { type: 'string', default: String(DEFAULT_TIMEOUT_MS / 1000) },
      json: { type: 'boolean', default: false },
    });
    const hosts = required(values.hosts, '--hosts');
    const keyFile = required(values.key, '--key');
    const knownHostsFile = required(values['known-hosts'], '--known-hosts');
    const port = wholeNumber('--port', values.port, { min: 1, max: 65535 });
    const timeout = Number(values.timeout);
    if (!(timeout > 0)) throw new UsageError(`--timeout must be a positive number of seconds, got ${JSON.stringify(values.timeout)}`);
    // Exit 1 means "a node is not ready": a bad host list or an unreadable file is the caller's mistake, exit 2.
    const { targets, knownHosts, privateKey } = await asUsage(async () => ({
      targets: parseTargets(hosts, port),
      knownHosts: parseKnownHosts(await readInput(knownHostsFile, '--known-hosts'), knownHostsFile),
      privateKey: await readInput(keyFile, '--key'),
    }));
    const reports = await checkNodes(targets, { username: values.user, privateKey, knownHosts, timeoutMs: timeout * 1000 });
    out(values.json ? JSON.stringify(reports, null, 2) : renderReports(reports));
    return reports.every((r) => r.state === 'ready') ? 0 : 1;
  }, { out, err });
}

async function readInput(file: string, flag: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw new InputError(`${flag} ${JSON.stringify(file)}: cannot read: ${(e as NodeJS.ErrnoException).code ?? describeError(e)}`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  process.exit(await main(process.argv.slice(2)));
}
