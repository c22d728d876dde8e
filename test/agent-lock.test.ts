// Two agents on one root (the service and an operator's `agent run --once`, say): the second waits on
// <root>/run/kubeseed/agent.lock until the first is done, a lock left by a killed agent is taken over, and
// a reader polling status.json all the while never sees a partial document.
import t from 'tap';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { prepareBundle, startAgent } from './helpers/bundle.js';
import { CLUSTER_RECORDS, differences, readyzServer, SELF, snapshot, template } from './helpers/crash-matrix.js';
import { startTestDns } from './helpers/dns.js';
import { until } from './helpers/until.js';

const STATUS = 'run/kubeseed/status.json';
const LOCK = 'run/kubeseed/agent.lock';


t.test('a second agent waits for the first, then finds nothing to do; status.json is never torn', async (t) => {
  if (!SELF) throw new Error('this test needs a non-loopback IPv4 address on this machine');
  const { bundle, work } = await prepareBundle(t, 'lock');
  const api = await readyzServer(t);
  // No masters yet: the first agent waits in wait-for-masters, holding the lock.
  const dns = await startTestDns('demo.k8s', { 'minions.demo.k8s': [SELF] });
  t.teardown(() => dns.close());
  const base = await template(t, 'minion', api);
  const root = path.join(work, 'root');
  const reference = path.join(work, 'reference');
  await fs.cp(base, root, { recursive: true });
  await fs.cp(base, reference, { recursive: true });
  const args = (r: string) => ['run', '--root', r, '--once', '--nameserver', dns.nameserver];

  let reads = 0;
  const torn: string[] = [];
  let polling = true;
  const poller = (async () => {
    while (polling) {
      const text = await fs.readFile(path.join(root, STATUS), 'utf8').catch(() => undefined);
      if (text !== undefined) {
        reads++;
        try {
          JSON.parse(text);
        } catch {
          torn.push(text.slice(0, 80));
        }
      }
      await new Promise((r) => setImmediate(r));
    }
  })();

  const first = startAgent(bundle, args(root));
  await until('the first agent to wait for masters', async () => /"state": "waiting"/.test(await fs.readFile(path.join(root, STATUS), 'utf8').catch(() => '')));
  const second = startAgent(bundle, args(root));
  await until('the second agent to say something', () => second.output().includes('\n'));
  t.match(second.output(), new RegExp(`^waiting-for-lock path=/run/kubeseed/agent.lock pid=${first.child.pid}\\n$`), 'the second agent waits for the first, naming it');
  t.equal((await fs.readFile(path.join(root, LOCK), 'utf8')).trim(), String(first.child.pid), 'the lock names the first agent');

  dns.records.set('masters.demo.k8s', ['127.0.0.1']);
  const [a, b] = await Promise.all([first.done, second.done]);
  polling = false;
  await poller;
  t.equal(a.code, 0, 'the first agent finishes');
  t.equal(b.code, 0, 'the second agent finishes');
  t.match(b.stdout, /^agent-start /m, 'the second agent ran after the wait');
  t.notMatch(b.stdout, /unit-enabled|pki-changed|cni-changed|weave-env-written/, 'and found everything already right');
  t.same(torn, [], `${reads} reads of status.json while two agents ran, none torn`);
  t.ok(reads > 10, `the reader really read (${reads} times)`);

  const alone = await startAgent(bundle, args(reference)).done;
  t.equal(alone.code, 0, 'one agent alone on a copy of the same root');
  t.same(differences(await snapshot(root), await snapshot(reference)), [], 'the root is what one agent alone makes of it');
});

t.test('a lock left by a killed agent is taken over; an empty one only once it is old', async (t) => {
  const { bundle } = await prepareBundle(t, 'lock-stale');
  const api = await readyzServer(t);
  const base = await template(t, 'master', api);
  // Masters are on the overlay: their weave phase reads the cluster's records.
  const dns = await startTestDns('demo.k8s', CLUSTER_RECORDS);
  t.teardown(() => dns.close());
  // A PID that surely runs no agent: a child that has exited.
  const dead = spawn('true');
  await new Promise((r) => dead.on('close', r));
  await fs.mkdir(path.join(base, 'run/kubeseed'), { recursive: true });
  await fs.writeFile(path.join(base, LOCK), `${dead.pid}\n`);
  const run = await startAgent(bundle, ['run', '--root', base, '--once', '--nameserver', dns.nameserver]).done;
  t.equal(run.code, 0, 'the agent takes the stale lock and runs', { output: run.stdout + run.stderr });
  t.match(run.stdout, new RegExp(`^stale-lock-removed path=/run/kubeseed/agent.lock pid=${dead.pid}$`, 'm'));
  await t.rejects(fs.stat(path.join(base, LOCK)), { code: 'ENOENT' }, 'the lock is released at exit');

  // Killed between creating the lock and writing its PID: waited on briefly (its writer may be alive), then taken.
  await fs.writeFile(path.join(base, LOCK), '');
  const old = new Date(Date.now() - 60_000);
  await fs.utimes(path.join(base, LOCK), old, old);
  const again = await startAgent(bundle, ['run', '--root', base, '--once', '--nameserver', dns.nameserver]).done;
  t.equal(again.code, 0, 'the agent takes the old empty lock and runs', { output: again.stdout + again.stderr });
  t.match(again.stdout, /^stale-lock-removed path=\/run\/kubeseed\/agent.lock pid=0$/m);
});

t.test('SIGTERM while waiting for the lock exits 143 and touches nothing', async (t) => {
  const { bundle } = await prepareBundle(t, 'lock-term');
  const api = await readyzServer(t);
  const base = await template(t, 'master', api);
  await fs.mkdir(path.join(base, 'run/kubeseed'), { recursive: true });
  await fs.writeFile(path.join(base, LOCK), `${process.pid}\n`); // held by a live process: this test
  const waiting = startAgent(bundle, ['run', '--root', base, '--once']);
  await until('the agent to wait', () => waiting.output().includes('waiting-for-lock'));
  waiting.child.kill('SIGTERM');
  const result = await waiting.done;
  t.equal(result.code, 143, 'interrupted: 128 + SIGTERM');
  t.equal((await fs.readFile(path.join(base, LOCK), 'utf8')).trim(), String(process.pid), 'the holder keeps its lock');
  await t.rejects(fs.stat(path.join(base, STATUS)), { code: 'ENOENT' }, 'no status written by the waiter');
});
