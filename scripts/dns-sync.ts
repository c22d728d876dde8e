// npm run dns-sync -- [--domain k8s | --zone-id Z123] [--cluster NAME ...] [--ttl 30] [--watch SECONDS] [--dry-run] [--region R]
import { checkAwsSetup, makeClients } from './cloud/aws.js';
import { parseFlags, runMain, UsageError } from './cloud/cli.js';
import { syncDns } from './cloud/dns-sync.js';
import { watch } from './cloud/watch.js';

const USAGE =
  'usage: npm run dns-sync -- [--domain DOMAIN | --zone-id ID] [--cluster NAME ...] [--ttl SECONDS] [--watch SECONDS] [--dry-run] [--region REGION]';

function positiveInt(flag: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`${flag} expects a positive whole number of seconds, got ${JSON.stringify(text)}`);
  return n;
}

runMain(async () => {
  const { values } = parseFlags(
    process.argv.slice(2),
    {
      domain: { type: 'string' },
      'zone-id': { type: 'string' },
      cluster: { type: 'string', multiple: true },
      ttl: { type: 'string' },
      watch: { type: 'string' },
      'dry-run': { type: 'boolean' },
      region: { type: 'string' },
    },
    USAGE,
  );
  if (values.domain !== undefined && values['zone-id'] !== undefined) throw new UsageError(`--domain and --zone-id are exclusive\n${USAGE}`);
  const ttl = positiveInt('--ttl', values.ttl, 30);
  const watchSeconds = values.watch === undefined ? undefined : positiveInt('--watch', values.watch, 0);
  const clients = makeClients(values.region);
  await checkAwsSetup(clients.ec2);
  await checkAwsSetup(clients.route53);
  const once = () =>
    syncDns({
      ...clients,
      ...(values.domain !== undefined && { domain: values.domain }),
      ...(values['zone-id'] !== undefined && { zoneId: values['zone-id'] }),
      ...(values.cluster && { clusters: values.cluster }),
      ttl,
      dryRun: values['dry-run'] ?? false,
    });
  if (watchSeconds === undefined) {
    await once();
    return;
  }
  const stop = new AbortController();
  process.once('SIGINT', () => stop.abort());
  process.once('SIGTERM', () => stop.abort());
  await watch(once, watchSeconds * 1000, stop.signal, (line) => console.error(line));
});
