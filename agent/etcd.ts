// Phase `etcd` (masters): makes this master an etcd member of the one cluster. It first makes sure the data dir
// it reads is the one etcd will use (the disk labelled kubeseed-etcd mounted, when there is one; a warning when
// it is in RAM, where a power-off loses it). It finds its address in the
// masters record, issues its member certificates from the CAs the secrets carry, asks the other listed masters
// whether a cluster runs already, lets agent/etcd-membership.ts decide (restart, new, join, or wait), adds
// itself through a running member when joining, and writes etcd.env and the API server's member list.
// A one-master cluster (MASTER_COUNT=1, the default) needs no DNS: its member is on loopback, as before.
import { X509Certificate, createPrivateKey, generateKeyPairSync } from 'node:crypto';
import * as os from 'node:os';
import { monotonicMs, sleep } from './abort.js';
import type { LeafSpec } from './cluster-certs.js';
import { roleRecordName } from './dns-names.js';
import { memberAdd, memberList, memberRemove, EtcdCallError, type EtcdTls } from './etcd-client.js';
import {
  APISERVER_MEMBER_CERT,
  ETCD_DATA_DIR,
  ETCD_DISK,
  ETCD_DISK_LABEL,
  ETCD_ENV,
  ETCD_MEMBER_CERT,
  ETCD_MEMBER_DIR,
  ETCD_SERVERS_ENV,
  etcdStorage,
  memberCertSpecs,
  MOUNTINFO,
  renderEtcdEnv,
  renderEtcdServersEnv,
} from './etcd-files.js';
import { probeHealth } from './etcd-health.js';
import { clientUrl, decideMembership, ETCD_PORTS, peerUrl, urlAddress, type EtcdMember, type EtcdPorts, type Membership } from './etcd-membership.js';
import { envFileVars } from './contract/env-file.js';
import { masterCountOf } from './weave-consensus.js';
import { InputError } from './errors.js';
import type { Host } from './host.js';
import { PKI_DIR } from './kube-files.js';
import { describeLookup, localIPv4, lookupPeers, type Interfaces } from './peers.js';
import type { Phase, PhaseContext, RoleConfig } from './phase.js';
import { SECRETS_DIR } from './secrets-layout.js';
import { DEFAULT_SERVICE_CIDR, parseServiceCidr } from './service-cidr.js';
import { checkIssuedBy, parseCertificate, subjectAltNames } from './x509.js';
import { issueCertificate } from './x509-issue.js';

/** Member certificates last this long and are issued again when less than RENEW_DAYS are left. */
const CERT_DAYS = 365;
const RENEW_DAYS = 30;

/**
 * Whether the certificate and key at hand are ones to keep: the certificate from this CA, naming every
 * address and name wanted, not near its end, and the key its own (a crash between writing a new key and
 * its certificate leaves a pair that does not match, which is issued again).
 */
export function certStillGood(pem: string | undefined, keyPem: string | undefined, ca: X509Certificate, spec: LeafSpec, now: Date): boolean {
  if (!pem || !keyPem) return false;
  try {
    const cert = parseCertificate(pem, 'member certificate');
    checkIssuedBy(cert, ca, 'member certificate', 'CA');
    if (!cert.checkPrivateKey(createPrivateKey(keyPem))) return false;
    const names = subjectAltNames(cert);
    if (!(spec.dns ?? []).every((d) => names.dns.includes(d)) || !(spec.ip ?? []).every((ip) => names.ip.includes(ip))) return false;
    return Date.parse(cert.validTo) - now.getTime() > RENEW_DAYS * 86_400_000;
  } catch {
    return false;
  }
}

export interface EtcdOptions {
  interfaces: () => Interfaces;
  ports: EtcdPorts;
  pollMs: number;
  timeoutMs: number;
  dnsTimeoutMs: number;
  callTimeoutMs: number;
  /** Between health passes of the reconcile loop. */
  healthEveryMs: number;
  now: () => Date;
}

export const DEFAULT_ETCD_OPTIONS: EtcdOptions = {
  interfaces: () => os.networkInterfaces(),
  ports: ETCD_PORTS,
  pollMs: 2_000,
  timeoutMs: 15 * 60_000,
  dnsTimeoutMs: 5_000,
  // A loaded member answers slowly, not never: 3 s read three healthy members of five TCG guests on two cores as
  // one "no answer" for ten minutes while etcdctl (10 s) found them all healthy. Health passes are 30 s apart.
  callTimeoutMs: 10_000,
  healthEveryMs: 30_000,
  now: () => new Date(),
};

