// Preloaded into every test process (package.json "tap"."node-arg"): property tests draw the same cases on
// every run, so a red CI run is a regression, not an unlucky draw. FAST_CHECK_SEED=random explores new
// cases and =N replays a run; fast-check prints the seed of any failure.
import fc from 'fast-check';

const text = process.env.FAST_CHECK_SEED ?? '20261122';
fc.configureGlobal({ seed: text === 'random' ? Date.now() % 2 ** 31 : Number(text) });
