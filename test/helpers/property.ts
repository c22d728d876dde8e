// One way to assert a property in tap: fast-check's verdict becomes an assertion that names the
// counterexample and the seed when it fails. The seed is FAST_CHECK_SEED's alone (fast-check-seed.mjs).
import fc from 'fast-check';
import type { Test } from 'tap';

export async function holds<Ts extends [unknown, ...unknown[]]>(
  t: Test,
  what: string,
  property: fc.IProperty<Ts> | fc.IAsyncProperty<Ts>,
  params: fc.Parameters<Ts> = {},
): Promise<void> {
  const details = await fc.check(property, params);
  if (details.interrupted) t.comment(`${what}: ${details.numRuns} cases tried (stopped at the time limit)`);
  t.notOk(details.failed, (details.failed && fc.defaultReportMessage(details)) || `${what} (${details.numRuns} cases)`);
}
