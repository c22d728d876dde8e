// Debian's real etcd, started as units/etcd.service starts it (its flags, paths and ports moved into a temp
// dir, plus the env file the agent writes for a one-master cluster) with a member certificate the agent
// issues and the other certificates from our secrets command: a client that trusts our etcd CA and presents
// the API server's etcd client certificate reads and writes; a client that trusts another CA refuses the
// server; the server refuses clients without a certificate, or with one from the cluster CA (a kubelet's, say).
import { readFile, rm } from 'node:fs/promises';
import * as https from 'node:https';
import * as path from 'node:path';
import t from 'tap';
import { decideMembership } from '../agent/etcd-membership.js';
import { makeTestSecrets } from './helpers/secrets.js';
import { testCluster } from './helpers/etcd-members.js';

interface Answer {
  status?: number;
  body?: string;
  error?: string;
}

function request(port: number, urlPath: string, tls: https.RequestOptions, body?: unknown): Promise<Answer> {
  return new Promise((resolve) => {
    const req = https.request(
      { host: '127.0.0.1', port, path: urlPath, method: body ? 'POST' : 'GET', servername: 'localhost', agent: false, timeout: 5000, ...tls },
      (res) => {
        let data = '';
        res.on('data', (c: Buffer) => (data += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, body: data }));
      },
    );
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

t.test('real etcd with our certificates: trusted client served, others refused', async (t) => {
  const secrets = await makeTestSecrets('demo');
  const other = await makeTestSecrets('demo');
  const cluster = await testCluster(secrets);
  t.teardown(async () => {
    await cluster.cleanup();
    await rm(path.dirname(secrets), { recursive: true, force: true });
    await rm(path.dirname(other), { recursive: true, force: true });
  });
  const ports = cluster.ports;
  const etcd = await cluster.member('127.0.0.1');
  const decision = decideMembership({ self: '127.0.0.1', looks: [['127.0.0.1'], ['127.0.0.1']], expected: 1, dataDir: false, existing: undefined, ports });
  if (decision.kind !== 'new') throw new Error(`one master forms a new cluster, got ${decision.kind}`);
  etcd.start(decision);

  const read = (dir: string, name: string) => readFile(path.join(dir, name), 'utf8');
  const trusted: https.RequestOptions = {
    ca: await read(secrets, 'etcd-ca.crt'),
    cert: await read(secrets, 'apiserver-etcd-client.crt'),
    key: await read(secrets, 'apiserver-etcd-client.key'),
  };

  let health: Answer = {};
  for (let i = 0; i < 100 && etcd.running(); i++) {
    health = await request(ports.client, '/health', trusted);
    if (health.status === 200) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  if (health.status !== 200) t.comment(etcd.log().slice(-2000));
  t.equal(health.status, 200, "etcd serves /health to the API server's client certificate");
  t.match(health.body, /"health":"true"/);

  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const put = await request(ports.client, '/v3/kv/put', trusted, { key: b64('/registry/kubeseed'), value: b64('seeded') });
  t.equal(put.status, 200, 'writes');
  const range = await request(ports.client, '/v3/kv/range', trusted, { key: b64('/registry/kubeseed') });
  t.equal(range.status, 200, 'reads');
  t.equal(Buffer.from(JSON.parse(range.body!).kvs[0].value, 'base64').toString(), 'seeded');

  const distrusting = await request(ports.client, '/health', { ...trusted, ca: await read(other, 'etcd-ca.crt') });
  t.equal(distrusting.status, undefined, 'a client trusting another CA gets no answer');
  t.match(distrusting.error, /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|unable to verify/i, 'it refuses the server certificate');

  const anonymous = await request(ports.client, '/health', { ca: trusted.ca });
  t.equal(anonymous.status, undefined, 'no client certificate: no answer');
  t.ok(anonymous.error, `refused (${anonymous.error})`);

  const clusterCaClient = await request(ports.client, '/health', {
    ca: trusted.ca,
    cert: await read(secrets, 'kube-proxy.crt'),
    key: await read(secrets, 'kube-proxy.key'),
  });
  t.equal(clusterCaClient.status, undefined, 'a certificate from the cluster CA does not open etcd');
  t.ok(clusterCaClient.error, `refused (${clusterCaClient.error})`);
});
