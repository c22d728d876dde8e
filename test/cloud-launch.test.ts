// launch against an EC2 double (aws-sdk-client-mock): what the requests carry, idempotency, the wait
// and its progress lines, and how errors read.
import t from 'tap';
import { gunzipSync } from 'node:zlib';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  CreateLaunchTemplateCommand,
  CreateLaunchTemplateVersionCommand,
  DescribeInstancesCommand,
  DescribeLaunchTemplateVersionsCommand,
  DescribeLaunchTemplatesCommand,
  EC2Client,
  ModifyLaunchTemplateCommand,
  RunInstancesCommand,
  type Instance,
} from '@aws-sdk/client-ec2';
import { mockClient } from 'aws-sdk-client-mock';
import { renderUserData } from '../cloud-init/render.js';
import { launchRole } from '../scripts/cloud/ec2-launch.js';
import { planLaunch, USER_DATA_LIMIT, type LaunchSpec } from '../scripts/cloud/launch-plan.js';
import { errorLine, userDataFromFlags } from '../scripts/cloud/cli.js';
import { InputError } from '../agent/errors.js';
import { SECRET_FILES } from '../agent/secrets-layout.js';
import { awsError } from './fixtures/route53-double.js';
import { writeServingCert } from './helpers/secrets.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
const run = promisify(execFile);

const SPEC: LaunchSpec = { cluster: 'demo', role: 'minion', imageId: 'ami-0123456789abcdef0', instanceType: 't3.medium', count: 3, masters: 1, subnetId: 'subnet-1' };

