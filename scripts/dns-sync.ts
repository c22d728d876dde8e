// npm run dns-sync -- [--domain k8s | --zone-id Z123] [--cluster NAME ...] [--ttl 30] [--watch SECONDS [--pid-file FILE]] [--dry-run] [--region R]
// Runs as dist/dns-sync.js (npm run build): with --watch it is one long-running process that signals reach directly.
import { parseCommandLine, runMain, UsageError, wholeNumber } from '../agent/command-line.js';
import { checkAwsSetup, makeClients } from './cloud/aws.js';
import { errorLine } from './cloud/cli.js';
import { claimPidFile } from './daemon/pid-file.js';
import { syncDns } from './cloud/route53-sync.js';
import { repeatUntilStopped } from './cloud/repeat-until-stopped.js';

const USAGE =
  'usage: npm run dns-sync -- [--domain DOMAIN | --zone-id ID] [--cluster NAME ...] [--ttl SECONDS] [--watch SECONDS [--pid-file FILE]] [--dry-run] [--region REGION]\n' +
  '  --pid-file: where --watch writes its PID (default dns-sync.pid); stop it with kill -TERM $(cat FILE)\n' +
  'Exit 0 in sync (or stopped by SIGINT/SIGTERM with --watch), 1 AWS refused or bad input, 2 usage error.';

const seconds = (flag: string, text: string) => wholeNumber(flag, text, { min: 1, unit: 'seconds' });

runMain({ name: 'dns-sync', usage: USAGE, describe: errorLine }, async (argv) => {
  const { values } = parseCommandLine(
    argv,
    {
      domain: { type: 'string' },
      'zone-id': { type: 'string' },
      cluster: { type: 'string', multiple: true },
      ttl: { type: 'string' },
      watch: { type: 'string' },
      'pid-file': { type: 'string' },
      'dry-run': { type: 'boolean' },
      region: { type: 'string' },
    },
  );
  if (values.domain !== undefined && values['zone-id'] !== undefined) throw new UsageError('--domain and --zone-id are exclusive');
  const ttl = seconds('--ttl', values.ttl ?? '30');
  const watchSeconds = values.watch === undefined ? undefined : seconds('--watch', values.watch);
  if (values['pid-file'] !== undefined && watchSeconds === undefined) throw new UsageError('--pid-file goes with --watch (a single pass ends by itself)');
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
  const release = await claimPidFile(values['pid-file'] ?? 'dns-sync.pid', 'dns-sync --watch');
  const stop = new AbortController();
  process.once('SIGINT', () => stop.abort());
  process.once('SIGTERM', () => stop.abort());
  try {
    await repeatUntilStopped(once, watchSeconds * 1000, stop.signal, (line) => console.error(line));
  } finally {
    await release();
  }
});
