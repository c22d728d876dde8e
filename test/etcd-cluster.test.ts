// Three (then four) real etcd members on loopback addresses, each started as etcd.service starts it with the
// member settings the agent decides and renders, over mutual TLS with member certificates the agent issues:
// formation from agreeing looks, a fourth master joining by member add, one member stopped (quorum kept, the
// health names it), restarted from its data dir as the same member, a key written before read back after;
// and a member whose certificate lacks its address refused by its peers, who say so.
import t from 'tap';
import { memberAdd, memberList, memberRemove, type EtcdTls } from '../agent/etcd-client.js';
import { probeHealth } from '../agent/etcd-health.js';
import { clientUrl, decideMembership, type EtcdMember, type Membership } from '../agent/etcd-membership.js';
import { copyFile, mkdir, rm, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { createEtcdPhase } from '../agent/etcd.js';
import { ETCD_ENV, renderEtcdEnv } from '../agent/etcd-files.js';
import { createHost } from '../agent/host.js';
import { PKI_DIR } from '../agent/kube-files.js';
import type { RoleConfig, StatusFacts } from '../agent/phase.js';
import { formatStatus, type EtcdFacts, type Status } from '../agent/status.js';
import { renderReports } from '../scripts/check/node-report.js';
import { makeTestSecrets, tempDir } from './helpers/secrets.js';
import { testCluster, type TestCluster, type TestMember } from './helpers/etcd-members.js';
import { until } from './helpers/until.js';
import * as https from 'node:https';

const A = ['127.0.0.21', '127.0.0.22', '127.0.0.23'];
const D = '127.0.0.24';
const BAD = '127.0.0.25';

const b64 = (s: string) => Buffer.from(s).toString('base64');

function kv(url: string, op: 'put' | 'range', tls: EtcdTls, body: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(new URL(`/v3/kv/${op}`, url), { method: 'POST', ...tls, agent: false, timeout: 5000 }, (res) => {
      let data = '';
      res.on('data', (c: Buffer) => (data += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode!, body: data }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`${url}: no answer`)));
    req.end(JSON.stringify(body));
  });
}

async function readKey(url: string, tls: EtcdTls, key: string): Promise<string | undefined> {
  const answer = await kv(url, 'range', tls, { key: b64(key) });
  const value = (JSON.parse(answer.body) as { kvs?: { value: string }[] }).kvs?.[0]?.value;
  return value === undefined ? undefined : Buffer.from(value, 'base64').toString();
}

async function healthy(cluster: TestCluster, member: TestMember): Promise<boolean> {
  const h = await probeHealth([{ ID: '0', name: member.address, clientURLs: [clientUrl(member.address, cluster.ports)] }], cluster.tls, 1000);
  return h.state === 'healthy';
}

async function addWhenAllowed(url: string, peer: string, tls: EtcdTls): Promise<EtcdMember[]> {
  let members: EtcdMember[] = [];
  let last = '';
  await until(`etcd to allow adding ${peer} (last answer: ${last})`, async () => {
    try {
      members = await memberAdd(url, peer, tls);
      return true;
    } catch (err) {
      last = (err as Error).message;
      return false;
    }
  }, 20_000);
  return members;
}

const started = (m: Membership) => {
  if (m.kind === 'wait') throw new Error(`expected a decision to start, got wait: ${m.reason}`);
  return m;
};

