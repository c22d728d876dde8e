// Where `npm run secrets` writes: outside the work tree by default, and never into a folder git would track;
// nor does `npm run userdata --out` write user-data holding secrets there (a real git and a real work tree in
// a temp dir, the scripts run as an operator runs them).
import { execFile } from 'node:child_process';
import { rm, stat, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import t from 'tap';
import { defaultSecretsDir } from '../scripts/secrets/location.js';
import { tempDir } from './helpers/secrets.js';

const SCRIPT = path.resolve('scripts/secrets.ts');
// By path: the commands run in other folders, where `--import tsx` would not resolve.
const TSX = path.resolve('node_modules/.bin/tsx');

function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: { ...process.env, ...opts.env }, ...(opts.cwd && { cwd: opts.cwd }) }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}
const secrets = (args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string }) => run(TSX, [SCRIPT, ...args], opts);

t.test('the default folder follows the XDG base directory spec', async (t) => {
  t.equal(defaultSecretsDir('demo', { HOME: '/home/ann' }), '/home/ann/.local/share/kubeseed/demo');
  t.equal(defaultSecretsDir('demo', { HOME: '/home/ann', XDG_DATA_HOME: '/data' }), '/data/kubeseed/demo');
  t.equal(defaultSecretsDir('demo', { HOME: '/home/ann', XDG_DATA_HOME: 'rel' }), '/home/ann/.local/share/kubeseed/demo', 'a relative XDG_DATA_HOME is ignored, as the spec says');
});

t.test('without --out the secrets go to the user data folder; a DIR git would track is refused, naming it', async (t) => {
  const home = await tempDir('secrets-home');
  t.teardown(() => rm(home, { recursive: true, force: true }));
  const inHome = await secrets(['--cluster', 'demo'], { env: { HOME: home, XDG_DATA_HOME: '' } });
  t.equal(inHome.code, 0, inHome.stderr);
  const defaultDir = path.join(home, '.local/share/kubeseed/demo');
  t.match(inHome.stdout, `secrets in ${defaultDir}: 27 created, 0 kept`);
  t.equal((await stat(path.join(defaultDir, 'ca.key'))).mode & 0o777, 0o600);

  // A work tree that ignores secrets/ and nothing else: ./secrets/demo is fine, ./keys/demo is refused.
  const repo = path.join(home, 'repo');
  await run('git', ['init', '-q', repo]);
  await writeFile(path.join(repo, '.gitignore'), 'secrets/\n');
  const tracked = await secrets(['--cluster', 'demo', '--out', './keys/demo'], { cwd: repo });
  t.equal(tracked.code, 1);
  t.equal(
    tracked.stderr,
    `secrets: --out "./keys/demo" is inside the git work tree ${repo} and not ignored: git would track the secrets (leave out --out for the default outside the work tree, or name an ignored or outside folder)\n`,
  );
  t.notOk(await stat(path.join(repo, 'keys')).catch(() => false), 'nothing written');
  const ignored = await secrets(['--cluster', 'demo', '--out', './secrets/demo'], { cwd: repo });
  t.equal(ignored.code, 0, ignored.stderr);
  t.equal((await run('git', ['-C', repo, 'status', '--porcelain'])).stdout, '?? .gitignore\n', 'git sees no secret');
});

t.test('userdata --out: user-data holding secrets is refused where git would track it, naming the file', async (t) => {
  const home = await tempDir('userdata-home');
  t.teardown(() => rm(home, { recursive: true, force: true }));
  const repo = path.join(home, 'repo');
  await run('git', ['init', '-q', repo]);
  await writeFile(path.join(repo, '.gitignore'), 'secrets/\n');
  const made = await secrets(['--cluster', 'demo', '--out', './secrets/demo'], { cwd: repo });
  t.equal(made.code, 0, made.stderr);
  const userdata = (args: string[]) => run(TSX, [path.resolve('scripts/userdata.ts'), '--role', 'master', '--cluster', 'demo', ...args], { cwd: repo });

  const keys = await userdata(['--secrets', 'secrets/demo', '--out', 'master.yaml']);
  t.equal(keys.code, 1);
  t.equal(
    keys.stderr,
    `userdata: --out "master.yaml" is inside the git work tree ${repo} and not ignored: git would track the secrets (write it outside the work tree or to an ignored name, or leave out --out for stdout)\n`,
  );
  const password = await userdata(['--set', 'WEAVE_PASSWORD=a long enough overlay password', '--out', 'master.yaml']);
  t.equal(password.code, 1, 'the overlay password is a secret too');
  t.notOk(await stat(path.join(repo, 'master.yaml')).catch(() => false), 'nothing written');

  t.equal((await userdata(['--secrets', 'secrets/demo', '--out', 'secrets/master.yaml'])).code, 0, 'an ignored name is fine');
  t.equal((await userdata(['--out', 'plain.yaml'])).code, 0, 'user-data without secrets may go anywhere');
  t.equal((await run('git', ['-C', repo, 'status', '--porcelain'])).stdout, '?? .gitignore\n?? plain.yaml\n', 'git sees no secret');
});
