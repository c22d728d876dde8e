// What a node refuses to trust, through the shipped bundle on temp roots: a role file others can write,
// DNS answers no master or peer can have, and hostile values from user-data. And where secrets must not
// go: logs, status.json, the arguments or the environment of the programs the agent runs (a recording
// double in front of the real systemctl), even when the agent's own environment carries them.
import t from 'tap';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { renderUserData } from '../cloud-init/render.js';
import { parseEnvironmentFile } from '../agent/contract/env-file.js';
import { ROLE_FILES } from '../agent/contract/role-file.js';
import { SECRETS_DIR } from '../agent/secrets-layout.js';
import { prepareBundle, REPO, startAgent } from './helpers/bundle.js';
import { CLUSTER_RECORDS, readyzServer, SELF, template } from './helpers/crash-matrix.js';
import { startTestDns } from './helpers/dns.js';
import { until } from './helpers/until.js';

const RECORDER_DIR = path.join(REPO, 'test/fixtures/exec-recorder-double');
const STATUS = 'run/kubeseed/status.json';

const { bundle, work } = await prepareBundle(t, 'trust');

async function statusOf(root: string) {
  return JSON.parse(await fs.readFile(path.join(root, STATUS), 'utf8'));
}

async function exists(file: string): Promise<boolean> {
  return fs.stat(file).then(() => true, () => false);
}

t.test('a role file that is not root-only is refused, and nothing is written', async (t) => {
  const api = await readyzServer(t);
  const cases = [
    { what: 'group-writable', spoil: (f: string) => fs.chmod(f, 0o664), message: /mode 0664 lets others write it/ },
    { what: 'world-writable', spoil: (f: string) => fs.chmod(f, 0o646), message: /mode 0646 lets others write it/ },
    { what: 'owned by nobody', spoil: (f: string) => fs.chown(f, 65534, 65534), message: /owned by uid 65534, not root/ },
  ];
  for (const c of cases) {
    const root = await template(t, 'master', api);
    const file = path.join(root, ROLE_FILES.master);
    await c.spoil(file);
    const run = await startAgent(bundle, ['run', '--root', root, '--once']).done;
    t.equal(run.code, 1, `${c.what}: exit 1`);
    t.match(run.stdout, new RegExp(`role-file-invalid problem="${ROLE_FILES.master}: ${c.message.source}`), `${c.what}: the log names the file and why`);
    const status = await statusOf(root);
    t.equal(status.state, 'invalid', `${c.what}: status says invalid`);
    t.match(status.errors[0], c.message);
    t.notOk(await exists(path.join(root, 'etc/kubernetes')), `${c.what}: nothing installed`);
  }
  const check = await startAgent(bundle, ['check', '--root', (await template(t, 'minion', api))]).done;
  t.equal(check.code, 0, 'a 0644 root-owned role file (what user-data writes) passes agent check');
});

