// The role file's networks and MASTER_COUNT: a cluster (pod) CIDR that overlaps the service CIDR is bad input
// named with both values, at the line that set it, by `agent check`, `agent run` (then `agent status`) and the
// user-data renderer alike, and nothing is changed.
import t from 'tap';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { cli } from '../agent/cli.js';
import { clusterCidrOf, DEFAULT_CLUSTER_CIDR } from '../agent/cluster-cidr.js';
import { renderRoleFile, ROLE_FILES, validateRole } from '../agent/contract/role-file.js';
import { cidrsOverlap, ipv4At, parseIPv4Cidr, type IPv4Cidr } from '../agent/ipv4-cidr.js';
import { holds } from './helpers/property.js';

const MINION = ROLE_FILES.minion;
const problems = (text: string) => validateRole('minion', MINION, text).problems.map((p) => p.describe());
const apart = 'pod and service addresses must not collide; pick ranges that share no address';

t.test('a cluster CIDR overlapping the service CIDR is refused, naming both values and the line', async (t) => {
  t.same(problems('CLUSTER_NAME=demo\n'), [], `the defaults (${DEFAULT_CLUSTER_CIDR} and 10.96.0.0/12) are apart`);
  t.same(problems('CLUSTER_NAME=demo\nCLUSTER_CIDR=10.100.0.0/16\n'), [
    `${MINION}:2: CLUSTER_CIDR 10.100.0.0/16 overlaps SERVICE_CIDR 10.96.0.0/12: ${apart}`,
  ], 'inside the default service network');
  t.same(problems('CLUSTER_NAME=demo\nSERVICE_CIDR=10.32.0.0/16\n'), [
    `${MINION}:2: CLUSTER_CIDR 10.32.0.0/12 overlaps SERVICE_CIDR 10.32.0.0/16: ${apart}`,
  ], "a service network inside Weave's default range, named at the SERVICE_CIDR line");
  t.same(problems('CLUSTER_NAME=demo\nSERVICE_CIDR=10.0.0.0/12\nCLUSTER_CIDR=10.0.0.0/8\n'), [
    `${MINION}:3: CLUSTER_CIDR 10.0.0.0/8 overlaps SERVICE_CIDR 10.0.0.0/12: ${apart}`,
  ], 'one containing the other');
  t.same(problems('CLUSTER_NAME=demo\nSERVICE_CIDR=10.96.0.0/12\nCLUSTER_CIDR=10.112.0.0/12\n'), [], 'adjacent blocks share no address');
  t.same(problems('CLUSTER_NAME=demo\nCLUSTER_CIDR=\n'), [], 'blank means the default');
  t.equal(clusterCidrOf({ CLUSTER_CIDR: '' }), DEFAULT_CLUSTER_CIDR);
  t.equal(clusterCidrOf({ CLUSTER_CIDR: '172.16.0.0/16' }), '172.16.0.0/16');
});

t.test('malformed networks and MASTER_COUNT name the key, the value and the line; every problem is listed', async (t) => {
  t.same(problems('CLUSTER_NAME=demo\nSERVICE_CIDR=10.96.0.0\nCLUSTER_CIDR=10.32.0.1/12\nMASTER_COUNT=7\n'), [
    `${MINION}:2: SERVICE_CIDR "10.96.0.0": bad service CIDR (not an IPv4 CIDR): expected e.g. 10.96.0.0/12`,
    `${MINION}:3: CLUSTER_CIDR "10.32.0.1/12": bad cluster CIDR (host bits set): expected e.g. 10.32.0.0/12`,
    `${MINION}:4: MASTER_COUNT "7" is not a whole number from 1 to 5`,
  ]);
  t.same(problems('CLUSTER_NAME=demo\nCLUSTER_CIDR=10.0.0.0/31\n'), [
    `${MINION}:2: CLUSTER_CIDR "10.0.0.0/31": bad cluster CIDR (prefix must be /8 to /30): expected e.g. 10.32.0.0/12`,
  ], "below Weave's four-address minimum");
  t.same(problems('CLUSTER_NAME=demo\nMASTER_COUNT=3\n'), []);
});

t.test('the user-data renderer refuses the overlap with the same message, rendering nothing', async (t) => {
  t.throws(() => renderRoleFile({ role: 'master', cluster: 'demo', vars: { SERVICE_CIDR: '10.96.0.0/12', CLUSTER_CIDR: '10.96.0.0/16' } }), {
    name: 'InputError',
    message: `CLUSTER_CIDR 10.96.0.0/16 overlaps SERVICE_CIDR 10.96.0.0/12: ${apart}`,
  });
});

t.test('overlap is exactly "some address in both" (brute force over small blocks)', async (t) => {
  const block = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 24, max: 30 })).map(([n, prefix]) => {
    const size = 2 ** (32 - prefix);
    const base = (10 * 2 ** 24 + n * 16) - ((10 * 2 ** 24 + n * 16) % size);
    return parseIPv4Cidr(`${ipv4At(base)}/${prefix}`, 8, 30) as IPv4Cidr;
  });
  await holds(
    t,
    'cidrsOverlap agrees with enumerating both blocks',
    fc.property(block, block, (a, b) => {
      const inA = new Set(Array.from({ length: a.size }, (_, i) => a.base + i));
      const shared = Array.from({ length: b.size }, (_, i) => b.base + i).some((n) => inA.has(n));
      return cidrsOverlap(a, b) === shared && cidrsOverlap(b, a) === shared;
    }),
  );
});

/** The agent's own command line, in this process (the bundle runs the same cli()). */
async function agent(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const io = { out: (text: string) => (stdout += `${text}\n`), err: (text: string) => (stderr += `${text}\n`) };
  const code = await cli(args, { ...io, signal: new AbortController().signal, version: '0.0.0-test' });
  return { code, stdout, stderr };
}

t.test('agent check, agent run and agent status all say it, and the node is left as it was', async (t) => {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'agent-networks-'));
  t.teardown(() => fs.rm(root, { recursive: true, force: true }));
  await fs.mkdir(path.join(root, 'etc/sysconfig'), { recursive: true });
  await fs.writeFile(path.join(root, MINION), 'CLUSTER_NAME=demo\nCLUSTER_CIDR=10.100.0.0/16\n');
  const message = `${MINION}:2: CLUSTER_CIDR 10.100.0.0/16 overlaps SERVICE_CIDR 10.96.0.0/12: ${apart}`;

  const check = await agent('check', '--root', root);
  t.equal(check.code, 1, 'check fails');
  t.equal(check.stderr.trim(), message);

  const run = await agent('run', '--once', '--root', root);
  t.equal(run.code, 1, 'run refuses to start');
  const status = await agent('status', '--root', root);
  t.equal(status.code, 1, 'status: failed');
  t.match(status.stdout, /^state: {4}invalid$/m);
  t.match(status.stdout, new RegExp(`^errors:\\n  ${message.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`, 'm'));
  const files = (await fs.readdir(root, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => path.relative(root, path.join(e.parentPath, e.name)));
  t.same(files.sort(), ['etc/sysconfig/kubernetes-minions', 'run/kubeseed/status.json'], 'nothing but the status document was written');
});
