// A real PXE boot against `metal serve`: QEMU (TCG) boots with `-boot n` on user networking, whose
// TFTP boot file chains to our /boot.ipxe over HTTP; our per-MAC script must get the kernel and
// initrd loaded and the kernel started with the NoCloud seed URL intact.
// With the golden image (out/image) it boots that; without it, a Debian cloud kernel (cached) and a
// tiny busybox initrd that prints a marker and the kernel command line on the serial port.
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { startMetalServer } from '../../scripts/metal/server.js';

const run = promisify(execFile);
const MAC = '52:54:00:6b:73:01';
const MARKER = 'KUBESEED-METAL-PXE-MARKER';
const WATCHDOG_MS = 150_000;
const GOLDEN = path.resolve('out/image');
const CACHE = path.join(process.env.XDG_CACHE_HOME ?? path.join(homedir(), '.cache'), 'kubeseed', 'metal-e2e');

/** Debian's current cloud kernel, fetched once with apt-get download and unpacked with dpkg -x. */
async function cloudKernel(): Promise<string> {
  await mkdir(CACHE, { recursive: true });
  const { stdout } = await run('apt-cache', ['depends', 'linux-image-cloud-amd64']);
  const pkg = /Depends: (linux-image-[\w.+-]+-cloud-amd64)\b/.exec(stdout)?.[1];
  if (!pkg) throw new Error(`no versioned cloud kernel in: ${stdout}`);
  const version = pkg.replace(/^linux-image-/, '');
  const kernel = path.join(CACHE, 'root', 'boot', `vmlinuz-${version}`);
  if (existsSync(kernel)) return kernel;
  await run('apt-get', ['download', pkg], { cwd: CACHE });
  const deb = (await readdir(CACHE)).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
  if (!deb) throw new Error(`apt-get download ${pkg} left no .deb in ${CACHE}`);
  await run('dpkg', ['-x', path.join(CACHE, deb), path.join(CACHE, 'root')]);
  return kernel;
}

/** An initrd whose /init prints the marker and /proc/cmdline to the console, then powers off. */
async function markerInitrd(dir: string): Promise<string> {
  const root = path.join(dir, 'initrd-root');
  await mkdir(path.join(root, 'bin'), { recursive: true });
  await mkdir(path.join(root, 'proc'));
  await mkdir(path.join(root, 'dev'));
  await copyFile('/bin/busybox', path.join(root, 'bin', 'busybox'));
  await chmod(path.join(root, 'bin', 'busybox'), 0o755);
  const init = [
    '#!/bin/busybox sh',
    '/bin/busybox mount -t proc proc /proc',
    `echo ${MARKER}`,
    'echo "cmdline: $(/bin/busybox cat /proc/cmdline)"',
    '/bin/busybox poweroff -f',
    '',
  ].join('\n');
  await writeFile(path.join(root, 'init'), init, { mode: 0o755 });
  const out = path.join(dir, 'initrd');
  // Fixed paths we created: no user input reaches this shell.
  await run('sh', ['-c', `cd "${root}" && find . | cpio -o -H newc --quiet | gzip -1 > "${out}"`]);
  return out;
}

interface Boot {
  serial: string;
  exit: string;
}

