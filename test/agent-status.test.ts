// agent/status.ts as every reader of the status document sees it: documents the agent really writes (runAgent's
// recorded stream, and its writer writeStatus) read whole by statusFromDocument, and the readers built on it
// (cluster-check's report, the cluster watcher's unit list, the page's timeline) agree with what was written.
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InputError } from '../agent/errors.js';
import { createHost } from '../agent/host.js';
import { enabledUnits, exitCodeFor, initialStatus, readStatus, statusFromDocument, writeStatus, type Status } from '../agent/status.js';
import { reportFromStatus } from '../scripts/check/node-report.js';
import { readyAt, segmentsOf } from '../scripts/web/timeline.js';
import { MASTER_UNITS, recordStatusStream } from './helpers/status-stream.js';

const start = Date.parse('2026-12-02T10:00:00.000Z');
const stream = await recordStatusStream(start);

t.test('every document runAgent writes is read whole, and cluster-check reads its state, role and phase', async (t) => {
  t.ok(stream.events.length > 10, 'the three nodes wrote their documents');
  for (const { node, result } of stream.events) {
    const written = JSON.parse(result.stdout) as Status;
    t.same(statusFromDocument(written), written, `${node} ${written.state} ${written.phase ?? ''}: nothing dropped or added`);
    const report = reportFromStatus(node, result);
    t.equal(report.role, written.role, `${node}: role`);
    t.equal(report.phase, written.phase, `${node}: phase`);
    t.equal(report.detail, written.waitingOn ?? written.errors[0], `${node}: what it waits on`);
  }
  const last = (node: string) => reportFromStatus(node, stream.events.filter((e) => e.node === node).at(-1)!.result);
  t.equal(last('master-1').state, 'ready');
  t.equal(last('minion-2').state, 'waiting', 'the stuck minion, at its last word');
});

t.test('the cluster watcher lists the units the master reported, by name, as the agent published them', async (t) => {
  const master = stream.events.filter((e) => e.node === 'master-1').at(-1)!;
  const report = reportFromStatus('master-1', master.result);
  t.same(report.status?.units, MASTER_UNITS, 'the units fact is read with its type');
  t.same(enabledUnits(report.status), ['etcd.service', 'kube-apiserver.service', 'kubeseed-certs.service']);
});

t.test('the timeline draws each phase at the times the agent wrote, and ready at the last phase end', async (t) => {
  const minion = stream.events.filter((e) => e.node === 'minion-1').at(-1)!;
  const written = JSON.parse(minion.result.stdout) as Status;
  const node = { name: 'minion-1', report: reportFromStatus('minion-1', minion.result) };
  const segments = segmentsOf(node, start + 600_000);
  t.same(
    segments.map((s) => [s.label, s.from, s.to]),
    written.phases.map((p) => [p.name, Date.parse(p.startedAt!), Date.parse(p.endedAt!)]),
  );
  t.equal(readyAt(node), Math.max(...written.phases.map((p) => Date.parse(p.endedAt!))));
});

t.test("a node whose units failed: the agent's writer, its reader and every other reader agree", async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'kubeseed-status-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const host = createHost({ root, write: () => undefined });
  const status: Status = {
    ...(await initialStatus(host, '0.1.0', new Date(start))),
    state: 'failed',
    role: 'master',
    phase: 'units',
    units: [
      { name: 'etcd.service', file: '/usr/lib/systemd/system/etcd.service', state: 'active' },
      { name: 'kube-apiserver.service', file: '/usr/lib/systemd/system/kube-apiserver.service', state: 'failed', error: 'Result=exit-code' },
      { name: 'kube-proxy.service', file: '/usr/lib/systemd/system/kube-proxy.service', state: 'missing', error: 'no unit file' },
      { name: 'kube-scheduler.service', file: '/usr/lib/systemd/system/kube-scheduler.service', state: 'starting' },
    ],
    errors: ['units: kube-apiserver.service failed (Result=exit-code)'],
  };
  await writeStatus(host, status);
  const read = await readStatus(host);
  t.same(read, status, "the agent's own reader gives back what it wrote");
  const report = reportFromStatus('master-1', { code: exitCodeFor(status.state), stdout: JSON.stringify(read), stderr: '' });
  t.equal(report.state, 'failed');
  t.equal(report.detail, 'units: kube-apiserver.service failed (Result=exit-code)');
  t.same(enabledUnits(report.status), ['etcd.service', 'kube-scheduler.service'], 'failed and missing units are not counted as enabled');
});

t.test('a damaged document: what has the wrong shape is left out, the rest is read', async (t) => {
  t.equal(statusFromDocument({ state: 'sleeping' }), undefined, 'an unknown state is no answer');
  t.equal(statusFromDocument('ready'), undefined);
  t.equal(statusFromDocument([{ state: 'ready' }]), undefined);
  const read = statusFromDocument({
    state: 'running',
    role: 'boss',
    phase: 7,
    phases: [{ name: 'pki', state: 'done', startedAt: '2026-12-02T10:00:01Z', waitedMs: 'long' }, { state: 'done' }, 'cni', { name: 'weave', state: 'dancing' }],
    units: { 'etcd.service': 'active' },
    masters: ['10.0.0.1', 5],
    timing: { fact: 'kept' },
  });
  t.same(read, {
    state: 'running',
    phases: [{ name: 'pki', state: 'done', startedAt: '2026-12-02T10:00:01Z' }],
    masters: ['10.0.0.1'],
    peers: [],
    units: [],
    errors: [],
    warnings: [],
    agentVersion: '',
    startedAt: '',
    updatedAt: '',
    timing: { fact: 'kept' },
  });
  const root = await mkdtemp(join(tmpdir(), 'kubeseed-status-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const host = createHost({ root, write: () => undefined });
  await host.writeFile('/run/kubeseed/status.json', '{"state": "sleeping"}\n');
  const err = (await readStatus(host).catch((e: unknown) => e)) as InputError;
  t.equal(err.describe(), `${join(root, 'run/kubeseed/status.json')}: not a kubeseed status document (no known state)`, 'agent status names the file');
});
