// npm run userdata -- --role minion --cluster demo [--domain k8s] [--set KEY=VALUE ...] [--secrets DIR] [--out FILE]
import { writeFile } from 'node:fs/promises';
import { renderUserData } from '../cloud-init/render.js';
import type { Role } from '../agent/dns-names.js';
import { parseFlags, parsePairs, runMain, UsageError } from './cloud/cli.js';

const USAGE =
  'usage: npm run userdata -- --role master|minion --cluster NAME [--domain DOMAIN] [--set KEY=VALUE ...] [--secrets DIR] [--out FILE]';

runMain(async () => {
  const { values } = parseFlags(
    process.argv.slice(2),
    {
      role: { type: 'string' },
      cluster: { type: 'string' },
      domain: { type: 'string' },
      set: { type: 'string', multiple: true },
      secrets: { type: 'string' },
      out: { type: 'string' },
    },
    USAGE,
  );
  if (!values.role || !values.cluster) throw new UsageError(`--role and --cluster are required\n${USAGE}`);
  const text = await renderUserData({
    role: values.role as Role,
    cluster: values.cluster,
    ...(values.domain !== undefined && { domain: values.domain }),
    vars: parsePairs(values.set),
    ...(values.secrets !== undefined && { secretsDir: values.secrets }),
  });
  if (values.out === undefined) process.stdout.write(text);
  // 0600: with --secrets the user-data holds private keys.
  else await writeFile(values.out, text, { mode: 0o600 });
});
