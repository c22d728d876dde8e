// What every measurement module gets and gives back: bench/run.ts runs the chosen ones in order,
// prints their rows as one table and keeps their raw numbers in bench/results.json.
import type { Row } from './stats.js';

export interface BenchOptions {
  /** Fewer trials and shorter load runs: a smoke run of the whole bench in well under a minute. */
  quick: boolean;
  /** Rebuild the image (cold and cached) instead of reading what the last build left. */
  image: boolean;
  /** A local cluster's state directory (`npm run cluster -- up --state-dir`), read for boot times. */
  clusterState: string;
  /** Progress on stderr, so the table on stdout stays clean. */
  log: (line: string) => void;
}

export interface BenchResult {
  rows: Row[];
  /** Raw samples and settings, for results.json: enough to recompute every row. */
  data: Record<string, unknown>;
  /** How the measurement was made, in a sentence or two (fairness choices included). */
  method: string;
}

export interface Bench {
  name: string;
  run(opts: BenchOptions): Promise<BenchResult>;
}
