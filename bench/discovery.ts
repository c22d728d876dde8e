// 2. Discovery at scale: one minion resolving minions.<cluster>.<domain> and planning its peers
// (agent/peers.ts) when the record lists 10 to 5000 minions, against the metal DNS server on loopback
// (UDP first; past 512 bytes TC, then TCP). The lookups run in a child process of their own (the
// agent's code bundled as the agent is), one per size, so its peak RSS belongs to that size alone.
import { bundled, runTimed } from './child.js';
import type { Bench } from './context.js';
import { formatSpread, spread, type Row } from './stats.js';
import { manyAddresses, startTestDns } from '../test/helpers/dns.js';

const NAME = 'minions.demo.k8s';
const SIZES = [10, 100, 1000, 5000];
/** Header and question of the answer; each A record adds 16 bytes (name as a pointer). */
const HEAD = 12 + NAME.length + 2 + 4;

interface Probe {
  firstMs: number;
  ms: number[];
  outcome: { kind: string; peers?: number; members?: number; transport?: string; error?: string };
  rssBeforeMb: number;
  rssAfterMb: number;
  heapUsedDeltaMb: number;
  maxRssMb: number;
}

export const discovery: Bench = {
  name: 'discovery',
  async run({ quick, log }) {
    const probe = await bundled('discovery-probe');
    const repeats = quick ? 5 : 20;
    const rows: Row[] = [];
    const data: Record<string, unknown> = {};
    for (const size of SIZES) {
      const addresses = manyAddresses(size);
      const dns = await startTestDns('demo.k8s', { [NAME]: addresses });
      let result: Probe | { error: string };
      try {
        const run = await runTimed(process.execPath, [probe, dns.nameserver, NAME, addresses[0] as string, String(repeats)], { timeoutMs: 120_000 });
        result = run.code === 0 ? (JSON.parse(run.stdout) as Probe) : { error: run.stderr.trim() || `exit ${run.code}` };
      } finally {
        await dns.close();
      }
      data[String(size)] = result;
      const goal = size === 1000 ? '< 100 ms' : '';
      if ('error' in result || result.outcome.kind !== 'ok') {
        const why = 'error' in result ? result.error : (result.outcome.error ?? result.outcome.kind);
        const bytes = HEAD + size * 16;
        const limit = bytes > 65535 ? ` (${size} A records need ${Math.round(bytes / 1000)} KB; one DNS message holds 65,535 bytes: ${Math.floor((65535 - HEAD) / 16)} A records)` : '';
        rows.push({ bench: 'discovery', what: `${size} minions: resolve + plan`, result: `fails${limit}: ${why}`, goal, met: goal ? false : null });
        log(`discovery: ${size}: ${why}`);
        continue;
      }
      const s = spread(result.ms);
      const { transport, peers } = result.outcome;
      rows.push({
        bench: 'discovery',
        what: `${size} minions: resolve + plan (${transport}, ${peers} peers)`,
        result: formatSpread(s, 'ms'),
        goal,
        met: goal ? s.median < 100 : null,
      });
      rows.push({
        bench: 'discovery',
        what: `${size} minions: peak RSS of the looking process`,
        result: `${result.maxRssMb} MB (${result.rssBeforeMb} MB before the first look; heap +${result.heapUsedDeltaMb} MB over ${repeats + 1} looks)`,
        goal: '',
        met: null,
      });
      log(`discovery: ${size}: median ${s.median.toFixed(1)} ms, first ${result.firstMs.toFixed(1)} ms`);
    }
    return {
      rows,
      data: { repeats, sizes: data },
      method: `lookupPeers (agent/peers.ts) in a bundled child process against the metal DNS server (test/helpers/dns.ts) in the bench process; ${repeats} timed looks after one warm-up look; peak RSS from the child's process.resourceUsage().maxRSS`,
    };
  },
};
