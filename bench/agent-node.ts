// 4. The agent on a node: wall time of `agent status` (next to a bare `node -e 0`, the floor any
// Node program pays on this machine), peak RSS and wall time of a whole `agent run --once` per role
// on a fresh offline root (real systemctl --root; a minion also waits on a ready master and reads its
// peers), and the size of the bundle the image ships.
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import type { Role } from '../agent/dns-names.js';
import { peakRssMb, runTimed } from './child.js';
import type { Bench } from './context.js';
import { BUNDLE, nodeRoots, selfAddress } from './node-root.js';
import { formatSpread, ratio, round3, spread, type Row } from './stats.js';
import { startTestDns } from '../test/helpers/dns.js';

export const agentOnNode: Bench = {
  name: 'agent',
  async run({ quick, log }) {
    const spawns = quick ? 5 : 20;
    const fullRuns = quick ? 1 : 3;
    const self = selfAddress();
    const dns = await startTestDns('demo.k8s', { 'masters.demo.k8s': ['127.0.0.1'], 'minions.demo.k8s': self ? [self] : [] });
    const api = http.createServer((_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', resolve));
    const roleFile = `CLUSTER_NAME=demo\nAPI_ENDPOINT=http://masters.demo.k8s:${(api.address() as AddressInfo).port}\n`;
    const roots = await nodeRoots('demo');
    const rows: Row[] = [];
    const data: Record<string, unknown> = {};
    try {
      // run --once, each on a fresh root: what a node does at its first boot.
      let statusRoot = '';
      for (const role of ['master', 'minion'] as Role[]) {
        const rss: number[] = [];
        const wall: number[] = [];
        for (let i = 0; i < fullRuns; i++) {
          const root = await roots.make(role, roleFile);
          const { mb, run } = await peakRssMb(process.execPath, [BUNDLE, 'run', '--once', '--root', root, '--nameserver', dns.nameserver], { timeoutMs: 120_000 });
          if (run.code !== 0) throw new Error(`agent run --once (${role}) exited ${run.code}: ${(run.stdout + run.stderr).trim().split('\n').slice(-2).join(' / ')}`);
          rss.push(mb);
          wall.push(run.ms);
          statusRoot = root;
        }
        log(`agent: run --once ${role}: ${rss.map((x) => x.toFixed(1)).join(', ')} MB`);
        data[`run-${role}`] = { peakRssMb: rss, wallMs: wall };
        const s = spread(rss);
        rows.push({ bench: 'agent', what: `run --once (${role}): peak RSS`, result: formatSpread(s, 'MB'), goal: '< 60 MB', met: s.max < 60 });
        rows.push({ bench: 'agent', what: `run --once (${role}): wall time`, result: formatSpread(spread(wall), 'ms'), goal: '', met: null });
      }
      const floorRss: number[] = [];
      for (let i = 0; i < fullRuns; i++) floorRss.push((await peakRssMb(process.execPath, ['-e', '0'])).mb);
      data.nodeBarePeakRssMb = floorRss;
      rows.push({ bench: 'agent', what: '`node -e 0` peak RSS (floor)', result: formatSpread(spread(floorRss), 'MB'), goal: '', met: null });

      // status on a node that is ready, alternating with bare Node so both see the same machine.
      const status: number[] = [];
      const bare: number[] = [];
      for (let i = 0; i < spawns; i++) {
        const s = await runTimed(process.execPath, [BUNDLE, 'status', '--root', statusRoot]);
        if (s.code !== 0) throw new Error(`agent status exited ${s.code}: ${s.stderr.trim()}`);
        status.push(s.ms);
        bare.push((await runTimed(process.execPath, ['-e', '0'])).ms);
      }
      data.status = { agentStatusMs: status, nodeBareMs: bare };
      const st = spread(status);
      const floor = spread(bare);
      rows.push({ bench: 'agent', what: '`agent status` wall time', result: formatSpread(st, 'ms'), goal: '< 150 ms', met: st.median < 150 });
      rows.push({ bench: 'agent', what: '`node -e 0` wall time (floor)', result: formatSpread(floor, 'ms'), goal: '', met: null });
      rows.push({ bench: 'agent', what: 'status / bare node (medians)', result: `${round3(ratio(st.median, floor.median))}x`, goal: '', met: null });

      const bundle = await fs.readFile(BUNDLE);
      const gz = gzipSync(bundle, { level: 9 }).length;
      data.bundle = { bytes: bundle.length, gzipBytes: gz };
      rows.push({ bench: 'agent', what: 'dist/agent.js size', result: `${round3(bundle.length / 1024)} KB (${round3(gz / 1024)} KB gzip)`, goal: '', met: null });
    } finally {
      await roots.close();
      await dns.close();
      api.closeAllConnections();
      await new Promise((r) => api.close(r));
    }
    return {
      rows,
      data: { spawns, fullRuns, ...data },
      method: `dist/agent.js as child processes: status ${spawns} times alternating with \`node -e 0\`; run --once ${fullRuns} times per role on fresh roots (repository units, generated secrets, dns2 server and a 200 HTTP server on loopback), peak RSS from GNU time (%M)`,
    };
  },
};
