// `npm run metal -- serve|dnsmasq-conf|check`: bare-metal PXE boot and the cluster's DNS, from one inventory.
import { parseArgs } from 'node:util';
import { describeError } from '../agent/errors.js';
import { renderDnsmasqConf } from './metal/dnsmasq-conf.js';
import { loadInventory } from './metal/inventory.js';
import { startMetalServer } from './metal/server.js';

const USAGE = `usage:
  metal serve --inventory FILE --image DIR [--listen ADDR] [--advertise ADDR] [--dns-port N] [--http-port N]
              [--secrets DIR] [--kernel-arg ARG]...
  metal dnsmasq-conf --inventory FILE --server-address ADDR [--interface IF] [--http-port N]
  metal check --inventory FILE`;

class UsageError extends Error {}

function port(text: string | undefined, flag: string, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > 65535) throw new UsageError(`${flag} must be a port number 0..65535, got ${JSON.stringify(text)}`);
  return n;
}

function required(value: string | undefined, flag: string): string {
  if (!value) throw new UsageError(`${flag} is required`);
  return value;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const { values } = parseArgs({
    args: rest,
    strict: true,
    options: {
      inventory: { type: 'string' },
      image: { type: 'string' },
      listen: { type: 'string' },
      advertise: { type: 'string' },
      'dns-port': { type: 'string' },
      'http-port': { type: 'string' },
      secrets: { type: 'string' },
      'kernel-arg': { type: 'string', multiple: true },
      interface: { type: 'string' },
      'server-address': { type: 'string' },
    },
  });
  const inventoryFile = required(values.inventory, '--inventory');

  if (command === 'check') {
    const inv = await loadInventory(inventoryFile);
    const count = (role: string) => inv.machines.filter((m) => m.role === role).length;
    console.log(`${inventoryFile}: ok: cluster ${inv.cluster}.${inv.domain}, ${count('master')} master(s), ${count('minion')} minion(s)`);
    return 0;
  }

  if (command === 'dnsmasq-conf') {
    const inv = await loadInventory(inventoryFile);
    process.stdout.write(
      renderDnsmasqConf(inv, {
        interface: values.interface ?? 'eth0',
        serverAddress: required(values['server-address'], '--server-address'),
        httpPort: port(values['http-port'], '--http-port', 8080),
      }),
    );
    return 0;
  }

  if (command === 'serve') {
    const server = await startMetalServer({
      inventory: inventoryFile,
      imageDir: required(values.image, '--image'),
      listen: values.listen ?? '127.0.0.1',
      ...(values.advertise !== undefined && { advertise: values.advertise }),
      dnsPort: port(values['dns-port'], '--dns-port', 53),
      httpPort: port(values['http-port'], '--http-port', 8080),
      extraKernelArgs: values['kernel-arg'] ?? [],
      ...(values.secrets !== undefined && { secretsDir: values.secrets }),
    });
    // A bad new inventory is logged by reload() and the old one keeps being served.
    process.on('SIGHUP', () => void server.reload().catch(() => {}));
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    await server.close();
    console.log('metal stopped');
    return 0;
  }

  throw new UsageError(command === undefined ? 'a command is required' : `unknown command ${JSON.stringify(command)}`);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError || (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`metal: ${(err as Error).message}\n${USAGE}`);
      process.exit(2);
    }
    console.error(`metal: ${describeError(err)}`);
    process.exit(1);
  },
);
