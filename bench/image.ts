// 5. The image: build time (cold and cached), artifact sizes, boot-to-ready per role under QEMU.
// By default this reads what the last `npm run image` (out/image/build.json and the files) and the last
// local cluster (<--cluster-state, default .cache/cluster>/cluster.json: poweredOnAt/readyAt per node) left, and says "not
// measured" when they are absent: rebuilding a 1.5 GB root in every bench run would dwarf the rest.
// `--image` times a real build and then a cached one, into a temporary directory (never out/image, which
// another build may be writing), with the components double the local cluster uses. The first build is
// cold only when no Debian base root is cached in out/cache (shared by every output directory, and not
// ours to delete); otherwise it is provision on a copy of that root, and the row says which.
import type { BootTiming } from '../scripts/cluster/timing.js';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { runTimed } from './child.js';
import type { Bench } from './context.js';
import { REPO } from './node-root.js';
import { formatSpread, round3, spread, type Row } from './stats.js';

const FILES = ['vmlinuz', 'initrd', 'initrd-disk', 'disk.qcow2'];

interface BuildRecord {
  seconds: number;
  builtAt: string;
  imageVersion: string;
}

interface NodeState {
  name: string;
  role: string;
  poweredOnAt?: number;
  readyAt?: number;
  timing?: BootTiming;
}

const mb = (bytes: number) => `${round3(bytes / 1048576)} MB`;

async function readJson<T>(file: string): Promise<T | undefined> {
  return fs.readFile(file, 'utf8').then(
    (t) => JSON.parse(t) as T,
    () => undefined,
  );
}

/** Apparent size and the blocks actually used (qcow2 and ext4 images are sparse). */
async function sizes(dir: string): Promise<{ rows: Row[]; data: Record<string, unknown> }> {
  const rows: Row[] = [];
  const data: Record<string, unknown> = {};
  for (const f of FILES) {
    const st = await fs.stat(path.join(dir, f)).catch(() => undefined);
    if (!st) {
      rows.push({ bench: 'image', what: `${f} size`, result: `not measured (no ${path.relative(REPO, path.join(dir, f))})`, goal: '', met: null });
      continue;
    }
    data[f] = { bytes: st.size, onDiskBytes: st.blocks * 512 };
    const onDisk = st.blocks * 512 < st.size * 0.9 ? ` (${mb(st.blocks * 512)} on disk)` : '';
    rows.push({ bench: 'image', what: `${f} size`, result: `${mb(st.size)}${onDisk}`, goal: '', met: null });
  }
  return { rows, data };
}

async function timedBuild(out: string, log: (l: string) => void): Promise<{ seconds: number; baseCached: boolean }> {
  const args = ['--import', 'tsx', 'image/build-local.ts', '--out', out, '--components-dir', path.join(REPO, 'test/fixtures/components-double')];
  const run = await runTimed(process.execPath, args, { timeoutMs: 30 * 60_000 });
  if (run.code !== 0) throw new Error(`image build exited ${run.code}: ${run.stderr.trim().split('\n').pop()}`);
  log(`image: build into ${out}: ${Math.round(run.ms / 1000)} s`);
  return { seconds: run.ms / 1000, baseCached: /^image: base root: .*\(cached\)$/m.test(run.stdout) };
}

export const image: Bench = {
  name: 'image',
  async run({ image: rebuild, clusterState, log }) {
    const rows: Row[] = [];
    const data: Record<string, unknown> = {};
    if (rebuild) {
      const out = await fs.mkdtemp(path.join(os.tmpdir(), 'kubeseed-bench-image-'));
      try {
        const first = await timedBuild(out, log);
        const cached = await timedBuild(out, log);
        data.build = { first, cached };
        const kind = first.baseCached ? 'new output dir, base root cached (provision only)' : 'cold (mmdebstrap + provision)';
        rows.push({ bench: 'image', what: `build, ${kind}`, result: `${round3(first.seconds)} s (one build, n=1)`, goal: '', met: null });
        rows.push({ bench: 'image', what: 'build, cached (inputs unchanged)', result: `${round3(cached.seconds)} s (n=1)`, goal: '', met: null });
        const s = await sizes(out);
        rows.push(...s.rows);
        data.sizes = s.data;
      } finally {
        await fs.rm(out, { recursive: true, force: true });
      }
    } else {
      const dir = path.join(REPO, 'out', 'image');
      const record = await readJson<BuildRecord>(path.join(dir, 'build.json'));
      if (record) {
        data.build = { lastColdSeconds: record.seconds, builtAt: record.builtAt, imageVersion: record.imageVersion };
        rows.push({ bench: 'image', what: 'build, last `npm run image` (cold or base root cached)', result: `${record.seconds} s (${record.builtAt})`, goal: '', met: null });
      } else {
        rows.push({ bench: 'image', what: 'build', result: 'not measured (no out/image/build.json: run `npm run image`, or bench --image)', goal: '', met: null });
      }
      rows.push({ bench: 'image', what: 'build, cached', result: 'not measured (needs --image)', goal: '', met: null });
      const s = await sizes(dir);
      rows.push(...s.rows);
      data.sizes = s.data;
    }

    const stateFile = path.join(clusterState, 'cluster.json');
    const shown = path.relative(REPO, stateFile).startsWith('..') ? stateFile : path.relative(REPO, stateFile);
    const cluster = await readJson<{ nodes?: NodeState[] }>(stateFile);
    const booted = (cluster?.nodes ?? []).filter((n) => n.poweredOnAt && n.readyAt);
    // With the split cluster up took at ready: the floor, the agent's own time, waits, systemd-analyze, each phase.
    data.boots = booted.map((n) => ({ name: n.name, role: n.role, seconds: ((n.readyAt as number) - (n.poweredOnAt as number)) / 1000, ...(n.timing ? { timing: n.timing } : {}) }));
    for (const role of ['master', 'minion']) {
      const secs = booted.filter((n) => n.role === role).map((n) => ((n.readyAt as number) - (n.poweredOnAt as number)) / 1000);
      rows.push({
        bench: 'image',
        what: `boot to agent ready under QEMU (${role})`,
        result: secs.length
          ? formatSpread(spread(secs), 's')
          : `not measured (${cluster ? `no ${role} reached ready in ${shown}` : `no ${shown}: run \`npm run cluster -- up\``})`,
        goal: '',
        met: null,
      });
      const own = booted.filter((n) => n.role === role && n.timing).map((n) => (n.timing as BootTiming).agentOwn);
      rows.push({
        bench: 'image',
        what: `the agent's own time in that boot (${role}): phases minus waiting on other nodes and on its units`,
        result: own.length ? formatSpread(spread(own), 's') : `not measured (no ${role} timing in ${shown}: run \`npm run cluster -- up\`)`,
        goal: '<= 10 s',
        met: own.length ? Math.max(...own) <= 10 : null,
      });
    }
    return {
      rows,
      data,
      method: rebuild
        ? `image/build-local.ts timed twice into a temporary directory (cold, then cached), components double; boots from ${shown}`
        : `read from out/image (build.json, file sizes) and ${shown} (poweredOnAt -> readyAt per node)`,
    };
  },
};
