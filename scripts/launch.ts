// npm run launch -- --role minion --cluster demo --image ami-... [--count N] [--masters N] [--instance-type T] [--subnet ID]
//   [--security-group ID ...] [--key-name K] [--iam-profile NAME|ARN] [--domain D] [--set KEY=VALUE ...]
//   [--secrets DIR] [--token T] [--no-wait] [--dry-run] [--region R]
import { parseCommandLine, required, runMain, wholeNumber } from '../agent/command-line.js';
import { checkAwsSetup, makeClients } from './cloud/aws.js';
import { errorLine, USER_DATA_FLAGS, userDataFromFlags } from './cloud/cli.js';
import { launchRole } from './cloud/ec2-launch.js';
import { planLaunch, type LaunchSpec } from './cloud/launch-plan.js';

const USAGE = `usage: npm run launch -- --role master|minion --cluster NAME --image AMI [--count N] [--masters N] [--instance-type TYPE]
  [--subnet ID] [--security-group ID ...] [--key-name NAME] [--iam-profile NAME|ARN] [--domain DOMAIN]
  [--set KEY=VALUE ...] [--secrets DIR] [--token TOKEN] [--no-wait] [--dry-run] [--region REGION]
Exit 0 launched (or planned, with --dry-run), 1 AWS refused or failed, 2 usage error or bad input (named).`;

runMain({ name: 'launch', usage: USAGE, describe: errorLine }, async (argv) => {
  const { values: v } = parseCommandLine(
    argv,
    {
      ...USER_DATA_FLAGS,
      image: { type: 'string' },
      count: { type: 'string' },
      'instance-type': { type: 'string' },
      subnet: { type: 'string' },
      'security-group': { type: 'string', multiple: true },
      'key-name': { type: 'string' },
      'iam-profile': { type: 'string' },
      token: { type: 'string' },
      'no-wait': { type: 'boolean' },
      'dry-run': { type: 'boolean' },
      region: { type: 'string' },
    },
  );
  // Everything that can be wrong with the input is found here, before any AWS call.
  const { role, cluster, masters, userData } = await userDataFromFlags(v);
  const imageId = required(v.image, '--image');
  const count = wholeNumber('--count', v.count ?? '1', { min: 1 });
  const spec: LaunchSpec = {
    cluster,
    role,
    imageId,
    instanceType: v['instance-type'] ?? 't3.medium',
    count,
    masters,
    ...(v['key-name'] !== undefined && { keyName: v['key-name'] }),
    ...(v['security-group'] && { securityGroupIds: v['security-group'] }),
    ...(v['iam-profile'] !== undefined && { iamInstanceProfile: v['iam-profile'] }),
    ...(v.subnet !== undefined && { subnetId: v.subnet }),
  };
  const plan = planLaunch(spec, userData, v.token);

  if (v['dry-run']) {
    // User-data may hold private keys: the dry run shows its size, never its bytes.
    const { bytes, gzipped } = plan.userData;
    const shown = { ...plan.data, UserData: `<${bytes} bytes${gzipped ? ' gzipped' : ''}, base64; see npm run userdata>` };
    console.log(`CreateLaunchTemplate (or CreateLaunchTemplateVersion + ModifyLaunchTemplate if ${plan.templateName} differs):`);
    console.log(JSON.stringify({ LaunchTemplateName: plan.templateName, VersionDescription: plan.digest, LaunchTemplateData: shown }, null, 2));
    console.log('RunInstances:');
    console.log(JSON.stringify(plan.runInput(undefined, '$Default'), null, 2));
    return;
  }

  const { ec2 } = makeClients(v.region);
  await checkAwsSetup(ec2);
  const { instances } = await launchRole(ec2, plan, { out: process.stdout, wait: !v['no-wait'] });
  for (const i of instances) console.log(`${i.id}\t${i.privateIp ?? '-'}\t${i.state}`);
});
