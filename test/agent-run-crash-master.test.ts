// Crash safety of the shipped bundle for a master: SIGKILL after every side effect of `run --once`, then a
// clean re-run must leave the root byte-identical to an uninterrupted run (see test/helpers/crash-matrix.ts).
import t from 'tap';
import { crashMatrix } from './helpers/crash-matrix.js';

// Two agent runs per crash point: minutes on a loaded 2-core machine, under a minute on an idle one.
t.setTimeout(400_000);

t.test('master: SIGKILL after every side effect of run --once, then a re-run ends byte-identical', (t) => crashMatrix(t, 'master'));
