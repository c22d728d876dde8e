// `--watch`: run a pass, sleep, repeat until aborted. An AWS hiccup in one pass is logged and the next
// pass tries again; bad input (a zone that does not exist, a bad flag) will not fix itself and stops it.
import { setTimeout as sleep } from 'node:timers/promises';
import { InputError } from '../../agent/errors.js';
import { errorLine } from './cli.js';

export async function repeatUntilStopped(pass: () => Promise<unknown>, everyMs: number, signal: AbortSignal, logError: (line: string) => void): Promise<void> {
  while (!signal.aborted) {
    try {
      await pass();
    } catch (err) {
      if (err instanceof InputError) throw err;
      logError(`error: ${errorLine(err)} (next pass in ${Math.round(everyMs / 1000)} s)`);
    }
    await sleep(everyMs, undefined, { signal }).catch(() => undefined);
  }
}
