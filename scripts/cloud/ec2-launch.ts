// `launch` against EC2: make the role's launch template hold exactly the planned data (a new default
// version only when it changed), run N instances with an idempotency token, and wait for them.
import {
  CreateLaunchTemplateCommand,
  CreateLaunchTemplateVersionCommand,
  DescribeInstancesCommand,
  DescribeLaunchTemplateVersionsCommand,
  DescribeLaunchTemplatesCommand,
  ModifyLaunchTemplateCommand,
  RunInstancesCommand,
  type EC2Client,
  type RequestLaunchTemplateData,
  type RunInstancesCommandInput,
} from '@aws-sdk/client-ec2';
import { DEFAULT_RETRY, withRetry, type RetryPolicy } from './retry.js';
import { createProgress, type InstanceView, type Output } from './progress.js';
import type { LaunchPlan } from './launch-plan.js';

export interface Template {
  id: string;
  version: number;
  action: 'created' | 'updated' | 'unchanged';
}

export async function ensureTemplate(ec2: EC2Client, name: string, data: RequestLaunchTemplateData, digest: string, retry: RetryPolicy = DEFAULT_RETRY): Promise<Template> {
  const existing = await withRetry('DescribeLaunchTemplates', () => ec2.send(new DescribeLaunchTemplatesCommand({ LaunchTemplateNames: [name] })), retry).catch(
    (err: Error) => {
      if (err.name === 'InvalidLaunchTemplateName.NotFoundException') return undefined;
      throw err;
    },
  );
  const found = existing?.LaunchTemplates?.[0];
  // The digest doubles as the idempotency token: a retried create/new-version cannot fork the template.
  const token = digest.slice(-64);
  if (!found?.LaunchTemplateId) {
    const out = await withRetry(
      'CreateLaunchTemplate',
      () =>
        ec2.send(
          new CreateLaunchTemplateCommand({
            LaunchTemplateName: name,
            VersionDescription: digest,
            LaunchTemplateData: data,
            ClientToken: token,
            TagSpecifications: [{ ResourceType: 'launch-template', Tags: data.TagSpecifications?.[0]?.Tags ?? [] }],
          }),
        ),
      retry,
    );
    return { id: out.LaunchTemplate!.LaunchTemplateId!, version: out.LaunchTemplate!.LatestVersionNumber ?? 1, action: 'created' };
  }
  const id = found.LaunchTemplateId;
  const current = await withRetry(
    'DescribeLaunchTemplateVersions',
    () => ec2.send(new DescribeLaunchTemplateVersionsCommand({ LaunchTemplateId: id, Versions: ['$Default'] })),
    retry,
  );
  const def = current.LaunchTemplateVersions?.[0];
  if (def?.VersionDescription === digest && def.VersionNumber) return { id, version: def.VersionNumber, action: 'unchanged' };
  const created = await withRetry(
    'CreateLaunchTemplateVersion',
    () => ec2.send(new CreateLaunchTemplateVersionCommand({ LaunchTemplateId: id, VersionDescription: digest, LaunchTemplateData: data, ClientToken: token })),
    retry,
  );
  const version = created.LaunchTemplateVersion!.VersionNumber!;
  await withRetry('ModifyLaunchTemplate', () => ec2.send(new ModifyLaunchTemplateCommand({ LaunchTemplateId: id, DefaultVersion: String(version) })), retry);
  return { id, version, action: 'updated' };
}

export async function runInstances(ec2: EC2Client, input: RunInstancesCommandInput, retry: RetryPolicy = DEFAULT_RETRY): Promise<InstanceView[]> {
  const out = await withRetry('RunInstances', () => ec2.send(new RunInstancesCommand(input)), retry);
  return (out.Instances ?? []).map((i) => ({ id: i.InstanceId!, state: i.State?.Name ?? 'pending', privateIp: i.PrivateIpAddress }));
}

export interface WaitOptions {
  out: Output;
  pollMs?: number;
  timeoutMs?: number;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
  retry?: RetryPolicy;
}

const GONE = new Set(['shutting-down', 'terminated', 'stopping', 'stopped']);

export async function waitRunning(ec2: EC2Client, ids: string[], opts: WaitOptions): Promise<InstanceView[]> {
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const now = opts.now ?? Date.now;
  const start = now();
  const progress = createProgress(opts.out);
  try {
    for (;;) {
      const out = await withRetry('DescribeInstances', () => ec2.send(new DescribeInstancesCommand({ InstanceIds: ids })), opts.retry ?? DEFAULT_RETRY).catch(
        (err: Error) => {
          // Fresh ids can be briefly unknown to DescribeInstances (eventual consistency): ask again.
          if (err.name === 'InvalidInstanceID.NotFound') return undefined;
          throw err;
        },
      );
      const found = new Map(
        (out?.Reservations ?? []).flatMap((r) => r.Instances ?? []).map((i) => [i.InstanceId!, { id: i.InstanceId!, state: i.State?.Name ?? 'pending', privateIp: i.PrivateIpAddress, reason: i.StateReason?.Message }]),
      );
      const views = ids.map((id) => found.get(id) ?? { id, state: 'pending', privateIp: undefined, reason: undefined });
      progress.update(views, now() - start);
      const gone = views.find((v) => GONE.has(v.state));
      if (gone) {
        throw new Error(
          `${gone.id} is ${gone.state}${gone.reason ? ` (${gone.reason})` : ''}; if an earlier launch used the same client token, pass --token to launch new instances`,
        );
      }
      if (views.every((v) => v.state === 'running')) return views.map(({ id, state, privateIp }) => ({ id, state, privateIp }));
      if (now() - start >= (opts.timeoutMs ?? 600_000)) {
        throw new Error(`gave up waiting after ${Math.round((now() - start) / 1000)} s: ${views.filter((v) => v.state !== 'running').map((v) => `${v.id} ${v.state}`).join(', ')}`);
      }
      await sleep(opts.pollMs ?? 5000);
    }
  } finally {
    progress.done();
  }
}

export interface LaunchResult {
  template: Template;
  instances: InstanceView[];
}

/** The whole launch: template, instances, and (unless `wait` is false) the wait for running. */
export async function launchRole(ec2: EC2Client, plan: LaunchPlan, opts: WaitOptions & { wait?: boolean; log?: (line: string) => void }): Promise<LaunchResult> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const retry = opts.retry ?? DEFAULT_RETRY;
  const template = await ensureTemplate(ec2, plan.templateName, plan.data, plan.digest, retry);
  log(`launch template ${plan.templateName} (${template.id}) ${template.action}, version ${template.version}`);
  const launched = await runInstances(ec2, plan.runInput(template.id, String(template.version)), retry);
  log(`launched ${launched.length} instance${launched.length === 1 ? '' : 's'} (client token ${plan.token})`);
  if (opts.wait === false) return { template, instances: launched };
  return { template, instances: await waitRunning(ec2, launched.map((i) => i.id), opts) };
}
