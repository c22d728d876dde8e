// npm run -s userdata -- --role minion --cluster demo [--domain k8s] [--masters N] [--set KEY=VALUE ...] [--secrets DIR] [--out FILE]
import { writeFile } from 'node:fs/promises';
import { parseCommandLine, runMain } from '../agent/command-line.js';
import { WEAVE_PASSWORD_KEY } from '../agent/weave-password.js';
import { USER_DATA_FLAGS, userDataFromFlags } from './cloud/cli.js';
import { refuseTrackedFile } from './secrets/location.js';

const USAGE = `usage: npm run -s userdata -- --role master|minion --cluster NAME [--domain DOMAIN] [--masters N] [--set KEY=VALUE ...] [--secrets DIR] [--out FILE]
  (-s keeps npm's banner out of the user-data on stdout)
Exit 0 written, 1 the output could not be written (or, holding secrets, would be tracked by git), 2 usage error or bad input (the message names the flag, value or file).`;

runMain({ name: 'userdata', usage: USAGE }, async (argv) => {
  const { values } = parseCommandLine(argv, { ...USER_DATA_FLAGS, out: { type: 'string' } });
  const { userData } = await userDataFromFlags(values);
  if (values.out === undefined) return void process.stdout.write(userData);
  // With --secrets the user-data holds private keys, with WEAVE_PASSWORD the overlay's password: never where
  // `git add -A` would commit them, and 0600.
  if (values.secrets !== undefined || values.set?.some((pair) => pair.startsWith(`${WEAVE_PASSWORD_KEY}=`))) {
    await refuseTrackedFile(values.out, `--out ${JSON.stringify(values.out)}`, 'write it outside the work tree or to an ignored name, or leave out --out for stdout');
  }
  await writeFile(values.out, userData, { mode: 0o600 });
});
