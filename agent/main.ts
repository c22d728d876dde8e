// Entry point of the bundled agent (dist/agent.js): signals in, exit code out. CJS bundle, so no
// top-level await: everything runs inside main().
import { writeSync } from 'node:fs';
import pkg from '../package.json' with { type: 'json' };
import { cli } from './cli.js';

/**
 * A line to fd 1 or 2 with a plain write: process.stdout and stderr are streams whose modules cost about
 * 10M instructions to load, a tenth of `agent status` under TCG. The stream takes over what a
 * non-blocking descriptor refuses (EAGAIN), so nothing is lost.
 */
function lineWriter(fd: 1 | 2): (line: string) => void {
  return (line) => {
    const data = Buffer.from(`${line}\n`);
    let done = 0;
    try {
      while (done < data.length) done += writeSync(fd, data, done);
    } catch {
      (fd === 1 ? process.stdout : process.stderr).write(data.subarray(done));
    }
  };
}

async function main(): Promise<void> {
  const stop = new AbortController();
  // SIGTERM (systemctl stop) and SIGINT end waits promptly; run.ts records "interrupted".
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => stop.abort());
  const code = await cli(process.argv.slice(2), {
    out: lineWriter(1),
    err: lineWriter(2),
    signal: stop.signal,
    version: pkg.version,
  });
  // Explicit exit: a half-open socket from an interrupted probe must not keep the process alive.
  process.exit(code);
}

// cli() reports its own errors (command-line.ts); this is the last line of defence, still without a stack trace.
main().catch((err: unknown) => {
  process.stderr.write(`agent: unexpected error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
