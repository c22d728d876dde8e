// The CLIs end to end as an operator runs them, with the real SDK on the wire: AWS_ENDPOINT_URL points
// EC2 and Route53 at a local HTTP double, so request serialisation and error parsing are the SDK's own.
import t from 'tap';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { startAwsHttpDouble } from './fixtures/aws-http-double.js';
import { until } from './helpers/until.js';

const run = promisify(execFile);
const tsx = path.resolve('node_modules/.bin/tsx');

async function cli(t: { teardown(fn: () => unknown): void }, endpoint: string) {
  const home = await mkdtemp(path.join(os.tmpdir(), 'kubeseed-wire-'));
  t.teardown(() => rm(home, { recursive: true, force: true }));
  const env = {
    PATH: process.env.PATH!,
    HOME: home,
    AWS_REGION: 'eu-west-1',
    AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE',
    AWS_SECRET_ACCESS_KEY: 'secret',
    AWS_ENDPOINT_URL: endpoint,
    AWS_EC2_METADATA_DISABLED: 'true',
  };
  type Outcome = { code?: number; stdout: string; stderr: string };
  return (script: string, args: string[]): Promise<Outcome> => run(tsx, [script, ...args], { env }).catch((e: Outcome) => e);
}

t.test('dns-sync: plans, writes, retries Route53 throttling, then has nothing to do', async (t) => {
  const aws = await startAwsHttpDouble({ id: 'Z0K8S', name: 'k8s' });
  t.teardown(() => aws.close());
  aws.instances.push(
    { id: 'i-1', ip: '10.0.0.11', tags: { KubernetesCluster: 'demo', Role: 'master' } },
    { id: 'i-2', ip: '10.0.0.12', tags: { ' kubernetescluster ': 'Demo', role: 'Minion ' } },
    { id: 'i-3', tags: { KubernetesCluster: 'demo', Role: 'minion' } },
  );
  aws.failNext.set('ChangeResourceRecordSets', [[400, 'Throttling', 'Rate exceeded']]);
  const sync = await cli(t, aws.endpoint);
  const first = await sync('scripts/dns-sync.ts', ['--domain', 'k8s']);
  t.equal(first.stderr, '');
  t.match(first.stdout, /^skip i-3: no private IP yet$/m);
  t.match(first.stdout, /^zone Z0K8S \(k8s\): 2 members, 2 changes in 1 batch$/m);
  t.match(first.stdout, /^throttled: ChangeResourceRecordSets \(Throttling\), retry 1\/7 in \d+ ms$/m, 'the SDK parsed the XML error code');
  t.same(Object.fromEntries(aws.records), { 'masters.demo.k8s': { ttl: 30, values: ['10.0.0.11'] }, 'minions.demo.k8s': { ttl: 30, values: ['10.0.0.12'] } });
  const writes = aws.requests.filter((r) => r.action === 'ChangeResourceRecordSets').length;
  t.equal(writes, 2, 'one throttled, one accepted');

  const second = await sync('scripts/dns-sync.ts', ['--domain', 'k8s']);
  t.match(second.stdout, /2 members, 0 changes in 0 batches/);
  t.equal(aws.requests.filter((r) => r.action === 'ChangeResourceRecordSets').length, writes, 'nothing sent');

  const missing = await sync('scripts/dns-sync.ts', ['--zone-id', 'ZNOPE']);
  t.equal(missing.code, 1);
  t.equal(missing.stderr, 'dns-sync: hosted zone ZNOPE does not exist\n');
  const wrongName = await sync('scripts/dns-sync.ts', ['--domain', 'corp.k8s']);
  t.equal(wrongName.stderr, 'dns-sync: no private hosted zone named corp.k8s. (create it, or pass --zone-id)\n');
  const denied = await (async () => {
    aws.failNext.set('DescribeInstances', [[403, 'UnauthorizedOperation', 'You are not authorized to perform this operation.']]);
    return sync('scripts/dns-sync.ts', []);
  })();
  t.equal(denied.code, 1);
  t.equal(denied.stderr, 'dns-sync: AWS UnauthorizedOperation: You are not authorized to perform this operation.\n');
});