t.test('DNS answers no master can have are never asked for /readyz; a usable one is', async (t) => {
  // Linux connects 0.0.0.0 to the local host: without the filter the agent would reach this server through it.
  const hits: string[] = [];
  const server = http.createServer((req, res) => {
    hits.push(req.socket.localAddress ?? '?');
    res.writeHead(req.url === '/readyz' ? 200 : 404).end('ok');
  });
  await new Promise<void>((r) => server.listen(0, '0.0.0.0', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as AddressInfo).port;
  const bad = ['0.0.0.0', '255.255.255.255', '224.0.0.1', '239.1.2.3', '169.254.169.254', '240.0.0.1'];
  const dns = await startTestDns('demo.k8s', { 'masters.demo.k8s': bad, 'minions.demo.k8s': [...bad, '10.9.0.7', SELF ?? '10.9.0.8'] });
  t.teardown(() => dns.close());
  const root = await template(t, 'minion', port);
  const agent = startAgent(bundle, ['run', '--root', root, '--once', '--nameserver', dns.nameserver]);
  await until('the agent to log that DNS gave no usable A records', () => /no usable A records/.test(agent.output()));
  t.match(agent.output(), /^waiting on="DNS masters\.demo\.k8s \(no usable A records at 127\.0\.0\.1:\d+: 0\.0\.0\.0 unspecified, 255\.255\.255\.255 broadcast, 224\.0\.0\.1 multicast, 239\.1\.2\.3 multicast, 169\.254\.169\.254 link-local, 240\.0\.0\.1 reserved\)"$/m);
  t.same(hits, [], 'no request reached any address through a forged answer');
  t.same((await statusOf(root)).masters, [], 'status lists no master');

  dns.records.set('masters.demo.k8s', [...bad, '127.0.0.1']);
  const result = await agent.done;
  t.equal(result.code, 0, 'ready once a usable master answers', { output: result.stdout + result.stderr });
  const status = await statusOf(root);
  t.same(status.masters, ['127.0.0.1'], 'only the usable master is recorded');
  if (SELF) t.same(status.peers, ['10.9.0.7'], 'peers: the unusable answers (and this node) dropped');
  t.same(hits, ['127.0.0.1'], 'and only it was asked');
});

t.test('hostile user-data values reach the node as data: nothing runs, every value arrives exact', async (t) => {
  const api = await readyzServer(t);
  const marker = path.join(work, `PWNED-${process.pid}-${Date.now()}`);
  const hostile = {
    SHELL_SUBST: `$(touch ${marker})`,
    BACKTICKS: `\`touch ${marker}\``,
    SEMICOLON: `x; touch ${marker}`,
    QUOTES: `it's "quoted" \\ and $HOME`,
    UNICODE: 'żółw 🐢 \u2028 line-separator',
    KUBELET_HOSTNAME: `node-1$(touch ${marker})`,
  };
  const userData = await renderUserData({ role: 'master', cluster: 'demo', vars: hostile });
  const content = (parseYaml(userData) as { write_files: { content: string }[] }).write_files[0]!.content;
  const root = await template(t, 'master', api);
  await fs.writeFile(path.join(root, ROLE_FILES.master), content);
  // Masters are on the overlay: their weave phase reads the cluster's records.
  const dns = await startTestDns('demo.k8s', CLUSTER_RECORDS);
  t.teardown(() => dns.close());
  const run = await startAgent(bundle, ['run', '--root', root, '--once', '--nameserver', dns.nameserver]).done;
  t.equal(run.code, 0, 'the node gets ready', { output: run.stdout + run.stderr });
  t.notOk(existsSync(marker), 'no value was executed');
  const check = await startAgent(bundle, ['check', '--root', root]).done;
  t.equal(check.code, 0, 'agent check accepts the file');
  const onNode = parseEnvironmentFile(await fs.readFile(path.join(root, ROLE_FILES.master), 'utf8'), ROLE_FILES.master);
  t.same(onNode.problems, []);
  t.same(Object.fromEntries(onNode.assignments.map((a) => [a.key, a.value])), { CLUSTER_NAME: 'demo', ...hostile }, 'every value exactly as given');
  for (const key of Object.keys(hostile).filter((k) => k !== 'KUBELET_HOSTNAME'))
    t.match(check.stdout, new RegExp(`unknown key ${key} \\(ignored by the agent\\)`), `${key} kept as an (unknown) key, not split or merged`);
});

t.test('no secret in logs, status.json, or the arguments and environment of the programs the agent runs', async (t) => {
  if (!SELF) throw new Error('this test needs a non-loopback IPv4 address on this machine');
  const api = await readyzServer(t);
  const dns = await startTestDns('demo.k8s', CLUSTER_RECORDS);
  t.teardown(() => dns.close());
  const password = `weave-secret-password-${process.pid}`;
  for (const role of ['master', 'minion'] as const) {
    const root = await template(t, role, api, password);
    const dir = path.join(root, SECRETS_DIR);
    const token = (await fs.readFile(path.join(dir, 'bootstrap-token'), 'utf8')).trim();
    const keyFile = role === 'master' ? 'ca.key' : 'kube-proxy.key';
    // A line from the middle of a private key: enough to identify it, never a PEM header.
    const keyLine = (await fs.readFile(path.join(dir, keyFile), 'utf8')).split('\n')[1]!;
    const secrets = { 'bootstrap token': token, 'token secret half': token.split('.')[1]!, [`${keyFile} material`]: keyLine, 'weave password': password };
    const recorded = path.join(work, `${role}-exec.log`);
    // As if a unit had loaded the role file and the secrets into the agent's environment.
    const run = await startAgent(bundle, ['run', '--root', root, '--once', '--nameserver', dns.nameserver], {
      PATH: `${RECORDER_DIR}:${process.env.PATH}`,
      EXEC_RECORDER_LOG: recorded,
      WEAVE_PASSWORD: password,
      BOOTSTRAP_TOKEN: token,
      KUBESEED_CA_KEY: keyLine,
    }).done;
    t.equal(run.code, 0, `${role}: ready`, { output: run.stdout + run.stderr });
    const calls = await fs.readFile(recorded, 'utf8');
    t.match(calls, /^argv\t--root=.*\tis-enabled\t--\t/m, `${role}: systemctl ran through the recorder (it reads the set; the agent links it itself)`);
    const places = { 'stdout and stderr': run.stdout + run.stderr, 'status.json': await fs.readFile(path.join(root, STATUS), 'utf8'), 'systemctl argv and env': calls };
    for (const [what, secret] of Object.entries(secrets))
      for (const [where, text] of Object.entries(places)) t.notOk(text.includes(secret), `${role}: ${what} not in ${where}`);
    t.match(calls, /^env\tPATH=/m, `${role}: the children still get an ordinary environment`);
  }
});
