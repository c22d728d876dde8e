// Runs tap and ends with the plain `N passed, N failed[, N skipped]` line CI reads,
// keeping tap's exit code. tap's own summary is a JS-ish object literal we re-read.
import { spawn } from 'node:child_process';

const args = process.argv.slice(2);
const child = spawn('npx', ['tap', '-R', 'tap', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
let tail = '';
child.stdout.on('data', (chunk: Buffer) => {
  process.stdout.write(chunk);
  tail = (tail + chunk.toString()).slice(-4096);
});
child.on('close', (code) => {
  const count = (key: string) => Number(new RegExp(`\\b${key}: (\\d+)`).exec(tail)?.[1] ?? 0);
  const summary = /# \{[^}]*total: \d+[^}]*\}/.test(tail);
  const failed = summary ? count('fail') : code === 0 ? 0 : 1;
  const skipped = count('skip') + count('todo');
  console.log(`${count('pass')} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  process.exit(code ?? 1);
});
