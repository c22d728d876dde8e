// The local cluster's metal server (scripts/cluster.ts startMetal, `cluster down`): started as a user starts
// `metal serve`, one process from built JavaScript with a PID file in the state directory, and stopped by
// that PID. No VM: the server is asked over HTTP what a PXE-booting node would fetch.
import t from 'tap';
import { cp, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'yaml';
import { WEAVE_PASSWORD_FILE } from '../agent/weave-password.js';
import { main } from '../scripts/cluster.js';
import { startMetal } from '../scripts/cluster/lifecycle.js';
import { inventoryYaml, planNodes } from '../scripts/cluster/plan.js';
import { isOurs, writeState } from '../scripts/cluster/state.js';
import { makeTestSecrets, tempDir } from './helpers/secrets.js';

t.setTimeout(180_000);

t.test('cluster up starts `node dist/metal.js serve` with a PID file; cluster down stops it by that PID', async (t) => {
  const dir = await tempDir('cluster-metal');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const nodes = planNodes(1, 1);
  await writeFile(join(dir, 'inventory.yaml'), inventoryYaml('demo', 'k8s', nodes));
  const secrets = await makeTestSecrets('demo');
  await cp(secrets, join(dir, 'secrets'), { recursive: true });
  await writeFile(join(dir, 'id_ed25519.pub'), 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB6bC2ZC2jVg2tBEPeN0m0u3oJ0ZyQm0v2L3vZxk8c5N test\n');
  const image = join(dir, 'image');
  await mkdir(image);

  const lines: string[] = [];
  const metal = await startMetal(dir, image, (l) => lines.push(l));
  t.teardown(() => {
    try {
      process.kill(metal.pid, 'SIGKILL');
    } catch {
      // stopped by the test, as it should be
    }
  });
  t.equal(Number((await readFile(join(dir, 'metal.pid'), 'utf8')).trim()), metal.pid, 'the PID file names the process cluster.json records');
  const cmdline = (await readFile(`/proc/${metal.pid}/cmdline`, 'utf8')).split('\0');
  t.equal(cmdline[0], process.execPath, 'plain node...');
  t.equal(cmdline[1], join(process.cwd(), 'dist/metal.js'), '...running the built bundle, no tsx loader');
  t.equal(cmdline[2], 'serve');
  t.notOk(cmdline.some((a) => a.includes('WEAVE') || a.includes('tsx')), 'no password and no tsx on the command line');
  t.equal(metal.baseUrl, `http://10.0.2.2:${metal.httpPort}`, 'advertised to the guests at the host as QEMU shows it');

  // What the master fetches: its iPXE script with the LAN address and the SSH key, and user-data with the password.
  const master = nodes[0]!;
  const ipxe = await (await fetch(`http://127.0.0.1:${metal.httpPort}/ipxe?mac=${master.lanMac}`)).text();
  const early = Buffer.from(/ network-config=(\S+) /.exec(ipxe)?.[1] ?? '', 'base64').toString();
  t.match(early, `addresses: ["${master.address}/24"]`, 'the LAN network-config on the kernel line, with the node’s own address');
  t.match(ipxe, ' ip=eth0:dhcp ', 'and DHCP on the boot NIC');
  t.match(ipxe, 'cc:', 'the cluster cloud-config on the kernel line');
  const userData = await (await fetch(`http://127.0.0.1:${metal.httpPort}/nocloud/${master.lanMac}/user-data`)).text();
  const files = (parse(userData.replace(/^#cloud-config\n/, '')) as { write_files: { path: string; content: string }[] }).write_files;
  const password = (await readFile(join(dir, 'weave-password'), 'utf8')).trim();
  t.match(files.find((f) => f.path === WEAVE_PASSWORD_FILE)?.content, password, 'the cluster’s Weave password reaches the node');
  t.equal((await stat(join(dir, 'weave-password'))).mode & 0o777, 0o600);
  t.match(files.find((f) => f.path === '/etc/sysconfig/kubernetes-masters')?.content, `NAMESERVER="10.0.2.2:${metal.dnsPort}"`, "the nodes ask the server's DNS port");

  await writeState(dir, { cluster: 'demo', domain: 'k8s', accel: 'tcg', memoryMb: 512, mcast: { group: '230.0.0.1', port: 1 }, metal, nodes: [] });
  const out: string[] = [];
  t.equal(await main(['down', '--state-dir', dir], (l) => out.push(l)), 0, 'down: exit 0');
  t.same(out, ['stopped 1 processes; none left']);
  t.notOk(await isOurs(metal.pid, dir), 'the server is gone');
  await t.rejects(stat(join(dir, 'metal.pid')), { code: 'ENOENT' }, 'and took its PID file with it (a clean stop)');
});
