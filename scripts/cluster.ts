// `npm run cluster -- up|status|down|start|stop`: a local cluster from the golden image. VMs PXE-boot
// from the metal server (DNS + iPXE + NoCloud) on loopback, cloud-init writes their role files, and the
// agent baked into the image does the rest; we only power machines on and watch them over SSH.
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseCommandLine, runMain, UsageError, wholeNumber } from '../agent/command-line.js';
import { parseSwap } from './cluster/components.js';
import { watchCommand } from './web/watch-command.js';
import { DEFAULT_COMPONENTS, DEFAULT_MANIFEST, DEFAULT_SWAPS, down, startNodes, status, stopNodes, up, type Log, type UpOptions } from './cluster/lifecycle.js';


const USAGE = `usage: npm run cluster -- up [--masters 1] [--minions 2] [--memory 2560] [--cluster local] [--state-dir .cache/cluster]
                  [--image DIR | --components-dir DIR --manifest FILE [--component NAME=FILE]...] [--accel auto|kvm|tcg] [--timeout SECONDS] [--defer NODE,...] [--web [--port N]]
       npm run cluster -- watch [--state-dir DIR | --hosts HOST[:PORT],... --key FILE --known-hosts FILE] [--web [--port N] [--listen ADDR]]
       npm run cluster -- status|down [--state-dir DIR]
       npm run cluster -- start|stop NODE... [--state-dir DIR]
Exit 0 every node ready (up, status, start) or done (down, stop), 1 a node is not ready or a step failed, 2 usage error.`;

const OPTIONS = {
  'state-dir': { type: 'string', default: '.cache/cluster' },
  masters: { type: 'string', default: '1' },
  minions: { type: 'string', default: '2' },
  memory: { type: 'string', default: '2560' },
  cluster: { type: 'string', default: 'local' },
  image: { type: 'string' },
  'components-dir': { type: 'string', default: DEFAULT_COMPONENTS },
  manifest: { type: 'string', default: DEFAULT_MANIFEST },
  component: { type: 'string', multiple: true },
  accel: { type: 'string', default: 'auto' },
  timeout: { type: 'string', default: '1800' },
  defer: { type: 'string', default: '' },
  web: { type: 'boolean', default: false },
  port: { type: 'string', default: '0' },
} as const;
const COMMANDS = ['up', 'status', 'down', 'start', 'stop'];

export async function main(argv: string[], log: Log = (s) => console.log(s)): Promise<number> {
  const [command, ...rest] = argv;
  if (command === 'watch') return watchCommand(rest, log);
  // `cluster --help` and `cluster --bogus`: a first argument that is a flag is judged as one.
  const { values, positionals } = parseCommandLine(command?.startsWith('-') ? argv : rest, OPTIONS, { positionals: true });
  if (!command || !COMMANDS.includes(command)) throw new UsageError(command ? `unknown command ${JSON.stringify(command)}` : 'no command given');
  if (positionals.length && command !== 'start' && command !== 'stop') throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const stateDir = values['state-dir'];
  const timeoutMs = wholeNumber('--timeout', values.timeout, { min: 0, unit: 'seconds' }) * 1000;
  switch (command) {
    case 'up': {
      const accel = values.accel;
      if (!['auto', 'kvm', 'tcg'].includes(accel)) throw new UsageError(`--accel must be auto, kvm or tcg, got ${JSON.stringify(accel)}`);
      return up(
        {
          stateDir,
          masters: wholeNumber('--masters', values.masters, { min: 1 }),
          minions: wholeNumber('--minions', values.minions, { min: 0 }),
          memoryMb: wholeNumber('--memory', values.memory, { min: 256, unit: 'MiB' }),
          cluster: values.cluster,
          ...(values.image !== undefined && { image: values.image }),
          componentsDir: path.resolve(values['components-dir']),
          manifest: path.resolve(values.manifest),
          // The default swap belongs to the default doubles; your own components directory is taken as it is.
          swaps: (values.component ?? (values['components-dir'] === DEFAULT_COMPONENTS ? DEFAULT_SWAPS : [])).map(parseSwap),
          accel: accel as UpOptions['accel'],
          timeoutMs,
          defer: values.defer.split(',').filter(Boolean),
          ...(values.web && { web: { port: wholeNumber('--port', values.port, { min: 0, max: 65535 }) } }),
        },
        log,
      );
    }
    case 'status':
      return status(stateDir, log);
    case 'down':
      return down(stateDir, log);
    case 'start':
      return startNodes(stateDir, positionals, timeoutMs, log);
    default:
      return stopNodes(stateDir, positionals, log);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  runMain({ name: 'cluster', usage: USAGE }, (argv) => main(argv));
}
