// Every kubeseed command keeps one command-line convention (agent/command-line.ts):
//   --help          the usage on stdout, nothing on stderr, exit 0
//   unknown flag    `<command>: unknown flag --no-such-flag`, then the same usage, on stderr; exit 2
//   missing value   `<command>: --FLAG needs a value`, then the same usage, on stderr; exit 2
// Exact equality, so a stack trace, an npm banner or a second line fails it. Each command runs as its npm
// script runs it (the file after `tsx` in package.json), or as its documented path for the bash tools.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const REPO = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

interface Command {
  /** The prefix of its error lines. */
  name: string;
  argv: string[];
  /** A flag that takes a value; none for a command without one. */
  valueFlag?: string;
}


/** The file an npm script runs (with tsx, or built with node): the command as `npm run NAME` starts it, without npm. */
async function npmEntry(script: string, sub: string[] = []): Promise<string[]> {
  const pkg = JSON.parse(await readFile(path.join(REPO, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const line = pkg.scripts[script];
  const m = line && /(?:^|&& )(tsx|node) (\S+)$/.exec(line);
  if (!m) throw new Error(`package.json has no "tsx FILE" or "node FILE" script named ${script}: ${line}`);
  return m[1] === 'tsx' ? [process.execPath, '--import', 'tsx', m[2]!, ...sub] : [process.execPath, m[2]!, ...sub];
}

async function commands(): Promise<Command[]> {
  return [
    ...['run', 'status', 'check'].map((sub) => ({ name: 'agent', argv: [process.execPath, '--import', 'tsx', 'agent/main.ts', sub], valueFlag: '--root' })),
    { name: 'secrets', argv: await npmEntry('secrets'), valueFlag: '--cluster' },
    { name: 'userdata', argv: await npmEntry('userdata'), valueFlag: '--role' },
    { name: 'launch', argv: await npmEntry('launch'), valueFlag: '--image' },
    { name: 'dns-sync', argv: await npmEntry('dns-sync'), valueFlag: '--zone-id' },
    { name: 'cluster', argv: await npmEntry('cluster', ['status']), valueFlag: '--state-dir' },
    { name: 'cluster', argv: await npmEntry('cluster', ['up']), valueFlag: '--masters' },
    { name: 'cluster watch', argv: await npmEntry('cluster', ['watch']), valueFlag: '--hosts' },
    { name: 'cluster-check', argv: await npmEntry('cluster-check'), valueFlag: '--hosts' },
    { name: 'bench', argv: await npmEntry('bench'), valueFlag: '--only' },
    { name: 'metal', argv: await npmEntry('metal', ['check']), valueFlag: '--inventory' },
    { name: 'metal', argv: await npmEntry('metal', ['serve']), valueFlag: '--image' },
    { name: 'metal', argv: await npmEntry('metal', ['dnsmasq-conf']), valueFlag: '--server-address' },
    { name: 'components', argv: await npmEntry('components'), valueFlag: '--manifest' },
    { name: 'image', argv: await npmEntry('image'), valueFlag: '--out' },
    { name: 'unit-binaries', argv: [process.execPath, '--import', 'tsx', 'scripts/unit-binaries.ts'] },
    { name: 'hygiene-check', argv: ['bash', 'image/hygiene-check'] },
    { name: 'provision', argv: ['bash', 'image/provision'], valueFlag: '--root' },
    { name: 'install-components', argv: [process.execPath, 'image/install-components.mjs'], valueFlag: '--root' },
  ];
}

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(argv: string[], env: NodeJS.ProcessEnv): Promise<Result> {
  const [program, ...args] = argv;
  const child = spawn(program!, args, { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  // Bounded: a command that starts working instead of refusing would otherwise hang the suite.
  const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
  return new Promise((resolve) =>
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr: stderr || (code === null ? `(killed after 90 s: ${argv.join(' ')} did not end)` : '') });
    }),
  );
}

// Every command and subcommand, three runs each, on a shared 2-core machine: more than the default per-file limit.
t.setTimeout(900_000);

// The commands npm runs from dist/ (metal) are built first, as `npm run` does.
t.before(() => {
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: REPO, stdio: 'ignore' });
});

t.test('every command: --help, an unknown flag, a flag without its value', async (t) => {
  // A scratch ROOT and HOME: a command that ignored its arguments would act on these, not on this machine.
  const scratch = await mkdtemp(path.join(tmpdir(), 'cli-convention-'));
  t.teardown(() => rm(scratch, { recursive: true, force: true }));
  const env: NodeJS.ProcessEnv = { ...process.env, ROOT: scratch, HOME: scratch, XDG_DATA_HOME: path.join(scratch, 'data') };
  delete env.NODE_OPTIONS; // tap's loaders: a user's shell has none
  for (const cmd of await commands()) {
    await t.test(cmd.argv.slice(cmd.argv.findIndex((a) => /\.(ts|js|mjs)$|^image\//.test(a))).join(' '), async (t) => {
      const [help, unknown, missing] = await Promise.all([
        run([...cmd.argv, '--help'], env),
        run([...cmd.argv, '--no-such-flag'], env),
        cmd.valueFlag ? run([...cmd.argv, cmd.valueFlag], env) : undefined,
      ]);
      t.same(help, { code: 0, stdout: help.stdout, stderr: '' }, '--help: exit 0, nothing on stderr');
      // The usage's wording is each command's own; that it is the same text on every path is checked below.
      t.match(help.stdout, /^\S[^]*\n$/, '--help: the usage on stdout');
      t.same(unknown, { code: 2, stdout: '', stderr: `${cmd.name}: unknown flag --no-such-flag\n${help.stdout}` }, 'unknown flag: one line naming it, the usage, exit 2');
      if (cmd.valueFlag && missing) {
        t.same(missing, { code: 2, stdout: '', stderr: `${cmd.name}: ${cmd.valueFlag} needs a value\n${help.stdout}` }, 'missing value: one line naming the flag, the usage, exit 2');
      }
    });
  }
});

t.test('a value that starts with one dash is the flag’s value, and the command’s own check names it', async (t) => {
  const home = await mkdtemp(path.join(tmpdir(), 'kubeseed-cli-dash-'));
  t.teardown(() => rm(home, { recursive: true, force: true }));
  const r = await run([...(await npmEntry('secrets')), '--cluster', 'demo', '--days', '-1', '--out', path.join(home, 'demo')], { ...process.env, HOME: home });
  t.equal(r.code, 2, 'a usage error');
  t.match(r.stderr.split('\n')[0], /^secrets: --days must be a whole number of days .*, got "-1"$/, 'naming the flag and the value, not node’s "ambiguous"');
});
