// npm run -s userdata -- --role minion --cluster demo [--domain k8s] [--set KEY=VALUE ...] [--secrets DIR] [--out FILE]
import { writeFile } from 'node:fs/promises';
import { asUsage, parseCommandLine, required, runMain } from '../agent/command-line.js';
import type { Role } from '../agent/dns-names.js';
import { renderUserData } from '../cloud-init/render.js';
import { parsePairs } from './cloud/cli.js';

const USAGE = `usage: npm run -s userdata -- --role master|minion --cluster NAME [--domain DOMAIN] [--set KEY=VALUE ...] [--secrets DIR] [--out FILE]
  (-s keeps npm's banner out of the user-data on stdout)
Exit 0 written, 1 the output could not be written, 2 usage error or bad input (the message names the flag, value or file).`;

runMain({ name: 'userdata', usage: USAGE }, async (argv) => {
  const { values } = parseCommandLine(argv, {
    role: { type: 'string' },
    cluster: { type: 'string' },
    domain: { type: 'string' },
    set: { type: 'string', multiple: true },
    secrets: { type: 'string' },
    out: { type: 'string' },
  });
  const role = required(values.role, '--role') as Role;
  const cluster = required(values.cluster, '--cluster');
  const vars = parsePairs(values.set);
  // Everything renderUserData refuses is a value or a file named on the command line: a usage error.
  const text = await asUsage(() =>
    renderUserData({
      role,
      cluster,
      ...(values.domain !== undefined && { domain: values.domain }),
      vars,
      ...(values.secrets !== undefined && { secretsDir: values.secrets }),
    }),
  );
  if (values.out === undefined) process.stdout.write(text);
  // 0600: with --secrets the user-data holds private keys.
  else await writeFile(values.out, text, { mode: 0o600 });
});
