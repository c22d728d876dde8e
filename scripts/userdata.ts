// npm run -s userdata -- --role minion --cluster demo [--domain k8s] [--masters N] [--set KEY=VALUE ...] [--secrets DIR] [--out FILE]
import { writeFile } from 'node:fs/promises';
import { parseCommandLine, runMain } from '../agent/command-line.js';
import { USER_DATA_FLAGS, userDataFromFlags } from './cloud/cli.js';

const USAGE = `usage: npm run -s userdata -- --role master|minion --cluster NAME [--domain DOMAIN] [--masters N] [--set KEY=VALUE ...] [--secrets DIR] [--out FILE]
  (-s keeps npm's banner out of the user-data on stdout)
Exit 0 written, 1 the output could not be written, 2 usage error or bad input (the message names the flag, value or file).`;

runMain({ name: 'userdata', usage: USAGE }, async (argv) => {
  const { values } = parseCommandLine(argv, { ...USER_DATA_FLAGS, out: { type: 'string' } });
  const { userData } = await userDataFromFlags(values);
  if (values.out === undefined) process.stdout.write(userData);
  // 0600: with --secrets the user-data holds private keys.
  else await writeFile(values.out, userData, { mode: 0o600 });
});
