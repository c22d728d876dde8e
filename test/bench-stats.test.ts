// The arithmetic behind every benchmark figure: percentiles, medians, spreads, ratios and the table.
import t from 'tap';
import fc from 'fast-check';
import { formatSpread, formatTable, median, percentile, ratio, round3, spread } from '../bench/stats.js';
import { holds } from './helpers/property.js';

t.test('median: middle sample, or the mean of the two middle ones, whatever the order', async (t) => {
  t.equal(median([3, 1, 2]), 2);
  t.equal(median([4, 1, 3, 2]), 2.5);
  t.equal(median([7]), 7);
  t.throws(() => median([]), /no samples/);
});

t.test('p95 is nearest-rank: one of the samples, the 19th of 20', async (t) => {
  const twenty = Array.from({ length: 20 }, (_, i) => 20 - i); // 20..1, unsorted on purpose
  t.equal(percentile(twenty, 95), 19);
  t.equal(percentile(twenty, 100), 20);
  t.equal(percentile(twenty, 0), 1);
  t.equal(percentile([5, 1], 95), 5);
  t.throws(() => percentile([1], 101), /outside/);
  await holds(
    t,
    'a percentile is a member with enough values at or below it',
    fc.property(fc.array(fc.double({ noNaN: true, min: -1e6, max: 1e6 }), { minLength: 1 }), fc.integer({ min: 0, max: 100 }), (xs, p) => {
      const v = percentile(xs, p);
      const below = xs.filter((x) => x <= v).length;
      return xs.includes(v) && below >= Math.ceil((p / 100) * xs.length);
    }),
  );
});

t.test('spread: median within min..max, p95 at least the median', async (t) => {
  t.same(spread([0.2, 0.9, 0.4, 0.3]), { n: 4, median: 0.35, min: 0.2, max: 0.9, p95: 0.9 });
  await holds(
    t,
    'min <= median <= p95 <= max',
    fc.property(fc.array(fc.double({ noNaN: true, min: 0, max: 1e6 }), { minLength: 1 }), (xs) => {
      const s = spread(xs);
      return s.min <= s.median && s.median <= s.max && s.median <= s.p95 && s.p95 <= s.max;
    }),
  );
});

t.test('ratio and rounding: 3 significant digits, no exponent', async (t) => {
  t.equal(ratio(3, 0.5), 6);
  t.equal(ratio(1, 0), Number.POSITIVE_INFINITY);
  t.equal(round3(1234.5), 1235);
  t.equal(round3(0.0012345), 0.00123);
  t.equal(round3(2.345678), 2.35);
  t.equal(formatSpread({ n: 20, median: 0.41234, min: 0.2, max: 0.98765, p95: 0.9 }, 's', true), '0.412 s (p95 0.9, 0.2-0.988, n=20)');
});

t.test('table: aligned Markdown, pipes in cells escaped, unmet goals stand out', async (t) => {
  const table = formatTable([
    { bench: 'a', what: 'x|y', result: '1 s', goal: '< 2 s', met: true },
    { bench: 'bb', what: 'z', result: '3 s', goal: '< 2 s', met: false },
    { bench: 'c', what: 'w', result: 'n/a', goal: '', met: null },
  ]);
  const lines = table.split('\n');
  t.equal(lines.length, 5);
  t.equal(new Set(lines.map((l) => l.length)).size, 1, 'every line as wide');
  t.match(lines[2], /^\| a +\| x\\\|y \| 1 s +\| < 2 s \| yes \|$/);
  t.match(lines[3], /\| NO  \|$/);
  t.match(lines[4], /\| +\|$/);
});
