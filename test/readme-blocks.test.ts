// The README's command blocks marked `<!-- safe -->` run as written, in order, in a fresh clone of this
// repository, as a new user would run them; after each, git sees no secret and no changed tracked file.
// (Safe: no root, no network beyond loopback, no AWS, no VM. The clone is of the last commit.)
import { execFile, execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const REPO = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The commands of each safe block: its `$ ` lines, or every line when it shows no prompt. */
export function safeCommands(markdown: string): string[][] {
  const blocks: string[][] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]!.trim() !== '<!-- safe -->') continue;
    if (!lines[i + 1]?.startsWith('```')) throw new Error(`README.md:${i + 1}: <!-- safe --> must be followed by a code block`);
    const body: string[] = [];
    for (i += 2; i < lines.length && !lines[i]!.startsWith('```'); i++) body.push(lines[i]!);
    const prompted = body.filter((l) => l.startsWith('$ ')).map((l) => l.slice(2));
    blocks.push(prompted.length ? prompted : body.filter((l) => l.trim() && !l.startsWith('#')));
  }
  return blocks;
}

t.setTimeout(900_000);

t.test("the README's safe blocks run in a fresh clone and leave git clean", async (t) => {
  const blocks = safeCommands(await readFile(path.join(REPO, 'README.md'), 'utf8'));
  t.ok(blocks.length >= 4, `the README marks its runnable blocks (found ${blocks.length})`);
  const scratch = await mkdtemp(path.join(tmpdir(), 'readme-blocks-'));
  t.teardown(() => rm(scratch, { recursive: true, force: true }));
  const clone = path.join(scratch, 'kubeseed');
  execFileSync('git', ['clone', '-q', REPO, clone]);
  // The dependencies of `npm ci`, without the download: the clone uses this checkout's.
  await symlink(path.join(REPO, 'node_modules'), path.join(clone, 'node_modules'));
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: path.join(scratch, 'home') };
  delete env.XDG_DATA_HOME;
  delete env.NODE_OPTIONS; // tap's loaders: a user's shell has none
  for (const command of blocks.flat()) {
    const result = await new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile('bash', ['-o', 'pipefail', '-c', command], { cwd: clone, env, maxBuffer: 64 << 20 }, (err, _stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stderr: String(stderr) }),
      ),
    );
    t.equal(result.code, 0, `${command}: exit 0 ${result.stderr.trim().split('\n').slice(-3).join(' / ')}`);
    // After each command, not only at the end: a file one command writes and a later one removes counts too.
    const status = execFileSync('git', ['status', '--porcelain', '--untracked-files=all'], { cwd: clone, encoding: 'utf8' });
    t.equal(status, '', `${command}: no secret and no changed tracked file, git status is empty`);
  }
});