/** Issues (or keeps) this master's two certificates; returns the TLS identity the agent uses towards etcd. */
async function ensureMemberCerts(host: Host, config: RoleConfig, self: string, now: Date): Promise<EtcdTls> {
  const service = parseServiceCidr(config.vars.SERVICE_CIDR ?? DEFAULT_SERVICE_CIDR, { file: config.file });
  const specs = memberCertSpecs(config.cluster, config.domain, service, self);
  const pairs = [
    { spec: specs.etcd, ca: 'etcd-ca', files: ETCD_MEMBER_CERT },
    { spec: specs.apiserver, ca: 'ca', files: APISERVER_MEMBER_CERT },
  ];
  for (const { spec, ca, files } of pairs) {
    const caPem = await host.readFile(`${SECRETS_DIR}/${ca}.crt`);
    const caKeyPem = await host.readFile(`${SECRETS_DIR}/${ca}.key`);
    if (!caPem || !caKeyPem) {
      throw new InputError(`missing secret ${ca}.${caPem ? 'key' : 'crt'}: a master issues its own ${spec.name} certificate with it (render the master's user-data with the current secrets)`, {
        file: `${SECRETS_DIR}/${ca}.${caPem ? 'key' : 'crt'}`,
      });
    }
    const caCert = parseCertificate(caPem, `${SECRETS_DIR}/${ca}.crt`);
    if (certStillGood(await host.readFile(files.crt), await host.readFile(files.key), caCert, spec, now)) continue;
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const pem = issueCertificate({ spec, publicKey: privateKey, caCertDer: caCert.raw, caKey: createPrivateKey(caKeyPem), now, days: CERT_DAYS });
    // Key first: a crash between the two leaves a certificate that no longer matches its key, which certStillGood refuses.
    await host.writeFile(files.key, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
    await host.writeFile(files.crt, pem, 0o644);
    host.log('cert-issued', { path: files.crt, names: [...(spec.dns ?? []), ...(spec.ip ?? [])].join(',') });
  }
  const read = async (path: string) => (await host.readFile(path)) ?? '';
  return { ca: await read(`${PKI_DIR}/etcd-ca.crt`), cert: await read(ETCD_MEMBER_CERT.crt), key: await read(ETCD_MEMBER_CERT.key) };
}

/**
 * The members of a running cluster, from the first listed master that answers; else why none did (each
 * master's error), for `agent status`: a master that cannot reach its peers should say so, not only wait.
 */
async function askMembers(
  others: readonly string[],
  ports: EtcdPorts,
  tls: EtcdTls,
  timeoutMs: number,
): Promise<{ url: string; members: EtcdMember[] } | { errors: string[] }> {
  const errors: string[] = [];
  for (const address of others) {
    const url = clientUrl(address, ports);
    try {
      return { url, members: await memberList(url, tls, timeoutMs) };
    } catch (err) {
      if (!(err instanceof EtcdCallError)) throw err;
      errors.push(err.message);
    }
  }
  return { errors };
}

export function createEtcdPhase(overrides: Partial<EtcdOptions> = {}): Phase {
  const opts = { ...DEFAULT_ETCD_OPTIONS, ...overrides };
  let lastHealth: string | undefined;

  return {
    name: 'etcd',
    roles: ['master'],
    // As pki: a master launched without secrets has no CA to issue its member certificates from.
    async skipReason(ctx) {
      if (await ctx.host.stat(`${SECRETS_DIR}/etcd-ca.crt`)) return undefined;
      return `no etcd CA in ${SECRETS_DIR} (render user-data with --secrets DIR to ship it)`;
    },

    async run(ctx) {
      const expected = masterCountOf(ctx.config.vars);
      const record = roleRecordName('master', ctx.config.cluster, ctx.config.domain);
      const deadline = monotonicMs() + opts.timeoutMs;
      const looks: string[][] = [];
      let waitingOn: string | undefined;
      const wait = async (what: string) => {
        if (what !== waitingOn) {
          waitingOn = what;
          ctx.host.log('waiting', { on: what });
          await ctx.report({ waitingOn: what });
        }
        const left = deadline - monotonicMs();
        if (left <= 0) throw new Error(`gave up after ${Math.round(opts.timeoutMs / 1000)} s waiting for ${what}`);
        await sleep(Math.min(opts.pollMs, left), ctx.signal);
      };

      // The data dir decides restart or join below: read it only once the labelled disk, if any, is mounted there.
      for (;;) {
        const storage = etcdStorage(await ctx.host.readFile(MOUNTINFO), (await ctx.host.stat(ETCD_DISK)) !== undefined);
        if (storage.kind === 'unmounted') {
          await wait(`the disk labelled ${ETCD_DISK_LABEL} to be mounted at ${ETCD_DATA_DIR} (kubeseed-etcd-disk.service)`);
          continue;
        }
        if (storage.kind === 'ram') {
          const warning = `etcd's data dir ${ETCD_DATA_DIR} is in RAM (${storage.fstype} at ${storage.mount}): a power-off of this master loses its member's data (it rejoins as a new member), of every master at once the cluster's; give masters a disk labelled ${ETCD_DISK_LABEL}`;
          ctx.host.log('etcd-data-in-ram', { dir: ETCD_DATA_DIR, fs: storage.fstype, warning });
          await ctx.report({ warning });
        }
        break;
      }

      for (;;) {
        let others: string[] = [];
        let self: string;
        if (expected === 1) {
          self = '127.0.0.1';
          looks.push([self]);
        } else {
          const local = localIPv4(opts.interfaces());
          const lookup = await lookupPeers(record, ctx.nameserver, local, opts.dnsTimeoutMs, ctx.signal);
          if (lookup.kind !== 'ok') {
            looks.length = 0;
            await wait(describeLookup(record, lookup, local).replace('minions', 'masters'));
            continue;
          }
          self = lookup.view.self[0]!;
          others = lookup.view.peers;
          looks.push([self, ...others]);
        }
        looks.splice(0, looks.length - 2);
        const tls = await ensureMemberCerts(ctx.host, ctx.config, self, opts.now());
        const dataDir = (await ctx.host.stat(ETCD_MEMBER_DIR))?.isDirectory ?? false;
        const asked = dataDir || !ctx.host.live ? undefined : await askMembers(others, opts.ports, tls, opts.callTimeoutMs);
        const answer = asked && 'members' in asked ? asked : undefined;
        const membership = decideMembership({ self, looks: expected === 1 ? [[self], [self]] : looks, expected, dataDir, existing: answer?.members, ports: opts.ports });
        if (membership.kind === 'wait') {
          const unanswered = asked && 'errors' in asked && asked.errors.length ? `; no running cluster answered (${asked.errors[0]})` : '';
          await wait(`${membership.reason}${unanswered}`);
          continue;
        }
        if (membership.kind === 'join' && answer) {
          try {
            if (membership.remove) {
              await memberRemove(answer.url, membership.remove, tls, opts.callTimeoutMs);
              ctx.host.log('etcd-member-removed', { id: membership.remove, via: answer.url });
            }
            if (membership.add) {
              await memberAdd(answer.url, peerUrl(self, opts.ports), tls, opts.callTimeoutMs);
              ctx.host.log('etcd-member-added', { name: membership.name, via: answer.url });
            }
          } catch (err) {
            // etcd refuses reconfiguration until every member has been connected a while ("unhealthy cluster").
            if (!(err instanceof EtcdCallError)) throw err;
            await wait(`etcd to accept this master as a member (${err.message})`);
            continue;
          }
        }
        if (waitingOn) await ctx.report({ waitingOn: null });
        // The API server's members: the cluster's when one answered, else the masters this one knows of.
        const started = (answer?.members ?? []).flatMap((m) => (m.name ? (m.clientURLs ?? []).map(urlAddress) : []));
        const servers = membership.kind === 'new' ? membership.members : [self, ...(answer ? started : others)];
        await writeMemberFiles(ctx, self, membership, servers);
        return;
      }
    },

    // Reads who it is from what run() wrote (etcd.env, the member certificate), so an agent restarted
    // under a running etcd reports the same as the one that started it.
    async reconcile(ctx) {
      if (!ctx.host.live) return opts.healthEveryMs;
      const env = await ctx.host.readFile(ETCD_ENV);
      const advertised = env === undefined ? undefined : envFileVars(env, ETCD_ENV).ETCD_ADVERTISE_CLIENT_URLS;
      const read = (path: string) => ctx.host.readFile(path);
      const [ca, cert, key] = await Promise.all([read(`${PKI_DIR}/etcd-ca.crt`), read(ETCD_MEMBER_CERT.crt), read(ETCD_MEMBER_CERT.key)]);
      if (!advertised || !ca || !cert || !key) return opts.healthEveryMs;
      const identity = { ca, cert, key };
      const member = urlAddress(advertised);
      let health;
      try {
        health = await probeHealth(await memberList(advertised, identity, opts.callTimeoutMs), identity, opts.callTimeoutMs);
      } catch (err) {
        if (!(err instanceof EtcdCallError)) throw err;
        health = { state: 'lost' as const, members: [], quorum: { needed: 0, healthy: 0 }, summary: `lost: this member does not answer (${err.message})` };
      }
      if (health.state !== lastHealth) {
        ctx.host.log('etcd-health', { state: health.state, summary: health.summary });
        lastHealth = health.state;
      }
      await ctx.report({ facts: { etcd: { member, health } } });
      return opts.healthEveryMs;
    },
  };

  async function writeMemberFiles(ctx: PhaseContext, address: string, membership: Exclude<Membership, { kind: 'wait' }>, serverAddresses: readonly string[]) {
    const servers = [...new Set(serverAddresses)].map((a) => clientUrl(a, opts.ports));
    const changed = [
      await ctx.host.writeFile(ETCD_ENV, renderEtcdEnv({ cluster: ctx.config.cluster, self: address, membership, ports: opts.ports }), 0o644),
      await ctx.host.writeFile(ETCD_SERVERS_ENV, renderEtcdServersEnv(servers), 0o644),
    ];
    if (changed.some(Boolean)) ctx.host.log('etcd-member', { name: membership.name, state: membership.kind, servers: servers.length });
    await ctx.report({ facts: { etcd: { member: address, decision: membership.kind, servers } } });
  }
}

export const etcdPhase = createEtcdPhase();
