// npm run secrets -- --cluster NAME [--out DIR] [--domain k8s] [--service-cidr 10.96.0.0/12]
//   [--days 365] [--ca-days 3650] [--token-days 30]
// Makes the cluster's CAs, certificates, keys, admin kubeconfig and bootstrap token in DIR (keys 0600);
// a re-run keeps what is there and makes only what is missing. Prints one line per file, never a secret.
// DIR defaults to the user's data directory, outside any work tree; a DIR git would track is refused.
import { parseCommandLine, required, runMain, UsageError, wholeNumber } from '../agent/command-line.js';
import { DEFAULT_DNS_DOMAIN, isDnsLabel, isDnsName } from '../agent/dns-names.js';
import { DEFAULT_SERVICE_CIDR, parseServiceCidr } from '../agent/service-cidr.js';
import { makeSecrets } from './secrets/generate.js';
import { defaultSecretsDir, refuseTrackedPath } from './secrets/location.js';

/** The default folder as the user knows it: under ~ when it is in their home. */
function shownDefault(): string {
  const dir = defaultSecretsDir('NAME');
  const home = process.env.HOME;
  return home && home !== '/' && dir.startsWith(`${home}/`) ? `~${dir.slice(home.length)}` : dir;
}

const USAGE = `usage: npm run secrets -- --cluster NAME [--out DIR] [--domain k8s] [--service-cidr 10.96.0.0/12] [--days 365] [--ca-days 3650] [--token-days 30]
  --out DIR   default ${shownDefault()} ($XDG_DATA_HOME/kubeseed/NAME when set);
              a folder inside a git work tree must be git-ignored
Exit 0 done, 1 the secrets could not be made (the message names the file), 2 usage error.`;

const days = (flag: string, text: string) => wholeNumber(flag, text, { min: 1, max: 999_999, unit: 'days' });

runMain({ name: 'secrets', usage: USAGE }, async (argv) => {
  const { values } = parseCommandLine(argv, {
    cluster: { type: 'string' },
    out: { type: 'string' },
    domain: { type: 'string', default: DEFAULT_DNS_DOMAIN },
    'service-cidr': { type: 'string', default: DEFAULT_SERVICE_CIDR },
    days: { type: 'string', default: '365' },
    'ca-days': { type: 'string', default: '3650' },
    'token-days': { type: 'string', default: '30' },
  });
  const cluster = required(values.cluster, '--cluster');
  if (!isDnsLabel(cluster)) throw new UsageError(`--cluster must be an RFC 1123 label (letters, digits, -), got ${JSON.stringify(cluster)}`);
  if (!isDnsName(values.domain)) throw new UsageError(`--domain must be a DNS name, got ${JSON.stringify(values.domain)}`);
  const spec = {
    cluster: cluster.toLowerCase(),
    domain: values.domain.toLowerCase().replace(/\.$/, ''),
    service: parseServiceCidr(values['service-cidr'], { file: '--service-cidr' }),
    certDays: days('--days', values.days),
    caDays: days('--ca-days', values['ca-days']),
    tokenDays: days('--token-days', values['token-days']),
  };
  const out = values.out ?? defaultSecretsDir(spec.cluster);
  await refuseTrackedPath(out, '--out');
  const result = await makeSecrets({ ...spec, out });
  for (const name of result.created) console.log(`created ${name}`);
  for (const name of result.kept) console.log(`kept ${name}`);
  console.log(`secrets in ${out}: ${result.created.length} created, ${result.kept.length} kept`);
});
