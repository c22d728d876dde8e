// Boots the local golden image (out/image, built with the component doubles if it is not there or stale)
// under QEMU TCG, twice: the whole-root initrd as PXE does (-kernel/-initrd), and the qcow2 through the
// busybox initrd-disk. cloud-init reads a NoCloud seed from our HTTP server (the guest reaches it as
// 10.0.2.2) whose user-data starts a unit ordered after multi-user.target; that unit reports on the second
// serial port what a booted node looks like (the agent, its path unit, fresh host keys and machine-id).
import t, { type Test } from 'tap';
import { execFile, spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TEST_IMAGE_DEBIAN_COMPONENTS } from '../../image/debian-components.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const IMAGE = path.join(REPO, 'out', 'image');
const DOUBLES = path.join(REPO, 'test', 'fixtures', 'components-double');
const MARKER = 'KUBESEED-E2E';
// A boot that hangs (about one in 25 under TCG, TOOLING.md) goes silent early; a slow one on a busy machine
// keeps printing. So: give up after this long without console output, or after the hard limit.
const SILENCE_MS = 90_000;
const LIMIT_MS = 420_000;

const USER_DATA = `#cloud-config
write_files:
  - path: /usr/local/sbin/kubeseed-e2e-report
    permissions: '0755'
    content: |
      #!/bin/sh
      keys=$(ls /etc/ssh/ssh_host_*_key 2>/dev/null | wc -l)
      echo "${MARKER} multi-user=$(systemctl is-active multi-user.target) agent=$(/usr/local/bin/agent --version | tr ' ' _) path=$(systemctl is-enabled kubeseed-agent.path) hostkeys=$keys machine-id=$(cat /etc/machine-id) image=$(cat /etc/kubeseed/image-version) kubelet=$(/usr/local/bin/kubelet --version | tr ' ' _) kubelet-unit=$(systemctl is-enabled kubelet.service)" > /dev/ttyS1
  - path: /etc/systemd/system/kubeseed-e2e-report.service
    content: |
      [Unit]
      After=multi-user.target
      [Service]
      Type=oneshot
      ExecStart=/usr/local/sbin/kubeseed-e2e-report
runcmd:
  - [systemctl, start, --no-block, kubeseed-e2e-report.service]
`;

/** `npm run image` with the doubles (the cache makes it instant when nothing changed); its exit code and output. */
function buildImage(): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(
      'npx',
      ['tsx', 'image/build-local.ts', '--components-dir', DOUBLES, '--manifest', path.join(DOUBLES, 'manifest.json'), '--debian-components', TEST_IMAGE_DEBIAN_COMPONENTS.join(','), '--out', IMAGE],
      // Without the test runner's NODE_OPTIONS (its loaders): the build runs node inside the image too.
      { cwd: REPO, maxBuffer: 64 * 1024 * 1024, env: Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NODE_OPTIONS')) },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code) || 1 : 0, output: `${stdout}${stderr}`.slice(-6000) }),
    );
  });
}

async function seedServer(): Promise<{ server: Server; port: number }> {
  const files: Record<string, string> = {
    '/meta-data': 'instance-id: kubeseed-e2e-1\nlocal-hostname: kubeseed-e2e\n',
    '/user-data': USER_DATA,
    '/vendor-data': '',
  };
  const server = createServer((req, res) => {
    const body = files[(req.url ?? '').split('?')[0] as string];
    res.writeHead(body === undefined ? 404 : 200, { 'content-type': 'text/plain' }).end(body ?? '');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as AddressInfo).port };
}

interface Boot {
  report: string;
  console: string;
}

