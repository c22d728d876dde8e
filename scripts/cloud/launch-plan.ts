// What `launch` asks EC2 for, decided without talking to EC2: the launch template data of a role,
// its digest (stored as the version description, so an unchanged template is not re-versioned), the
// user-data encoding and the idempotency token.
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import type { RequestLaunchTemplateData, RunInstancesCommandInput, Tag, _InstanceType } from '@aws-sdk/client-ec2';
import type { Role } from '../../agent/dns-names.js';
import { InputError } from '../../agent/errors.js';
import { CLUSTER_TAG, ROLE_TAG } from './members.js';

/** EC2 takes at most 16 KB of user-data before base64 (RunInstances, UserData). */
export const USER_DATA_LIMIT = 16 * 1024;

export interface LaunchSpec {
  cluster: string;
  role: Role;
  imageId: string;
  instanceType: string;
  count: number;
  /** How many masters the cluster has (the MASTER_COUNT its user-data carries): a master launch asks for at most that many. */
  masters: number;
  keyName?: string;
  securityGroupIds?: string[];
  /** instance profile name, or its ARN */
  iamInstanceProfile?: string;
  subnetId?: string;
}

export function templateName(cluster: string, role: Role): string {
  return `kubeseed-${cluster}-${role}`;
}

export function roleTags(cluster: string, role: Role): Tag[] {
  return [
    { Key: CLUSTER_TAG, Value: cluster },
    { Key: ROLE_TAG, Value: role },
    { Key: 'Name', Value: `${cluster}-${role}` },
  ];
}

/**
 * Base64 user-data within EC2's limit. cloud-init recognises gzip by its magic bytes, so a master's
 * user-data with every secret (PEM text compresses about 4:1) still fits; past that it is an error
 * rather than an instance that boots without its role.
 */
export function encodeUserData(text: string): { base64: string; bytes: number; gzipped: boolean } {
  const raw = Buffer.from(text, 'utf8');
  if (raw.length <= USER_DATA_LIMIT) return { base64: raw.toString('base64'), bytes: raw.length, gzipped: false };
  const gz = gzipSync(raw, { level: 9 });
  if (gz.length > USER_DATA_LIMIT) {
    throw new InputError(`user-data is ${raw.length} bytes (${gz.length} gzipped); EC2 accepts at most ${USER_DATA_LIMIT}`);
  }
  return { base64: gz.toString('base64'), bytes: gz.length, gzipped: true };
}

const AMI = /^ami-[0-9a-f]{8,17}$/;

export function templateData(spec: LaunchSpec, userDataBase64: string): RequestLaunchTemplateData {
  if (!AMI.test(spec.imageId)) throw new InputError(`bad image id ${JSON.stringify(spec.imageId)}: expected ami-<hex>`, { value: spec.imageId });
  const tags = roleTags(spec.cluster, spec.role);
  const profile = spec.iamInstanceProfile;
  return {
    ImageId: spec.imageId,
    InstanceType: spec.instanceType as _InstanceType,
    UserData: userDataBase64,
    // IMDSv2 only, and one hop: a pod behind the node's bridge cannot reach the node's credentials.
    MetadataOptions: { HttpTokens: 'required', HttpPutResponseHopLimit: 1, HttpEndpoint: 'enabled' },
    TagSpecifications: [
      { ResourceType: 'instance', Tags: tags },
      { ResourceType: 'volume', Tags: tags },
    ],
    ...(spec.keyName && { KeyName: spec.keyName }),
    ...(spec.securityGroupIds?.length && { SecurityGroupIds: spec.securityGroupIds }),
    ...(profile && { IamInstanceProfile: profile.startsWith('arn:') ? { Arn: profile } : { Name: profile } }),
  };
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/** Stable across runs for the same data (JSON with sorted keys), stored as the version description. */
export function dataDigest(data: RequestLaunchTemplateData): string {
  const canonical = JSON.stringify(data, (_, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1))) : v,
  );
  return `kubeseed sha256:${sha256(canonical)}`;
}

/**
 * RunInstances' idempotency token (at most 64 ASCII characters): the same launch asked twice (a
 * retried command, a lost response) returns the first launch's instances instead of doubling them.
 * Launching more of the same on purpose takes a different --token.
 */
export function clientToken(spec: LaunchSpec, digest: string, token?: string): string {
  if (token !== undefined) {
    if (!/^[\x21-\x7e]{1,64}$/.test(token)) throw new InputError(`bad --token ${JSON.stringify(token)}: 1 to 64 printable ASCII characters`, { value: token });
    return token;
  }
  const key = JSON.stringify([templateName(spec.cluster, spec.role), digest, spec.count, spec.subnetId ?? '']);
  return `kubeseed-${sha256(key).slice(0, 48)}`;
}

export interface LaunchPlan {
  templateName: string;
  data: RequestLaunchTemplateData;
  digest: string;
  token: string;
  userData: { bytes: number; gzipped: boolean };
  /** RunInstances input for a template id and version (by name and `$Default` when not known yet). */
  runInput(templateId: string | undefined, version: string): RunInstancesCommandInput;
}

export function planLaunch(spec: LaunchSpec, userData: string, token?: string): LaunchPlan {
  // Masters beyond MASTER_COUNT would never be listed alike by all: etcd forms only from exactly that many.
  if (spec.role === 'master' && spec.count > spec.masters) {
    throw new InputError(
      `--count ${spec.count} --role master, but the cluster has ${spec.masters} master${spec.masters === 1 ? '' : 's'} (--masters, MASTER_COUNT in every node's user-data): pass --masters ${spec.count} to every launch of this cluster, minions included`,
      { value: String(spec.count) },
    );
  }
  const encoded = encodeUserData(userData);
  const data = templateData(spec, encoded.base64);
  const digest = dataDigest(data);
  const name = templateName(spec.cluster, spec.role);
  const clientTok = clientToken(spec, digest, token);
  return {
    templateName: name,
    data,
    digest,
    token: clientTok,
    userData: { bytes: encoded.bytes, gzipped: encoded.gzipped },
    runInput: (templateId, version) => ({
      LaunchTemplate: templateId ? { LaunchTemplateId: templateId, Version: version } : { LaunchTemplateName: name, Version: version },
      MinCount: spec.count,
      MaxCount: spec.count,
      ClientToken: clientTok,
      ...(spec.subnetId && { SubnetId: spec.subnetId }),
    }),
  };
}