/** One QEMU PXE boot; resolves when `done(serial)` holds, QEMU exits, or the watchdog fires. */
function pxeBoot(dir: string, tftpDir: string, memoryMb: number, done: (serial: string) => boolean): Promise<Boot> {
  const serialFile = path.join(dir, `serial-${Date.now()}.log`);
  const qemu = spawn(
    'qemu-system-x86_64',
    [
      '-accel', 'tcg', '-cpu', 'max', '-smp', '1', '-m', String(memoryMb),
      '-display', 'none', '-monitor', 'none', '-no-reboot',
      '-serial', `file:${serialFile}`,
      '-boot', 'n',
      '-netdev', `user,id=n0,tftp=${tftpDir},bootfile=boot.ipxe`,
      '-device', `virtio-net-pci,netdev=n0,mac=${MAC}`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  qemu.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => {
    let finished = false;
    const finish = async (exit: string) => {
      if (finished) return;
      finished = true;
      clearInterval(poll);
      clearTimeout(watchdog);
      if (qemu.exitCode === null) qemu.kill('SIGKILL');
      resolve({ serial: await readFile(serialFile, 'utf8').catch(() => ''), exit: `${exit}${stderr ? ` stderr=${stderr.trim()}` : ''}` });
    };
    const poll = setInterval(async () => {
      const serial = await readFile(serialFile, 'utf8').catch(() => '');
      if (done(serial)) void finish('done');
    }, 500);
    const watchdog = setTimeout(() => void finish('watchdog'), WATCHDOG_MS);
    qemu.on('exit', (code, signal) => setTimeout(() => void finish(`qemu exited code=${code} signal=${signal}`), 600));
  });
}

t.test('QEMU PXE-boots from metal serve: kernel and initrd come over HTTP', { timeout: 2 * WATCHDOG_MS + 180_000 }, async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'metal-pxe-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const golden = existsSync(path.join(GOLDEN, 'vmlinuz')) && existsSync(path.join(GOLDEN, 'initrd'));
  // A copy, so a rebuild of out/image while QEMU boots cannot pull the files from under the test.
  const imageDir = path.join(dir, 'image');
  await mkdir(imageDir);
  await copyFile(golden ? path.join(GOLDEN, 'vmlinuz') : await cloudKernel(), path.join(imageDir, 'vmlinuz'));
  await copyFile(golden ? path.join(GOLDEN, 'initrd') : await markerInitrd(dir), path.join(imageDir, 'initrd'));
  t.comment(`image: ${golden ? GOLDEN : 'Debian cloud kernel + busybox marker initrd'}`);

  const inventory = path.join(dir, 'inventory.yaml');
  await writeFile(inventory, `cluster: pxe\nmachines:\n  - {mac: "${MAC}", hostname: pxe1, address: 10.0.2.15, role: master}\n`);
  const logs: string[] = [];
  const server = await startMetalServer({
    inventory,
    imageDir,
    listen: '127.0.0.1',
    advertise: '10.0.2.2', // QEMU user networking: the guest reaches the host's loopback there
    dnsPort: 0,
    httpPort: 0,
    extraKernelArgs: ['panic=-1'],
    log: (line) => logs.push(line),
  });
  t.teardown(() => server.close());

  // What a TFTP server on a real network would hand out after iPXE: a stub that chains to us.
  const tftpDir = path.join(dir, 'tftp');
  await mkdir(tftpDir);
  await writeFile(path.join(tftpDir, 'boot.ipxe'), `#!ipxe\nchain ${server.baseUrl}/boot.ipxe\n`);

  const seed = `ds=nocloud-net;s=${server.baseUrl}/nocloud/${MAC.replaceAll(':', '-')}/`;
  const booted = golden ? (s: string) => /Linux version/.test(s) && s.includes('Run /') : (s: string) => s.includes('cmdline: ');
  // The golden initrd is the whole root, unpacked into RAM: it needs more than the marker initrd.
  const memoryMb = golden ? 2560 : 512;
  let boot = await pxeBoot(dir, tftpDir, memoryMb, booted);
  if (!booted(boot.serial)) {
    t.comment(`first boot did not get there (${boot.exit}); retrying once`);
    logs.length = 0;
    boot = await pxeBoot(dir, tftpDir, memoryMb, booted);
  }
  t.comment(`boot: ${boot.exit}`);
  for (const line of logs.filter((l) => l.startsWith('http '))) t.comment(line);
  if (!booted(boot.serial)) t.comment(`serial tail:\n${boot.serial.split('\n').slice(-25).join('\n')}`);

  const fetched = (file: string) => logs.find((l) => new RegExp(`^http \\S+ GET /image/${file} 20[06] `).test(l) && !l.endsWith(' aborted'));
  t.ok(logs.find((l) => / GET \/boot\.ipxe 200$/.test(l)), 'the TFTP stub chained to /boot.ipxe');
  // iPXE percent-encodes the colons of ${net0/mac}: the server must still find the machine.
  t.ok(logs.find((l) => / GET \/ipxe\?mac=\S+ 200 host=pxe1 role=master$/.test(l)), 'iPXE asked for its own script by MAC', { logs });
  t.ok(fetched('vmlinuz'), 'the kernel was fetched whole over HTTP', { logs });
  t.ok(fetched('initrd'), 'the initrd was fetched whole over HTTP', { logs });
  t.match(boot.serial, /Linux version/, 'our kernel started');
  if (golden) {
    t.match(boot.serial, /Run \/\S+ as init process/, 'the kernel handed over to the image');
  } else {
    t.match(boot.serial, MARKER, "the initrd's init ran");
    const cmdline = /cmdline: (.*)/.exec(boot.serial)?.[1]?.trim().split(/\s+/) ?? [];
    t.ok(cmdline.includes(seed), `the NoCloud seed URL reached the kernel as one argument: ${cmdline.join(' ')}`);
    t.ok(cmdline.includes('console=ttyS0,115200n8'), 'the serial console argument arrived');
  }
});