/** One boot; resolves once the report line arrives on ttyS1, QEMU exits, or the console goes silent or the limit passes. */
function boot(dir: string, args: string[]): Promise<Boot> {
  const report = path.join(dir, `ttyS1-${Date.now()}.log`);
  const qemu = spawn(
    'qemu-system-x86_64',
    ['-accel', 'tcg', '-cpu', 'max', '-smp', '2', '-display', 'none', '-monitor', 'none', '-no-reboot',
      '-serial', 'stdio', '-serial', `file:${report}`, '-device', 'virtio-rng-pci',
      '-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0', ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let consoleLog = '';
  let lastOutput = Date.now();
  const started = Date.now();
  const onOutput = (d: Buffer) => {
    consoleLog = (consoleLog + d.toString()).slice(-20_000);
    lastOutput = Date.now();
  };
  qemu.stdout.on('data', onOutput);
  qemu.stderr.on('data', onOutput);
  return new Promise((resolve) => {
    let finished = false;
    const finish = async () => {
      if (finished) return;
      finished = true;
      clearInterval(poll);
      qemu.kill('SIGKILL');
      resolve({ report: await readFile(report, 'utf8').catch(() => ''), console: consoleLog });
    };
    const poll = setInterval(async () => {
      const now = Date.now();
      if (now - lastOutput > SILENCE_MS || now - started > LIMIT_MS) return void finish();
      if ((await readFile(report, 'utf8').catch(() => '')).includes('\n')) void finish();
    }, 1000);
    qemu.on('exit', () => void finish());
  });
}

/** A hung boot gets one retry. */
async function bootWithRetry(t: Test, dir: string, args: string[]): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    const result = await boot(dir, args);
    if (result.report.includes(MARKER) || attempt === 2) {
      if (!result.report.includes(MARKER)) t.comment(`console tail:\n${result.console.slice(-4000)}`);
      return result.report;
    }
    t.comment(`attempt ${attempt}: no report (console silent ${SILENCE_MS / 1000} s or ${LIMIT_MS / 1000} s passed), retrying`);
  }
}

function fields(report: string): Record<string, string> {
  // The serial line ends in \r\n.
  const line = report.split(/\r?\n/).find((l) => l.startsWith(MARKER))?.trim() ?? '';
  return Object.fromEntries(line.split(' ').slice(1).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
}

t.test('the golden image boots to multi-user with the agent, from RAM and from disk', async (t) => {
  const built = await buildImage();
  if (built.code !== 0) t.comment(`npm run image:\n${built.output}`);
  t.equal(built.code, 0, 'npm run image builds (or reuses) out/image');
  if (built.code !== 0) return;
  const build = JSON.parse(await readFile(path.join(IMAGE, 'build.json'), 'utf8')) as { imageVersion: string };
  const dir = await mkdtemp(path.join(tmpdir(), 'kubeseed-boot-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const { server, port } = await seedServer();
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const cmdline = `console=ttyS0 panic=-1 ds=nocloud-net;s=http://10.0.2.2:${port}/`;

  const kinds: [string, string[]][] = [
    ['whole-root initrd (PXE)', ['-m', '2560', '-kernel', path.join(IMAGE, 'vmlinuz'), '-initrd', path.join(IMAGE, 'initrd'), '-append', cmdline]],
    ['qcow2 disk', ['-m', '512', '-kernel', path.join(IMAGE, 'vmlinuz'), '-initrd', path.join(IMAGE, 'initrd-disk'),
      '-drive', `file=${path.join(IMAGE, 'disk.qcow2')},if=virtio,format=qcow2,snapshot=on`, '-append', `${cmdline} root=/dev/vda`]],
  ];
  for (const [kind, args] of kinds) {
    await t.test(kind, async (t) => {
      const report = fields(await bootWithRetry(t, dir, args));
      t.equal(report['multi-user'], 'active', 'systemd reached multi-user.target');
      t.match(report.agent, /^kubeseed-agent_\S+/, 'the agent runs on the image');
      t.equal(report.path, 'enabled', 'kubeseed-agent.path is enabled');
      t.ok(Number(report.hostkeys) > 0, 'host keys were made at first boot');
      t.match(report['machine-id'], /^[0-9a-f]{32}$/, 'a machine-id of its own');
      t.equal(report.image, build.imageVersion);
      t.match(report.kubelet, /^kubelet_double/, 'components are on the PATH the units use');
      t.equal(report['kubelet-unit'], 'disabled', 'first-boot presets leave role units to the agent');
    });
  }
});
