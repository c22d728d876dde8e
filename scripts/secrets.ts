// npm run secrets -- --cluster NAME --out DIR [--domain k8s] [--service-cidr 10.96.0.0/12]
//   [--days 365] [--ca-days 3650] [--token-days 30]
// Makes the cluster's CAs, certificates, keys, admin kubeconfig and bootstrap token in DIR (keys 0600);
// a re-run keeps what is there and makes only what is missing. Prints one line per file, never a secret.
import { parseArgs } from 'node:util';
import { DEFAULT_DNS_DOMAIN, isDnsLabel, isDnsName } from '../agent/dns-names.js';
import { InputError, describeError } from '../agent/errors.js';
import { DEFAULT_SERVICE_CIDR, parseServiceCidr } from '../agent/service-cidr.js';
import { makeSecrets } from './secrets/generate.js';

const USAGE =
  'usage: npm run secrets -- --cluster NAME --out DIR [--domain k8s] [--service-cidr 10.96.0.0/12] [--days 365] [--ca-days 3650] [--token-days 30]';

function positiveInt(flag: string, text: string): number {
  if (!/^[1-9]\d{0,5}$/.test(text)) throw new InputError(`--${flag} must be a whole number of days`, { value: text });
  return Number(text);
}

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        cluster: { type: 'string' },
        out: { type: 'string' },
        domain: { type: 'string', default: DEFAULT_DNS_DOMAIN },
        'service-cidr': { type: 'string', default: DEFAULT_SERVICE_CIDR },
        days: { type: 'string', default: '365' },
        'ca-days': { type: 'string', default: '3650' },
        'token-days': { type: 'string', default: '30' },
        help: { type: 'boolean' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!values.cluster || !values.out) {
    console.error(`--cluster and --out are required\n${USAGE}`);
    return 2;
  }
  try {
    if (!isDnsLabel(values.cluster)) {
      throw new InputError('--cluster must be an RFC 1123 label (letters, digits, -)', { value: values.cluster });
    }
    if (!isDnsName(values.domain)) throw new InputError('--domain must be a DNS name', { value: values.domain });
    const result = await makeSecrets({
      cluster: values.cluster.toLowerCase(),
      domain: values.domain.toLowerCase().replace(/\.$/, ''),
      service: parseServiceCidr(values['service-cidr'], { file: '--service-cidr' }),
      out: values.out,
      certDays: positiveInt('days', values.days),
      caDays: positiveInt('ca-days', values['ca-days']),
      tokenDays: positiveInt('token-days', values['token-days']),
    });
    for (const name of result.created) console.log(`created ${name}`);
    for (const name of result.kept) console.log(`kept ${name}`);
    console.log(`secrets in ${values.out}: ${result.created.length} created, ${result.kept.length} kept`);
    return 0;
  } catch (err) {
    console.error(`secrets: ${describeError(err)}`);
    return 1;
  }
}

process.exitCode = await main();