/** EC2 with launch templates and instances that go pending -> running over `pendingPolls` polls. */
function ec2Double(pendingPolls = 2) {
  const client = new EC2Client({ region: 'eu-west-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
  const mock = mockClient(client);
  const templates = new Map<string, { id: string; versions: { n: number; description: string }[]; def: number }>();
  const reservations = new Map<string, Instance[]>();
  let polls = 0;
  mock.on(DescribeLaunchTemplatesCommand).callsFake((input: { LaunchTemplateNames: string[] }) => {
    const t = templates.get(input.LaunchTemplateNames[0]!);
    if (!t) throw awsError('InvalidLaunchTemplateName.NotFoundException', 'At least one of the launch templates specified in the request does not exist.');
    return { LaunchTemplates: [{ LaunchTemplateId: t.id, LaunchTemplateName: input.LaunchTemplateNames[0], DefaultVersionNumber: t.def }] };
  });
  mock.on(CreateLaunchTemplateCommand).callsFake((input: { LaunchTemplateName: string; VersionDescription: string }) => {
    const t = { id: `lt-${templates.size + 1}`, versions: [{ n: 1, description: input.VersionDescription }], def: 1 };
    templates.set(input.LaunchTemplateName, t);
    return { LaunchTemplate: { LaunchTemplateId: t.id, LatestVersionNumber: 1, DefaultVersionNumber: 1 } };
  });
  const byId = (id: string) => [...templates.values()].find((t) => t.id === id)!;
  mock.on(DescribeLaunchTemplateVersionsCommand).callsFake((input: { LaunchTemplateId: string }) => {
    const t = byId(input.LaunchTemplateId);
    const v = t.versions.find((x) => x.n === t.def)!;
    return { LaunchTemplateVersions: [{ VersionNumber: v.n, VersionDescription: v.description, DefaultVersion: true }] };
  });
  mock.on(CreateLaunchTemplateVersionCommand).callsFake((input: { LaunchTemplateId: string; VersionDescription: string }) => {
    const t = byId(input.LaunchTemplateId);
    const n = t.versions.length + 1;
    t.versions.push({ n, description: input.VersionDescription });
    return { LaunchTemplateVersion: { VersionNumber: n } };
  });
  mock.on(ModifyLaunchTemplateCommand).callsFake((input: { LaunchTemplateId: string; DefaultVersion: string }) => {
    byId(input.LaunchTemplateId).def = Number(input.DefaultVersion);
    return {};
  });
  // Same client token, same reservation: EC2's idempotency.
  mock.on(RunInstancesCommand).callsFake((input: { ClientToken: string; MinCount: number }) => {
    if (!reservations.has(input.ClientToken)) {
      const base = reservations.size * 10;
      reservations.set(
        input.ClientToken,
        Array.from({ length: input.MinCount }, (_, i) => ({ InstanceId: `i-${base + i}`, State: { Name: 'pending' as const }, PrivateIpAddress: `10.0.1.${base + i + 1}` })),
      );
    }
    return { Instances: reservations.get(input.ClientToken) };
  });
  mock.on(DescribeInstancesCommand).callsFake((input: { InstanceIds: string[] }) => {
    polls++;
    const all = [...reservations.values()].flat();
    return {
      Reservations: [
        {
          Instances: input.InstanceIds.map((id, k) => {
            const i = all.find((x) => x.InstanceId === id)!;
            // instance k turns running after pendingPolls + k polls: states change at different times
            return { ...i, State: { Name: polls > pendingPolls + k ? ('running' as const) : ('pending' as const) } };
          }),
        },
      ],
    };
  });
  return { client, mock };
}

function sink(isTTY = false) {
  const out = { isTTY, text: '', write: (s: string) => (out.text += s) };
  return out;
}

const quiet = { sleep: async () => undefined, log: () => undefined };

t.test('the launch requests carry the rendered user-data, both tags, IMDSv2 and a client token', async (t) => {
  const { client, mock } = ec2Double();
  const userData = await renderUserData({ role: 'minion', cluster: 'demo', vars: { NAMESERVER: '10.0.0.2' } });
  const plan = planLaunch(SPEC, userData);
  const out = sink();
  const result = await launchRole(client, plan, { out, ...quiet });

  const create = mock.commandCalls(CreateLaunchTemplateCommand)[0]!.args[0].input;
  t.equal(create.LaunchTemplateName, 'kubeseed-demo-minion');
  const data = create.LaunchTemplateData!;
  t.equal(Buffer.from(data.UserData!, 'base64').toString('utf8'), userData, 'user-data is the rendered text, base64');
  t.equal(data.ImageId, SPEC.imageId);
  t.same(data.MetadataOptions, { HttpTokens: 'required', HttpPutResponseHopLimit: 1, HttpEndpoint: 'enabled' });
  const tags = [{ Key: 'KubernetesCluster', Value: 'demo' }, { Key: 'Role', Value: 'minion' }, { Key: 'Name', Value: 'demo-minion' }];
  t.same(data.TagSpecifications, [
    { ResourceType: 'instance', Tags: tags },
    { ResourceType: 'volume', Tags: tags },
  ]);
  const runInput = mock.commandCalls(RunInstancesCommand)[0]!.args[0].input;
  t.same(runInput.LaunchTemplate, { LaunchTemplateId: 'lt-1', Version: '1' });
  t.equal(runInput.MinCount, 3);
  t.equal(runInput.MaxCount, 3);
  t.equal(runInput.SubnetId, 'subnet-1');
  t.match(runInput.ClientToken, /^kubeseed-[0-9a-f]{48}$/);
  t.same(result.instances.map((i) => [i.id, i.privateIp, i.state]), [
    ['i-0', '10.0.1.1', 'running'],
    ['i-1', '10.0.1.2', 'running'],
    ['i-2', '10.0.1.3', 'running'],
  ]);
  t.equal(
    out.text,
    ['i-0: pending 10.0.1.1', 'i-1: pending 10.0.1.2', 'i-2: pending 10.0.1.3', 'i-0: pending -> running 10.0.1.1', 'i-1: pending -> running 10.0.1.2', 'i-2: pending -> running 10.0.1.3', ''].join('\n'),
    'not a terminal: one line per state change, nothing repeated',
  );
});

t.test('launch --role master --count 3 takes --masters 3, which every role\'s user-data carries as MASTER_COUNT', async (t) => {
  t.throws(() => planLaunch({ ...SPEC, role: 'master', count: 3 }, 'x'), {
    name: 'InputError',
    message: /--count 3 --role master, but the cluster has 1 master .*: pass --masters 3 to every launch of this cluster, minions included/,
  });
  t.ok(planLaunch({ ...SPEC, role: 'master', count: 1 }, 'x'), 'one master is fine');
  t.ok(planLaunch({ ...SPEC, role: 'master', count: 3, masters: 3 }, 'x'), 'three masters with --masters 3');
  t.ok(planLaunch({ ...SPEC, role: 'master', count: 1, masters: 3 }, 'x'), 'or one at a time (a replacement, or one per subnet)');
  t.ok(planLaunch(SPEC, 'x'), 'three minions are fine');

  // What EC2 is asked to store: each role's launch template carries the count in its role file.
  const { client, mock } = ec2Double(0);
  for (const role of ['master', 'minion']) {
    const { masters, userData } = await userDataFromFlags({ role, cluster: 'demo', masters: '3' });
    await launchRole(client, planLaunch({ ...SPEC, role: role as LaunchSpec['role'], count: 3, masters }, userData), { out: sink(), ...quiet });
  }
  const stored = mock.commandCalls(CreateLaunchTemplateCommand).map((c) => Buffer.from(c.args[0].input.LaunchTemplateData!.UserData!, 'base64').toString('utf8'));
  t.equal(stored.length, 2, 'a template per role');
  for (const [i, role] of ['masters', 'minions'].entries()) {
    t.match(stored[i], new RegExp(`path: /etc/sysconfig/kubernetes-${role}\\n[\\s\\S]*\\n +MASTER_COUNT="3"\\n`), `the ${role}' role file says MASTER_COUNT=3`);
  }
  const one = await userDataFromFlags({ role: 'minion', cluster: 'demo' });
  t.equal(one.masters, 1);
  t.notMatch(one.userData, /MASTER_COUNT/, 'one master (the default) leaves MASTER_COUNT unset, as before');
  t.equal((await userDataFromFlags({ role: 'minion', cluster: 'demo', set: ['MASTER_COUNT=3'] })).masters, 3, '--set MASTER_COUNT=3 says the same');
  await t.rejects(userDataFromFlags({ role: 'minion', cluster: 'demo', masters: '3', set: ['MASTER_COUNT=5'] }), {
    name: 'UsageError',
    message: '--masters 3 disagrees with --set MASTER_COUNT=5: give one',
  });
  await t.rejects(userDataFromFlags({ role: 'minion', cluster: 'demo', masters: '7' }), { name: 'UsageError', message: /--masters must be a whole number from 1 to 5, got "7"/ });
  await t.rejects(userDataFromFlags({ role: 'minion', cluster: 'demo', set: ['MASTER_COUNT=two'] }), { name: 'UsageError', message: /MASTER_COUNT "two" is not a whole number from 1 to 5/ });
});

t.test('running the same launch again changes nothing and launches nothing new', async (t) => {
  const { client, mock } = ec2Double(0);
  const plan = planLaunch(SPEC, await renderUserData({ role: 'minion', cluster: 'demo' }));
  const first = await launchRole(client, plan, { out: sink(), ...quiet });
  const again = await launchRole(client, planLaunch(SPEC, await renderUserData({ role: 'minion', cluster: 'demo' })), { out: sink(), ...quiet });
  t.equal(again.template.action, 'unchanged');
  t.equal(mock.commandCalls(CreateLaunchTemplateVersionCommand).length, 0);
  t.same(again.instances.map((i) => i.id), first.instances.map((i) => i.id), 'the client token returned the same instances');
  const tokens = mock.commandCalls(RunInstancesCommand).map((c) => c.args[0].input.ClientToken);
  t.equal(tokens[0], tokens[1]);

  // New user-data: a new template version becomes the default; a new token launches new instances.
  const changed = planLaunch(SPEC, await renderUserData({ role: 'minion', cluster: 'demo', vars: { CLOUD_PROVIDER: 'external' } }));
  const third = await launchRole(client, changed, { out: sink(), ...quiet });
  t.same(third.template, { id: 'lt-1', version: 2, action: 'updated' });
  t.same(mock.commandCalls(ModifyLaunchTemplateCommand)[0]!.args[0].input, { LaunchTemplateId: 'lt-1', DefaultVersion: '2' });
  t.same(mock.commandCalls(RunInstancesCommand)[2]!.args[0].input.LaunchTemplate, { LaunchTemplateId: 'lt-1', Version: '2' });
  t.notSame(third.instances.map((i) => i.id), first.instances.map((i) => i.id));
  // An explicit --token launches more of the same on purpose.
  t.equal(planLaunch(SPEC, 'x', 'batch-2').token, 'batch-2');
  t.throws(() => planLaunch(SPEC, 'x', 'has space'), /bad --token/);
});

t.test('on a terminal the progress is one line redrawn in place', async (t) => {
  const { client } = ec2Double(1);
  const out = sink(true);
  await launchRole(client, planLaunch({ ...SPEC, count: 2 }, 'x'), { out, ...quiet });
  const frames = out.text.split('\r\x1b[2K').filter(Boolean);
  t.same(frames.slice(0, 2), ['waiting for 2 instances: 2 pending (0 s)', 'waiting for 2 instances: 1 running, 1 pending (0 s)']);
  t.ok(out.text.endsWith('2 running (0 s)\n'));
});

t.test('user-data over 16 KB is gzipped (cloud-init inflates it); beyond that it is refused', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kubeseed-big-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // PEM-like secrets about the size of real ones, for a master's full set.
  for (const { name } of SECRET_FILES) {
    const body = Array.from({ length: 30 }, (_, i) => Buffer.from(`${name}-${i}-`.repeat(8)).toString('base64').slice(0, 64)).join('\n');
    await writeFile(path.join(dir, name), `-----BEGIN X-----\n${body}\n-----END X-----\n`);
  }
  writeServingCert(dir);
  const userData = await renderUserData({ role: 'master', cluster: 'demo', secretsDir: dir });
  t.ok(Buffer.byteLength(userData) > USER_DATA_LIMIT, `rendered ${Buffer.byteLength(userData)} bytes`);
  const plan = planLaunch({ ...SPEC, role: 'master', count: 1 }, userData);
  t.equal(plan.userData.gzipped, true);
  t.ok(plan.userData.bytes <= USER_DATA_LIMIT);
  t.equal(gunzipSync(Buffer.from(plan.data.UserData!, 'base64')).toString('utf8'), userData);
  // cloud-init's own user-data processor (Debian's 22.4) takes the gzipped bytes as the same cloud-config.
  const gz = path.join(dir, 'user-data.gz');
  await writeFile(gz, Buffer.from(plan.data.UserData!, 'base64'));
  const py = [
    'import sys, json',
    'from cloudinit import user_data',
    'msg = user_data.UserDataProcessor({}).process(open(sys.argv[1], "rb").read())',
    'print(json.dumps([[p.get_content_type(), (p.get_payload(decode=True) or b"").decode()] for p in msg.walk() if not p.is_multipart()]))',
  ].join('\n');
  const { stdout } = await run('/usr/bin/python3', ['-c', py, gz]);
  t.same(JSON.parse(stdout), [['text/cloud-config', userData]]);
  const random = Buffer.from(Array.from({ length: 20000 }, () => Math.floor(Math.random() * 256))).toString('base64');
  t.throws(() => planLaunch(SPEC, random), new InputError(`user-data is ${random.length} bytes`), 'incompressible and too big');
});

t.test('bad input is refused before any AWS call', async (t) => {
  t.throws(() => planLaunch({ ...SPEC, imageId: 'ubuntu' }, 'x'), /bad image id "ubuntu"/);
  await t.rejects(renderUserData({ role: 'minion', cluster: 'Bad_Name' }), /CLUSTER_NAME "Bad_Name" is not a DNS label/);
});

t.test('an instance that dies while we wait is named, with the reason and a hint', async (t) => {
  const { client, mock } = ec2Double();
  mock.on(DescribeInstancesCommand).resolves({
    Reservations: [{ Instances: [{ InstanceId: 'i-0', State: { Name: 'terminated' }, StateReason: { Message: 'Server.InternalError' } }, { InstanceId: 'i-1', State: { Name: 'running' } }, { InstanceId: 'i-2', State: { Name: 'running' } }] }],
  });
  const err = await launchRole(client, planLaunch(SPEC, 'x'), { out: sink(), ...quiet }).catch((e) => e);
  t.equal(err.message, 'i-0 is terminated (Server.InternalError); if an earlier launch used the same client token, pass --token to launch new instances');
});

t.test('the wait gives up after its timeout, naming who is not running', async (t) => {
  const { client } = ec2Double(1000);
  let clock = 0;
  const err = await launchRole(client, planLaunch({ ...SPEC, count: 1 }, 'x'), {
    out: sink(),
    log: () => undefined,
    timeoutMs: 60_000,
    now: () => clock,
    sleep: async (ms) => void (clock += ms),
  }).catch((e) => e);
  t.equal(err.message, 'gave up waiting after 60 s: i-0 pending');
});

t.test('AWS errors read as one plain line', async (t) => {
  const { client, mock } = ec2Double();
  mock.on(RunInstancesCommand).rejects(awsError('InvalidAMIID.NotFound', "The image id '[ami-0123456789abcdef0]' does not exist"));
  const err = await launchRole(client, planLaunch(SPEC, 'x'), { out: sink(), ...quiet }).catch((e) => e);
  t.equal(errorLine(err), "AWS InvalidAMIID.NotFound: The image id '[ami-0123456789abcdef0]' does not exist");
});

t.test('CLI --dry-run prints both requests without AWS and without the user-data bytes', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kubeseed-dry-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const { name } of SECRET_FILES) await writeFile(path.join(dir, name), `SECRET-${name}\n`);
  writeServingCert(dir);
  const env = { PATH: process.env.PATH!, HOME: dir, AWS_EC2_METADATA_DISABLED: 'true', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };
  const { stdout } = await run(
    path.resolve('node_modules/.bin/tsx'),
    ['scripts/launch.ts', '--role', 'master', '--cluster', 'Demo', '--image', 'ami-0123456789abcdef0', '--count', '1', '--secrets', dir, '--dry-run'],
    { env },
  );
  t.match(stdout, /^CreateLaunchTemplate/);
  t.match(stdout, /"LaunchTemplateName": "kubeseed-demo-master"/);
  t.match(stdout, /"HttpTokens": "required"/);
  t.match(stdout, /"UserData": "<\d+ bytes, base64; see npm run userdata>"/);
  t.match(stdout, /"ClientToken": "kubeseed-[0-9a-f]{48}"/);
  t.notMatch(stdout, /SECRET-|U0VDUkVU/, 'no secret, plain or base64');
  const bad = await run(path.resolve('node_modules/.bin/tsx'), ['scripts/launch.ts', '--role', 'boss', '--cluster', 'demo', '--image', 'ami-0123456789abcdef0'], { env }).catch((e) => e);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /^launch: bad role "boss": expected master or minion\nusage: /);
});