t.test('three masters form one cluster, a fourth joins, one is lost and comes back as itself', async (t) => {
  const cluster = await testCluster(await makeTestSecrets('demo'));
  t.teardown(() => cluster.cleanup());
  const masters = await Promise.all(A.map((a) => cluster.member(a)));
  const dump = () => masters.map((m) => `--- ${m.address}\n${m.log().slice(-1500)}`).join('\n');
  const url = (m: TestMember) => clientUrl(m.address, cluster.ports);

  // Each master looked twice and saw the same three: each decides `new` with that list.
  for (const m of masters) {
    const decision = decideMembership({ self: m.address, looks: [A, [...A].reverse()], expected: 3, dataDir: false, existing: undefined, ports: cluster.ports });
    t.equal(decision.kind, 'new', `${m.address} forms a new cluster`);
    m.start(started(decision));
  }
  try {
    for (const m of masters) await until(`${m.address} healthy`, () => healthy(cluster, m), 20_000);
  } catch (err) {
    t.comment(dump());
    throw err;
  }
  const formed = await memberList(url(masters[0]!), cluster.tls);
  t.same(formed.map((m) => m.name).sort(), A, 'one cluster of the three, named by their addresses');
  t.equal((await probeHealth(formed, cluster.tls)).state, 'healthy');

  const put = await kv(url(masters[0]!), 'put', cluster.tls, { key: b64('/registry/before'), value: b64('kept') });
  t.equal(put.status, 200, 'a key is written before anything is lost');

  // A fourth master boots later: a listed master answers with the running cluster, so it joins.
  const fourth = await cluster.member(D);
  const existing = await memberList(url(masters[1]!), cluster.tls);
  const join = decideMembership({ self: D, looks: [[...A, D], [...A, D]], expected: 3, dataDir: false, existing, ports: cluster.ports });
  t.match(join, { kind: 'join', add: true }, 'the fourth joins (it does not form a cluster of its own)');
  t.notOk('remove' in join, 'nothing to remove');
  // etcd refuses a member add until every member has been connected for 5 s (its strict reconfig check):
  // the agent's loop retries, as this does.
  const added = await addWhenAllowed(url(masters[1]!), `https://${D}:${cluster.ports.peer}`, cluster.tls);
  t.equal(added.length, 4, 'member add through an existing member');
  fourth.start(started(join));
  await until(`${D} healthy after joining`, () => healthy(cluster, fourth), 20_000).catch((err) => {
    t.comment(fourth.log().slice(-3000));
    throw err;
  });
  const four = await memberList(url(masters[0]!), cluster.tls);
  t.same(four.map((m) => m.name).sort(), [...A, D], 'four named members');
  t.equal(await readKey(url(fourth), cluster.tls, '/registry/before'), 'kept', 'the new member serves the data written before');

  // One master lost: quorum (3 of 4) kept, the health names the lost member.
  const lost = masters[1]!;
  const lostId = four.find((m) => m.name === lost.address)!.ID;
  await lost.stop();
  const degraded = await probeHealth(four, cluster.tls, 1000);
  t.equal(degraded.state, 'degraded', 'degraded, not lost');
  t.same(degraded.quorum, { needed: 3, healthy: 3 });
  t.match(degraded.summary, new RegExp(`^degraded: 3 of 4 members healthy, quorum 3 kept; not answering: ${lost.address.replaceAll('.', '\\.')} \\(`));
  // What an operator reads: the etcd phase's health pass on a master that is up (its root holds what the
  // phase wrote at boot), shown by `agent status`, and cluster-check over all masters.
  const root = await tempDir('etcd-root');
  t.teardown(() => rm(root, { recursive: true, force: true }));
  await mkdir(path.join(root, PKI_DIR), { recursive: true });
  for (const name of ['etcd-ca.crt', 'etcd-member.crt', 'etcd-member.key']) await copyFile(path.join(masters[0]!.pkiDir, name), path.join(root, PKI_DIR, name));
  const formedAs = decideMembership({ self: A[0]!, looks: [A, A], expected: 3, dataDir: false, existing: undefined, ports: cluster.ports });
  await writeFile(path.join(root, ETCD_ENV), renderEtcdEnv({ cluster: 'demo', self: A[0]!, membership: started(formedAs), ports: cluster.ports }));
  const reports: { facts?: StatusFacts }[] = [];
  const logs: string[] = [];
  const host = { ...createHost({ root, write: (l) => logs.push(l) }), live: true };
  const ctx = { host, config: {} as RoleConfig, nameserver: { host: '127.0.0.1', port: 53 }, signal: new AbortController().signal, report: async (u: { facts?: StatusFacts }) => void reports.push(u) };
  await createEtcdPhase({ ports: cluster.ports, callTimeoutMs: 1000 }).reconcile!(ctx);
  const facts = reports.at(-1)?.facts?.etcd as EtcdFacts;
  t.equal(facts.member, A[0], 'the phase knows which member it is from etcd.env');
  t.equal(facts.health?.state, 'degraded', "the phase's health pass says degraded");
  t.match(logs, [/^etcd-health state=degraded summary="degraded: 3 of 4 members healthy/], 'and logs the change once');
  const status = { state: 'ready', role: 'master', phases: [], masters: [], peers: [], units: [], errors: [], warnings: [], agentVersion: '0.1.0', startedAt: new Date().toISOString(), updatedAt: new Date().toISOString(), etcd: facts };
  t.match(formatStatus(status as Status, new Date()), new RegExp(`etcd:\\s+degraded: 3 of 4 members healthy, quorum 3 kept; not answering: ${lost.address.replaceAll('.', '\\.')} .*\\(this member ${A[0]!.replaceAll('.', '\\.')}\\)`));
  const check = renderReports([
    { target: A[0]!, state: 'ready', role: 'master', status: status as Status },
    { target: lost.address, state: 'unreachable', detail: 'connection refused' },
  ]);
  t.match(check, new RegExp(`\\netcd degraded: 3 of 4 members healthy, quorum 3 kept; not answering: ${lost.address.replaceAll('.', '\\.')} `), 'cluster-check says degraded and names the lost master');
  t.equal(await readKey(url(masters[0]!), cluster.tls, '/registry/before'), 'kept', 'the store still serves with one member lost');
  const during = await kv(url(masters[2]!), 'put', cluster.tls, { key: b64('/registry/during'), value: b64('written') });
  t.equal(during.status, 200, 'and still takes writes');

  // It comes back: its data dir exists, so it restarts as the member it was.
  const again = decideMembership({ self: lost.address, looks: [], expected: 3, dataDir: true, existing: undefined, ports: cluster.ports });
  t.same(again, { kind: 'restart', name: lost.address }, 'a data dir means restart, whatever DNS says');
  lost.start(started(again));
  await until(`${lost.address} healthy again`, () => healthy(cluster, lost), 20_000);
  const back = await memberList(url(lost), cluster.tls);
  t.equal(back.find((m) => m.name === lost.address)?.ID, lostId, 'the same member ID');
  t.equal(back.length, 4, 'no extra member');
  t.equal((await probeHealth(back, cluster.tls)).state, 'healthy', 'green again');
  t.equal(await readKey(url(lost), cluster.tls, '/registry/before'), 'kept', 'the key written before the loss is read back from it');
  t.equal(await readKey(url(lost), cluster.tls, '/registry/during'), 'written', 'and what was written while it was away');

  // A master whose certificate lacks its address: added, started, and refused by its peers, who say why.
  const bad = await cluster.member(BAD, { certIps: ['127.0.0.1'] });
  const badJoin = decideMembership({ self: BAD, looks: [], expected: 3, dataDir: false, existing: back, ports: cluster.ports });
  const withBad = await addWhenAllowed(url(masters[0]!), `https://${BAD}:${cluster.ports.peer}`, cluster.tls);
  bad.start(started(badJoin));
  const peersSay = () => masters.concat(fourth).some((m) => m.log().includes(`certificate is valid for 127.0.0.1, not ${BAD}`));
  await until(`a peer to refuse ${BAD}'s certificate, naming its address`, peersSay, 20_000).catch((err) => {
    t.comment(masters[0]!.log().slice(-3000));
    throw err;
  });
  t.ok(peersSay(), `a peer logs "x509: certificate is valid for 127.0.0.1, not ${BAD}"`);
  t.notOk(await healthy(cluster, bad), 'the member without its address in its certificate never becomes healthy');
  await bad.stop();
  const badId = withBad.find((m) => m.peerURLs?.includes(`https://${BAD}:${cluster.ports.peer}`))!.ID;
  await memberRemove(url(masters[0]!), badId, cluster.tls);
  t.equal((await memberList(url(masters[0]!), cluster.tls)).length, 4, 'removed again');

  // A master whose disk was wiped (a replacement at the same address): its old member is removed, a new one added.
  const oldId = (await memberList(url(masters[0]!), cluster.tls)).find((m) => m.name === D)!.ID;
  await fourth.stop();
  await rm(fourth.dataDir, { recursive: true, force: true });
  const replace = decideMembership({ self: D, looks: [], expected: 3, dataDir: false, existing: await memberList(url(masters[0]!), cluster.tls), ports: cluster.ports });
  t.match(replace, { kind: 'join', add: true, remove: oldId }, 'the old member of this address is to be removed first');
  await memberRemove(url(masters[0]!), oldId, cluster.tls);
  await addWhenAllowed(url(masters[0]!), `https://${D}:${cluster.ports.peer}`, cluster.tls);
  fourth.start(started(replace));
  await until(`${D} healthy as a new member`, () => healthy(cluster, fourth), 20_000);
  const replaced = await memberList(url(masters[0]!), cluster.tls);
  t.equal(replaced.length, 4, 'still four members');
  t.not(replaced.find((m) => m.name === D)?.ID, oldId, 'under a new member ID');
  t.equal(await readKey(url(fourth), cluster.tls, '/registry/before'), 'kept', 'and it serves the data again');
});
