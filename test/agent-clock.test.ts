// The wall clock steps (NTP correcting a fast or slow clock at boot); the agent's schedules and deadlines
// must not. Each test steps Date.now by an hour mid-wait and checks the agent keeps its rhythm.
import t, { type Test } from 'tap';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseNameserver } from '../agent/dns.js';
import { createHost } from '../agent/host.js';
import { awaitMembership } from '../agent/peers.js';
import type { Phase } from '../agent/phase.js';
import { runAgent } from '../agent/run.js';
import { startTestDns } from './helpers/dns.js';
import { until } from './helpers/until.js';

const HOUR = 3_600_000;

/** Shifts Date.now by `ms` until the test ends (the step NTP makes). */
function stepWallClock(t: Test, ms: number): void {
  const real = Date.now;
  const shifted = () => real() + ms;
  Date.now = shifted;
  t.teardown(() => {
    if (Date.now === shifted) Date.now = real;
  });
}

async function tempRoot(t: Test): Promise<string> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'agent-clock-'));
  t.teardown(() => fs.rm(root, { recursive: true, force: true }));
  return root;
}

t.test('wall clock stepped back an hour: the reconcile loop keeps its 100 ms rhythm', async (t) => {
  const root = await tempRoot(t);
  await fs.mkdir(path.join(root, 'etc/sysconfig'), { recursive: true });
  await fs.writeFile(path.join(root, 'etc/sysconfig/kubernetes-minions'), 'CLUSTER_NAME=demo\n');
  let passes = 0;
  const ticking: Phase = {
    name: 'ticking',
    roles: ['minion'],
    async run() {},
    async reconcile() {
      // The step lands while the loop sleeps towards the next pass, as NTP's would.
      if (++passes === 1) setTimeout(() => stepWallClock(t, -HOUR), 30);
      return 100;
    },
  };
  const abort = new AbortController();
  const running = runAgent({
    host: createHost({ root, write: () => undefined }),
    once: false,
    nameserver: parseNameserver('127.0.0.1:9'),
    signal: abort.signal,
    agentVersion: 'test',
    phases: [ticking],
  });
  try {
    await until('six reconcile passes (one every 100 ms) after the wall clock stepped back an hour', () => passes >= 6, 10_000);
  } finally {
    abort.abort();
  }
  t.equal(await running, 0, 'the loop ends on the signal');
  t.ok(passes >= 6, `${passes} passes`);
});

t.test('wall clock stepped forward an hour: the membership wait does not give up early', async (t) => {
  const record = 'minions.demo.k8s';
  const dns = await startTestDns('demo.k8s', { [record]: ['10.0.0.6'] });
  t.teardown(() => dns.close());
  const reports: (string | null | undefined)[] = [];
  const ctx = {
    host: createHost({ root: await tempRoot(t), write: () => undefined }),
    nameserver: parseNameserver(dns.nameserver),
    signal: new AbortController().signal,
    async report(u: { waitingOn?: string | null }) {
      if (reports.length === 0) {
        // Waiting on this node to be listed: the clock jumps, then the node registers.
        stepWallClock(t, HOUR);
        dns.records.set(record, ['10.0.0.5', '10.0.0.6']);
      }
      reports.push(u.waitingOn);
    },
  };
  const lookup = await awaitMembership(ctx, record, new Set(['10.0.0.5']), {
    pollMs: 20,
    settleMs: 20,
    timeoutMs: 30_000,
    dnsTimeoutMs: 500,
  });
  t.same(lookup.view.peers, ['10.0.0.6'], 'the wait ended with the record listing this node, not a timeout');
  t.match(reports[0], /to list this node/);
});
