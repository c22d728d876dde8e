// `npm run bench [-- --only NAME[,NAME]] [--quick] [--image] [--cluster-state DIR]`: runs the measurements, prints one
// table (Markdown, so it pastes into the README as is) and writes bench/results.json (git-ignored, so a run
// rewrites no tracked file) with the raw numbers and the machine they came from. A partial run (--only)
// replaces only its benches' entries.
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseCommandLine, runMain, UsageError } from '../agent/command-line.js';
import { agentOnNode } from './agent-node.js';
import { removeBundles } from './child.js';
import type { Bench, BenchResult } from './context.js';
import { discovery } from './discovery.js';
import { dnsServer } from './dns-qps.js';
import { dnsSync } from './dns-sync.js';
import { image } from './image.js';
import { REPO } from './node-root.js';
import { reaction } from './reaction.js';
import { benchReport } from '../scripts/web/bench-report.js';
import { formatTable, type Row } from './stats.js';

const BENCHES: readonly Bench[] = [reaction, discovery, dnsServer, agentOnNode, image, dnsSync];
const RESULTS = path.join(REPO, 'bench', 'results.json');
/** The same results as one self-contained page with charts (scripts/web/bench-report.ts). */
const REPORT = path.join(REPO, 'bench', 'report.html');

export interface Machine {
  nproc: number;
  cpu: string;
  node: string;
  date: string;
  /** 1-minute load average when the bench started and ended: the machine may be shared. */
  load: [number, number];
}

interface Entry extends BenchResult {
  machine: Machine;
  quick: boolean;
  seconds: number;
}

const load1 = () => Math.round((os.loadavg()[0] ?? 0) * 100) / 100;

function machineNow(): Machine {
  return { nproc: os.availableParallelism(), cpu: os.cpus()[0]?.model ?? 'unknown', node: process.version, date: new Date().toISOString(), load: [load1(), load1()] };
}

const USAGE = `usage: npm run bench -- [--only ${BENCHES.map((b) => b.name).join(',')}] [--quick] [--image] [--cluster-state DIR]
Exit 0 every bench measured, 1 one could not be measured (its row says why), 2 usage error.`;

async function main(argv: string[]): Promise<number> {
  const { values } = parseCommandLine(argv, {
    only: { type: 'string' },
    quick: { type: 'boolean' },
    image: { type: 'boolean' },
    'cluster-state': { type: 'string', default: '.cache/cluster' },
  });
  const only = values.only?.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = only?.filter((n) => !BENCHES.some((b) => b.name === n)) ?? [];
  if (unknown.length) throw new UsageError(`--only: unknown bench ${unknown.map((n) => JSON.stringify(n)).join(', ')}`);
  const chosen = BENCHES.filter((b) => !only || only.includes(b.name));
  const opts = { quick: !!values.quick, image: !!values.image, clusterState: path.resolve(REPO, values['cluster-state']), log: (line: string) => process.stderr.write(`${line}\n`) };

  const previous = await fs.readFile(RESULTS, 'utf8').then(
    (t) => JSON.parse(t) as { benches?: Record<string, Entry> },
    () => ({ benches: {} as Record<string, Entry> }),
  );
  const benches: Record<string, Entry> = only ? { ...previous.benches } : {};
  const rows: Row[] = [];
  let failed = false;
  for (const bench of chosen) {
    const machine = machineNow();
    const started = Date.now();
    let result: BenchResult;
    try {
      result = await bench.run(opts);
    } catch (err) {
      failed = true;
      const why = err instanceof Error ? err.message : String(err);
      result = { rows: [{ bench: bench.name, what: 'not measured', result: `error: ${why.split('\n')[0]}`, goal: '', met: null }], data: { error: why }, method: '' };
    }
    machine.load[1] = load1();
    benches[bench.name] = { ...result, machine, quick: opts.quick, seconds: Math.round((Date.now() - started) / 100) / 10 };
    rows.push(...result.rows);
    opts.log(`${bench.name}: done in ${benches[bench.name]?.seconds} s (load ${machine.load[0]} -> ${machine.load[1]})`);
  }
  await removeBundles();
  const m = machineNow();
  process.stdout.write(`${formatTable(rows)}\n\n${m.nproc} x ${m.cpu}, Node ${m.node}, ${m.date}, load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}\n`);
  const ordered = Object.fromEntries(BENCHES.flatMap((b) => (benches[b.name] ? [[b.name, benches[b.name]]] : [])));
  await fs.writeFile(RESULTS, `${JSON.stringify({ benches: ordered }, null, 2)}\n`);
  await fs.writeFile(REPORT, benchReport(ordered as Record<string, Entry>));
  process.stderr.write(`report: ${REPORT}\n`);
  return failed ? 1 : 0;
}

runMain({ name: 'bench', usage: USAGE }, main);