t.test('launch: the wire carries the user-data `npm run userdata` prints for the same flags, IMDSv2, the tags and the client token', async (t) => {
  const aws = await startAwsHttpDouble({ id: 'Z0K8S', name: 'k8s' });
  t.teardown(() => aws.close());
  const launch = await cli(t, aws.endpoint);
  // The cluster as a user may type it: both commands spell it one way, in the role file and in the tags.
  const userDataArgs = ['--role', 'minion', '--cluster', 'Demo', '--domain', 'corp.k8s', '--set', 'NAMESERVER=10.0.0.2'];
  const args = [...userDataArgs, '--image', 'ami-0123456789abcdef0', '--count', '2', '--subnet', 'subnet-1'];
  const out = await launch('scripts/launch.ts', args);
  t.equal(out.stderr, '');
  t.equal(
    out.stdout,
    [
      'launch template kubeseed-demo-minion (lt-0123) created, version 1',
      /launched 2 instances \(client token (kubeseed-[0-9a-f]{48})\)/.exec(out.stdout)![0],
      // The double reports them running at the first look: one progress line each.
      'i-01: running 10.0.1.1',
      'i-02: running 10.0.1.2',
      'i-01\t10.0.1.1\trunning',
      'i-02\t10.0.1.2\trunning',
      '',
    ].join('\n'),
  );
  const create = new URLSearchParams(aws.requests.find((r) => r.action === 'CreateLaunchTemplate')!.body);
  const userData = await launch('scripts/userdata.ts', userDataArgs);
  t.equal(userData.stderr, '');
  t.match(userData.stdout, /^ +CLUSTER_NAME="demo"\n +DNS_DOMAIN="corp.k8s"\n +NAMESERVER="10.0.0.2"$/m);
  t.equal(Buffer.from(create.get('LaunchTemplateData.UserData')!, 'base64').toString('utf8'), userData.stdout);
  t.equal(create.get('LaunchTemplateData.MetadataOptions.HttpTokens'), 'required');
  t.equal(create.get('LaunchTemplateData.MetadataOptions.HttpPutResponseHopLimit'), '1');
  const tagPairs = (prefix: string) =>
    [1, 2, 3].map((n) => `${create.get(`${prefix}.Tag.${n}.Key`)}=${create.get(`${prefix}.Tag.${n}.Value`)}`);
  t.equal(create.get('LaunchTemplateData.TagSpecification.1.ResourceType'), 'instance');
  t.same(tagPairs('LaunchTemplateData.TagSpecification.1'), ['KubernetesCluster=demo', 'Role=minion', 'Name=demo-minion']);
  t.equal(create.get('LaunchTemplateData.TagSpecification.2.ResourceType'), 'volume');
  t.same(tagPairs('LaunchTemplateData.TagSpecification.2'), ['KubernetesCluster=demo', 'Role=minion', 'Name=demo-minion']);
  const runReq = new URLSearchParams(aws.requests.find((r) => r.action === 'RunInstances')!.body);
  t.match(runReq.get('ClientToken'), /^kubeseed-[0-9a-f]{48}$/);
  t.equal(runReq.get('LaunchTemplate.LaunchTemplateId'), 'lt-0123');
  t.equal(runReq.get('LaunchTemplate.Version'), '1');
  t.equal(runReq.get('MinCount'), '2');

  // EC2 answering with an error: one plain line.
  aws.failNext.set('RunInstances', [[400, 'InvalidAMIID.NotFound', "The image id '[ami-0123456789abcdef0]' does not exist"]]);
  const failed = await launch('scripts/launch.ts', [...args, '--token', 'batch-2']);
  t.equal(failed.code, 1);
  t.equal(failed.stderr, "launch: AWS InvalidAMIID.NotFound: The image id '[ami-0123456789abcdef0]' does not exist\n");
});

t.test('dns-sync --watch from the built bundle: one process, no node_modules, its PID file, stopped by SIGTERM', async (t) => {
  const aws = await startAwsHttpDouble({ id: 'Z0K8S', name: 'k8s' });
  t.teardown(() => aws.close());
  aws.instances.push({ id: 'i-1', ip: '10.0.0.11', tags: { KubernetesCluster: 'demo', Role: 'master' } });
  const home = await mkdtemp(path.join(os.tmpdir(), 'kubeseed-watch-'));
  t.teardown(() => rm(home, { recursive: true, force: true }));
  // The bundle as package.json's build makes it, written straight into the temp dir (other test files rebuild
  // dist/ while this one runs), with only a CommonJS marker beside it: what an operator copies to the host.
  const pkg = JSON.parse(await readFile('package.json', 'utf8')) as { scripts: { build: string } };
  const step = pkg.scripts.build.split(' && ').find((s) => s.includes('scripts/dns-sync.ts'))!;
  t.match(step, / --outfile=dist\/dns-sync\.js$/, 'npm run build makes dist/dns-sync.js');
  execFileSync('sh', ['-c', step.replace('--outfile=dist/dns-sync.js', `--outfile=${path.join(home, 'dns-sync.js')}`)], {
    stdio: 'ignore',
    env: { ...process.env, PATH: `${path.resolve('node_modules/.bin')}:${process.env.PATH}` },
  });
  await writeFile(path.join(home, 'package.json'), '{"type": "commonjs"}\n');
  const env = { PATH: process.env.PATH!, HOME: home, AWS_REGION: 'eu-west-1', AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE', AWS_SECRET_ACCESS_KEY: 'secret', AWS_ENDPOINT_URL: aws.endpoint, AWS_EC2_METADATA_DISABLED: 'true', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };
  const pidFile = path.join(home, 'dns-sync.pid');
  const child = spawn(process.execPath, ['dns-sync.js', '--domain', 'k8s', '--watch', '1', '--pid-file', pidFile], { cwd: home, env });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  t.teardown(() => child.kill('SIGKILL'));
  await until('dns-sync --watch to write the record', async () => aws.records.has('masters.demo.k8s'), 60_000);
  t.equal((await readFile(pidFile, 'utf8')).trim(), String(child.pid), 'the PID file names the process itself: no npm, sh or tsx in between');

  const second = await run(process.execPath, ['dns-sync.js', '--domain', 'k8s', '--watch', '1', '--pid-file', pidFile], { cwd: home, env }).then(
    (r) => ({ code: 0, stderr: r.stderr }),
    (e: { code?: number; stderr: string }) => e,
  );
  t.equal(second.code, 1);
  t.equal(second.stderr, `dns-sync: ${pidFile}: dns-sync --watch is already running as pid ${child.pid}\n`);

  process.kill(Number(await readFile(pidFile, 'utf8')), 'SIGTERM');
  t.equal(await exited, 0, 'kill -TERM $(cat FILE) stops it, exit 0');
  t.equal(await readFile(pidFile, 'utf8').catch(() => 'gone'), 'gone', 'and it takes its PID file away');
  t.match(out, /zone Z0K8S \(k8s\): 1 member/);

  const once = await run(process.execPath, ['dns-sync.js', '--pid-file', pidFile], { cwd: home, env }).then(
    (r) => ({ code: 0, stderr: r.stderr }),
    (e: { code?: number; stderr: string }) => e,
  );
  t.equal(once.code, 2);
  t.match(once.stderr, /^dns-sync: --pid-file goes with --watch \(a single pass ends by itself\)\nusage: /);
});
