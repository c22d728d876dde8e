// Entry point of the bundled agent (dist/agent.js): signals in, exit code out. CJS bundle, so no
// top-level await: everything runs inside main().
import pkg from '../package.json' with { type: 'json' };
import { cli } from './cli.js';

async function main(): Promise<void> {
  const stop = new AbortController();
  // SIGTERM (systemctl stop) and SIGINT end waits promptly; run.ts records "interrupted".
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => stop.abort());
  const code = await cli(process.argv.slice(2), {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
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
