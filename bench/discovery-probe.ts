// Child process of the discovery bench: the agent's own peer lookup (agent/peers.ts lookupPeers: UDP,
// TCP after truncation, then the pure plan) repeated against one nameserver, with this process's
// memory around it. Prints one JSON line. Usage: discovery-probe HOST:PORT NAME SELF REPEATS
import { performance } from 'node:perf_hooks';
import { parseNameserver } from '../agent/dns.js';
import { lookupPeers } from '../agent/peers.js';

async function main(): Promise<void> {
  const [ns = '', name = '', self = '', repeats = '5'] = process.argv.slice(2);
  const nameserver = parseNameserver(ns);
  const local = new Set([self]);
  const signal = new AbortController().signal;
  const mb = (bytes: number) => Math.round((bytes / 1048576) * 10) / 10;
  const before = process.memoryUsage();
  const ms: number[] = [];
  let last;
  for (let i = 0; i <= Number(repeats); i++) {
    const started = performance.now();
    last = await lookupPeers(name, nameserver, local, 5000, signal);
    // The first look pays for loading and JIT: it is reported apart, not in the spread.
    ms.push(performance.now() - started);
  }
  const after = process.memoryUsage();
  const outcome =
    last?.kind === 'ok'
      ? { kind: 'ok', peers: last.view.peers.length, members: last.view.members, transport: last.transport }
      : { kind: last?.kind, error: last?.kind === 'dns-down' ? last.error : undefined };
  process.stdout.write(
    `${JSON.stringify({
      firstMs: ms[0],
      ms: ms.slice(1),
      outcome,
      rssBeforeMb: mb(before.rss),
      rssAfterMb: mb(after.rss),
      heapUsedDeltaMb: mb(after.heapUsed - before.heapUsed),
      maxRssMb: mb(process.resourceUsage().maxRSS * 1024),
    })}\n`,
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
