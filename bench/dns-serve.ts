// Child process of the DNS bench: the metal DNS server (scripts/metal/dns-server.ts) alone in its own
// process, as `metal serve` runs it, so the load generator never shares its event loop.
// Usage: dns-serve HOSTS_JSON (name -> addresses). Prints the port, then serves until SIGTERM.
import * as fs from 'node:fs';
import { startDnsServer } from '../scripts/metal/dns-server.js';

async function main(): Promise<void> {
  const records = new Map(Object.entries(JSON.parse(fs.readFileSync(process.argv[2] ?? '', 'utf8')) as Record<string, string[]>));
  const zone = { origin: 'demo.k8s', records, ttl: 5 };
  const server = await startDnsServer({ zone: () => zone });
  process.stdout.write(`${server.port}\n`);
  process.on('SIGTERM', () => void server.close().then(() => process.exit(0)));
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
