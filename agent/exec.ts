// Running a program for the Host (agent/host.ts): directly, never through a shell. Its own module so that
// child_process (and the net and dgram modules it loads) is evaluated only when the agent first runs one.
import { execFile } from 'node:child_process';
import type { ExecResult } from './host.js';

export function execDirect(cmd: string, args: string[], opts: { env: NodeJS.ProcessEnv; timeoutMs: number }): Promise<ExecResult> {
  return new Promise((done) => {
    execFile(cmd, args, { env: opts.env, timeout: opts.timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 127) : 0;
      done({ code, stdout: String(stdout), stderr: String(stderr || (err && !stderr ? err.message : '')) });
    });
  });
}
