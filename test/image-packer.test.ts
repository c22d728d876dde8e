// The Packer template with Debian's packer 1.6.6 (`packer validate`, offline), and shellcheck on every
// shell file of the image recipe and CI.
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const PACKER = path.join(REPO, 'packer');

function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string }> {
  return new Promise((resolve) =>
    execFile(cmd, args, { env: { ...process.env, ...env } }, (err, stdout, stderr) =>
      resolve({ code: err ? Number(err.code) || 1 : 0, out: stdout + stderr }),
    ),
  );
}

/**
 * Packer 1.6.6 predates two things the template uses for current Packer: the plugins file (left out, as
 * TOOLING says) and amazon-ebs `metadata_options` (IMDSv2, amazon plugin >= 1.0): the copy validated here
 * has that one block removed; the test below checks the block itself.
 */
async function validatableCopy(t: Test, edit: (hcl: string) => string = (s) => s): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'kubeseed-packer-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, 'packer'));
  // The template uploads ../image, ../units and ../dist/agent.js: give the copy the same neighbours.
  for (const d of ['image', 'units', 'dist']) await symlink(path.join(REPO, d), path.join(dir, d));
  await cp(path.join(PACKER, 'qemu-seed'), path.join(dir, 'packer', 'qemu-seed'), { recursive: true });
  await cp(path.join(PACKER, 'variables.pkr.hcl'), path.join(dir, 'packer', 'variables.pkr.hcl'));
  const hcl = (await readFile(path.join(PACKER, 'kubeseed.pkr.hcl'), 'utf8')).replace(/\n  metadata_options \{[^}]*\}\n/, '\n');
  await writeFile(path.join(dir, 'packer', 'kubeseed.pkr.hcl'), edit(hcl));
  await mkdir(path.join(dir, 'cache'));
  return dir;
}

const packerEnv = (dir: string) => ({ CHECKPOINT_DISABLE: '1', PACKER_CACHE_DIR: path.join(dir, 'cache'), TMPDIR: dir });
// Validation would fetch Debian's SHA512SUMS for the example's file: checksum; offline, say "none".
const offlineVars = (dir: string) => ['-var-file', path.join(PACKER, 'example.pkrvars.hcl'), '-var', 'debian_cloud_image_checksum=none', path.join(dir, 'packer')];

t.test('packer validate passes on the template with the example variables', async (t) => {
  const dir = await validatableCopy(t);
  const r = await run('packer', ['validate', ...offlineVars(dir)], packerEnv(dir));
  t.equal(r.code, 0, r.out);
});

t.test('packer validate fails without the required variables, and on a broken source', async (t) => {
  const dir = await validatableCopy(t);
  const bare = await run('packer', ['validate', path.join(dir, 'packer')], packerEnv(dir));
  t.not(bare.code, 0);
  t.match(bare.out, /region/);
  const broken = await validatableCopy(t, (hcl) => hcl.replace('encrypt_boot    = true', 'encrypt_boot    = "sometimes"'));
  const r = await run('packer', ['validate', ...offlineVars(broken)], packerEnv(broken));
  t.not(r.code, 0, 'a bad value is caught');
});

t.test('both sources run the same provision step; IMDSv2, encryption and the manifest are set', async (t) => {
  const hcl = await readFile(path.join(PACKER, 'kubeseed.pkr.hcl'), 'utf8');
  t.match(hcl, /sources = \["source\.amazon-ebs\.debian", "source\.qemu\.debian"\]/);
  t.equal(hcl.match(/image\/provision --image-version/g)?.length, 1, 'one provision step, shared');
  t.match(hcl, /metadata_options \{\s*http_endpoint\s*= "enabled"\s*http_tokens\s*= "required"\s*http_put_response_hop_limit = 1\s*\}/);
  t.match(hcl, /encrypt_boot\s*= true/);
  t.match(hcl, /owners\s*= \["136693071363"\]/, "Debian's own AMIs");
  t.match(hcl, /name\s*= "debian-13-amd64-\*"/, 'the AMI is Debian 13 (trixie), the current stable');
  const example = await readFile(path.join(PACKER, 'example.pkrvars.hcl'), 'utf8');
  t.match(example, /debian_cloud_image_url\s*= "https:\/\/cloud\.debian\.org\/images\/cloud\/trixie\/latest\/debian-13-genericcloud-amd64\.qcow2"/, 'the qcow2 starts from Debian 13 too');
  t.match(example, /debian_cloud_image_checksum = "file:https:\/\/cloud\.debian\.org\/images\/cloud\/trixie\/latest\/SHA512SUMS"/);
  t.match(hcl, /accelerator\s*= var\.qemu_accelerator/);
  t.match(hcl, /post-processor "manifest"/);
  const vars = await readFile(path.join(PACKER, 'variables.pkr.hcl'), 'utf8');
  t.match(vars, /variable "qemu_accelerator" \{[^}]*default\s*= "tcg"/);
  const plugins = await readFile(path.join(PACKER, 'plugins.pkr.hcl'), 'utf8');
  t.match(plugins, /required_plugins \{[\s\S]*github\.com\/hashicorp\/amazon[\s\S]*github\.com\/hashicorp\/qemu/);
  t.notMatch(hcl + vars + plugins, /test\/fixtures/, 'no test doubles in the templates');
});

t.test('nothing in image/ or packer/ mentions the test fixtures', async (t) => {
  for (const dir of ['image', 'packer']) {
    for (const name of await readdir(path.join(REPO, dir), { recursive: true })) {
      const file = path.join(REPO, dir, name);
      const text = await readFile(file, 'utf8').catch(() => '');
      t.notMatch(text, /test\/fixtures|components-double/, `${dir}/${name}`);
    }
  }
});

t.test('shellcheck passes on every shell file in image/ and .ci/', async (t) => {
  const files: string[] = [];
  for (const dir of ['image', '.ci']) {
    for (const name of await readdir(path.join(REPO, dir))) {
      const file = path.join(REPO, dir, name);
      const head = await readFile(file, 'utf8').then((s) => s.slice(0, 64), () => '');
      if (/^#!.*\b(ba)?sh\b/.test(head)) files.push(file);
    }
  }
  t.ok(files.includes(path.join(REPO, 'image', 'provision')), 'provision is among them');
  t.ok(files.includes(path.join(REPO, 'image', 'hygiene-check')), 'hygiene-check is among them');
  const r = await run('shellcheck', ['--external-sources', ...files]);
  t.equal(r.code, 0, r.out);
});
