// Real etcd members (Debian's etcd) on loopback addresses of this machine (127.0.0.x: all of 127/8 is on lo),
// each started as etcd.service starts it: the unit's ExecStart flags (paths moved into a temp dir) plus the
// env file the agent renders, with a member certificate the agent's own code issues from the test cluster's
// etcd CA. Every member uses the same two ports on its own address, as masters do on theirs.
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import * as path from 'node:path';
import { envFileVars } from '../../agent/contract/env-file.js';
import { renderEtcdEnv, ETCD_MEMBER_CERT, memberCertSpecs } from '../../agent/etcd-files.js';
import type { EtcdTls } from '../../agent/etcd-client.js';
import type { EtcdPorts, Membership } from '../../agent/etcd-membership.js';
import { listValues, parseUnitFile } from '../../agent/unit-file.js';
import { DEFAULT_SERVICE_CIDR, parseServiceCidr } from '../../agent/service-cidr.js';
import { issueCertificate } from '../../agent/x509-issue.js';
import { UNITS_DIR } from '../../scripts/unit-binaries.js';
import { tempDir } from './secrets.js';

export const ETCD = '/usr/bin/etcd';

export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

/** etcd.service's ExecStart arguments, word-split as systemd does for our (unquoted) flags, moved into `dir`. */
export async function unitFlags(pkiDir: string, dataDir: string, metricsUrl: string): Promise<string[]> {
  const file = path.join(UNITS_DIR, 'etcd.service');
  const { unit } = parseUnitFile(await readFile(file, 'utf8'), file);
  const [, ...args] = listValues(unit, 'Service', 'ExecStart')[0]!.value.split(/\s+/);
  return args.map((a) =>
    a
      .replaceAll('/etc/kubernetes/pki/', `${pkiDir}/`)
      .replaceAll('/var/lib/etcd', dataDir)
      .replace(/^--listen-metrics-urls=.*/, `--listen-metrics-urls=${metricsUrl}`),
  );
}

export interface TestCluster {
  secrets: string;
  ports: EtcdPorts;
  /** A client the members trust: the etcd CA and a member certificate of a loopback master. */
  tls: EtcdTls;
  member(address: string, opts?: { certIps?: string[] }): Promise<TestMember>;
  cleanup(): Promise<void>;
}

export interface TestMember {
  address: string;
  dataDir: string;
  /** etcd-ca.crt, etcd-member.crt and .key, as the etcd phase leaves them in /etc/kubernetes/pki. */
  pkiDir: string;
  log(): string;
  start(membership: Exclude<Membership, { kind: 'wait' }>): void;
  /** SIGTERM and wait for the exit. */
  stop(): Promise<void>;
  running(): boolean;
}

/** Issues the etcd member certificate for `address` (or for `ips` instead, to make a bad one) into `pkiDir`. */
export async function issueMemberCert(secrets: string, pkiDir: string, address: string, ips?: string[]): Promise<void> {
  const spec = memberCertSpecs('demo', 'k8s', parseServiceCidr(DEFAULT_SERVICE_CIDR), address).etcd;
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const pem = issueCertificate({
    spec: ips ? { ...spec, ip: ips } : spec,
    publicKey: privateKey,
    caCertDer: new X509Certificate(await readFile(path.join(secrets, 'etcd-ca.crt'))).raw,
    caKey: createPrivateKey(await readFile(path.join(secrets, 'etcd-ca.key'))),
    now: new Date(),
    days: 1,
  });
  await mkdir(pkiDir, { recursive: true });
  await writeFile(path.join(pkiDir, path.basename(ETCD_MEMBER_CERT.crt)), pem);
  await writeFile(path.join(pkiDir, path.basename(ETCD_MEMBER_CERT.key)), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  await writeFile(path.join(pkiDir, 'etcd-ca.crt'), await readFile(path.join(secrets, 'etcd-ca.crt')));
}

export async function testCluster(secrets: string): Promise<TestCluster> {
  const base = await tempDir('etcd-cluster');
  const ports = { client: await freePort(), peer: await freePort() };
  const members: TestMember[] = [];
  const clientDir = path.join(base, 'client');
  await issueMemberCert(secrets, clientDir, '127.0.0.1');
  const read = (name: string) => readFile(path.join(clientDir, name), 'utf8');
  const tls = { ca: await read('etcd-ca.crt'), cert: await read('etcd-member.crt'), key: await read('etcd-member.key') };

  return {
    secrets,
    ports,
    tls,
    async member(address, opts = {}) {
      const dir = path.join(base, address);
      const pkiDir = path.join(dir, 'pki');
      const dataDir = path.join(dir, 'data');
      await issueMemberCert(secrets, pkiDir, address, opts.certIps);
      const metrics = `http://${address}:${await freePort(address)}`;
      const flags = await unitFlags(pkiDir, dataDir, metrics);
      let proc: ChildProcess | undefined;
      let log = '';
      const member: TestMember = {
        address,
        dataDir,
        pkiDir,
        log: () => log,
        running: () => proc !== undefined && proc.exitCode === null && proc.signalCode === null,
        start(membership) {
          const env = envFileVars(renderEtcdEnv({ cluster: 'demo', self: address, membership, ports }), 'etcd.env');
          proc = spawn(ETCD, flags, { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
          proc.stdout!.on('data', (c: Buffer) => (log += c.toString()));
          proc.stderr!.on('data', (c: Buffer) => (log += c.toString()));
        },
        async stop() {
          const p = proc;
          if (!p || p.exitCode !== null || p.signalCode !== null) return;
          p.kill('SIGTERM');
          await new Promise((r) => p.once('exit', r));
        },
      };
      members.push(member);
      return member;
    },
    async cleanup() {
      for (const m of members) await m.stop();
      await rm(base, { recursive: true, force: true });
    },
  };
}
