// User-data against its real readers: Debian's cloud-init 22.4 (schema check, and its own write_files
// module writing into a temp root) and systemd's env-file parser (the environment.d generator shares
// EnvironmentFile='s parser).
import t from 'tap';
import fc from 'fast-check';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parse } from 'yaml';
import { renderUserData } from '../cloud-init/render.js';
import { parseEnvironmentFile } from '../agent/contract/env-file.js';
import { ROLE_FILES } from '../agent/contract/role-file.js';
import { WEAVE_PASSWORD_FILE } from '../agent/weave-password.js';
import { systemdReadsEnvFile } from './helpers/systemd-env.js';
import { writeServingCert } from './helpers/secrets.js';
import { InputError } from '../agent/errors.js';
import { SECRETS_DIR, SECRET_FILES, secretsForRole } from '../agent/secrets-layout.js';
import type { Role } from '../agent/dns-names.js';
import { makeTestSecrets } from './helpers/secrets.js';
import { holds } from './helpers/property.js';

const run = promisify(execFile);
/** All a helper needs from a tap test: a place to clean up. */
interface Cleanup {
  teardown(fn: () => unknown): void;
}


async function tempDir(t: Cleanup, prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A secrets directory as `npm run secrets` lays it out; sa.key is binary on purpose. apiserver.crt is a
 * real certificate (the renderer checks API_ENDPOINT against its names), the rest only look like PEM.
 */
async function secretsDir(t: Cleanup): Promise<{ dir: string; bytes: Map<string, Buffer> }> {
  const dir = await tempDir(t, 'kubeseed-secrets-');
  const bytes = new Map<string, Buffer>();
  writeServingCert(dir, 'DNS:masters.demo.k8s,DNS:masters.demo.corp.k8s,IP:10.96.0.1,IP:127.0.0.1');
  for (const { name } of SECRET_FILES) {
    const content =
      name === 'apiserver.crt'
        ? await readFile(path.join(dir, name))
        : name === 'sa.key'
        ? Buffer.from(Array.from({ length: 256 }, (_, i) => i))
        : name === 'bootstrap-token'
          ? Buffer.from('abcdef.0123456789abcdef')
          : Buffer.from(`-----BEGIN ${name}-----\nMIIB${name}\n  indented: yes\n-----END ${name}-----\n\n`);
    bytes.set(name, content);
    await writeFile(path.join(dir, name), content);
  }
  return { dir, bytes };
}

/** cloud-init's own YAML loader and write_files module, with every path moved under `root`. */
async function cloudInitWrite(userData: string, root: string): Promise<void> {
  const file = path.join(root, 'user-data');
  await writeFile(file, userData);
  const py = [
    'import sys',
    'from cloudinit import util',
    'from cloudinit.config.cc_write_files import write_files',
    'cfg = util.load_yaml(open(sys.argv[1]).read())',
    'files = cfg["write_files"]',
    'for f in files: f["path"] = sys.argv[2] + f["path"]',
    'write_files("write_files", files, "root:root")',
  ].join('\n');
  await run('/usr/bin/python3', ['-c', py, file, root]);
}

/** What systemd reads from the env file at this path (its own parser, through test/helpers/systemd-env.ts). */
async function systemdReads(envFile: string): Promise<Map<string, string>> {
  return systemdReadsEnvFile(await readFile(envFile, 'utf8'));
}

t.test('rendered user-data for both roles passes cloud-init schema', async (t) => {
  const { dir } = await secretsDir(t);
  const work = await tempDir(t, 'kubeseed-ud-');
  for (const role of ['master', 'minion'] as Role[]) {
    for (const secrets of [undefined, dir]) {
      const file = path.join(work, `${role}-${secrets ? 'secrets' : 'plain'}.yaml`);
      await writeFile(
        file,
        await renderUserData({ role, cluster: 'demo', domain: 'k8s', vars: { NAMESERVER: '10.0.0.2' }, ...(secrets && { secretsDir: secrets }) }),
      );
      const { stdout } = await run('cloud-init', ['schema', '--config-file', file]);
      t.match(stdout, /^Valid cloud-config/, `${role} ${secrets ? 'with' : 'without'} secrets`);
    }
  }
  // The check itself bites: the same file with its permissions unquoted (a YAML int) is refused.
  const broken = (await readFile(path.join(work, 'minion-plain.yaml'), 'utf8')).replace('"0644"', '0644');
  await writeFile(path.join(work, 'broken.yaml'), broken);
  const err = await run('cloud-init', ['schema', '--config-file', path.join(work, 'broken.yaml')]).catch((e) => e);
  t.equal(err.code, 1);
  t.match(err.stderr, /permissions: 420 is not of type 'string'/);
});

t.test("cloud-init's write_files lays down the role file and exactly the role's secrets", async (t) => {
  const { dir, bytes } = await secretsDir(t);
  for (const role of ['master', 'minion'] as Role[]) {
    const root = await tempDir(t, `kubeseed-root-${role}-`);
    await cloudInitWrite(await renderUserData({ role, cluster: 'demo', secretsDir: dir }), root);
    const roleFile = path.join(root, ROLE_FILES[role]);
    t.equal(await readFile(roleFile, 'utf8'), `# kubeseed ${role} role file, written by cloud-init user-data\nCLUSTER_NAME="demo"\n`);
    t.equal((await stat(roleFile)).mode & 0o777, 0o644);
    const written = (await readdir(path.join(root, SECRETS_DIR))).sort();
    t.same(written, secretsForRole(role).map((f) => f.name).sort(), `${role} gets its secrets and no others`);
    if (role === 'minion') t.notOk(written.includes('ca.key'), 'a minion never receives the CA key');
    for (const name of written) {
      const file = path.join(root, SECRETS_DIR, name);
      t.same(await readFile(file), bytes.get(name), `${name} arrives byte for byte`);
      const st = await stat(file);
      t.equal(st.mode & 0o777, 0o600, `${name} is 0600`);
      t.equal(st.uid, 0);
    }
  }
});

t.test("WEAVE_PASSWORD: cloud-init writes it to its own 0600 file, never into the role file the kubelet loads", async (t) => {
  const password = `it's a "weave" pass\\word, long`; // no $: the generator behind systemdReads expands it
  for (const role of ['master', 'minion'] as Role[]) {
    const root = await tempDir(t, `kubeseed-root-weave-${role}-`);
    await cloudInitWrite(await renderUserData({ role, cluster: 'demo', vars: { WEAVE_PASSWORD: password, NAMESERVER: '10.0.0.2' } }), root);
    const roleFile = await readFile(path.join(root, ROLE_FILES[role]), 'utf8');
    t.notOk(roleFile.includes('WEAVE_PASSWORD') || roleFile.includes('weave'), `${role}: not in the world-readable role file`);
    t.equal((await systemdReads(path.join(root, ROLE_FILES[role]))).get('NAMESERVER'), '10.0.0.2', `${role}: the other values stay there`);
    const file = path.join(root, WEAVE_PASSWORD_FILE);
    const st = await stat(file);
    t.equal(st.mode & 0o777, 0o600, `${role}: ${WEAVE_PASSWORD_FILE} is 0600`);
    t.equal(st.uid, 0, 'owned by root');
    t.same(Object.fromEntries(await systemdReads(file)), { WEAVE_PASSWORD: password }, `${role}: systemd reads exactly the password from it`);
  }
  const short = await renderUserData({ role: 'minion', cluster: 'demo', vars: { WEAVE_PASSWORD: 'hunter2' } }).catch((e: unknown) => e);
  t.match(short, { name: 'InputError', message: /^WEAVE_PASSWORD is 7 bytes long; at least 16 are required/ }, 'a password the node would refuse is refused here');
  t.notMatch((short as Error).message, /hunter2/);
});

const HOSTILE: Record<string, string> = {
  QUOTES: `it's "quoted" and 'single'`,
  SUBSHELL: '$(touch /tmp/kubeseed-pwned)',
  BACKTICKS: '`touch /tmp/kubeseed-pwned`',
  BACKSLASHES: 'C:\\path\\ends\\',
  COMMENT: '# not a comment ; nor this',
  SPACES: '  leading and trailing  ',
  YAML_BOOL: 'yes',
  YAML_OCTAL: '0644',
  YAML_DOC: '--- !!python/object:os.system',
  UNICODE: 'ümlaut ☃ 𝄞 日本',
  TAB: 'a\tb',
  CONTINUATION: 'ends with backslash \\',
  BRACES: '{a: [1, 2]}',
};

t.test('hostile values reach systemd exactly as given, and nothing runs', async (t) => {
  const marker = path.join(await tempDir(t, 'kubeseed-marker-'), 'pwned');
  const vars = { ...HOSTILE, MARKER: `$(touch ${marker}) \`touch ${marker}\`` };
  const userData = await renderUserData({ role: 'minion', cluster: 'demo', vars });
  const content = (parse(userData) as { write_files: { content: string }[] }).write_files[0]!.content;
  const root = await tempDir(t, 'kubeseed-root-');
  await cloudInitWrite(userData, root);
  const file = path.join(root, ROLE_FILES.minion);
  t.equal(await readFile(file, 'utf8'), content, 'cloud-init (PyYAML) reads what the yaml package wrote');
  const env = await systemdReads(file);
  for (const [key, value] of Object.entries(vars)) t.equal(env.get(key), value, key);
  t.equal(env.get('CLUSTER_NAME'), 'demo');
  const agent = parseEnvironmentFile(content, 'role-file');
  t.same(agent.problems, [], 'the agent parses it cleanly');
  t.same(Object.fromEntries(agent.assignments.map((a) => [a.key, a.value])), { CLUSTER_NAME: 'demo', ...vars }, 'and reads the same values');
  t.notOk(existsSync(marker), 'no value was executed');
});

t.test('an empty value is written as an explicit empty string', async (t) => {
  const userData = await renderUserData({ role: 'minion', cluster: 'demo', vars: { CLOUD_PROVIDER: '' } });
  const content = (parse(userData) as { write_files: { content: string }[] }).write_files[0]!.content;
  t.match(content, /^CLOUD_PROVIDER=""$/m);
});

t.test('dollar signs are escaped, so EnvironmentFile= never expands them', async (t) => {
  const userData = await renderUserData({ role: 'master', cluster: 'demo', vars: { A: '$HOME', B: '${PATH}x' } });
  const content = (parse(userData) as { write_files: { content: string }[] }).write_files[0]!.content;
  t.match(content, /^A="\\\$HOME"$/m);
  t.match(content, /^B="\\\$\{PATH\}x"$/m);
});

t.test('any allowed value survives YAML, cloud-init and systemd (property)', async (t) => {
  // The generator (unlike EnvironmentFile=) expands $NAME after unquoting and drops empty values, so
  // those are left to the tests above.
  const value = fc
    .string({ unit: 'binary', minLength: 1, maxLength: 40 })
    .map((s) => [...s].filter((ch) => !((ch.codePointAt(0)! & 0xfffe) === 0xfffe || /[\ufdd0-\ufdef]/.test(ch))).join(''))
    .filter((s) => s !== '' && !/[\0-\x08\x0a-\x1f\x7f]/.test(s) && !/\$[A-Za-z_{]/.test(s));
  await holds(
    t,
    'batches of up to 60 random values round-trip through systemd',
    fc.asyncProperty(fc.array(value, { minLength: 1, maxLength: 60 }), async (values) => {
      const vars = Object.fromEntries(values.map((v, i) => [`V${i}`, v]));
      const root = await tempDir(t, 'kubeseed-prop-');
      await cloudInitWrite(await renderUserData({ role: 'minion', cluster: 'prop', vars }), root);
      const env = await systemdReads(path.join(root, ROLE_FILES.minion));
      for (const [k, v] of Object.entries(vars)) if (env.get(k) !== v) throw new Error(`${k}: ${JSON.stringify(v)} came back as ${JSON.stringify(env.get(k))}`);
    }),
    { numRuns: 8 },
  );
});

t.test('bad input is refused with an InputError naming the value, and nothing is rendered', async (t) => {
  const cases: [string, Parameters<typeof renderUserData>[0], RegExp][] = [
    ['newline', { role: 'minion', cluster: 'demo', vars: { A: 'x\nB=evil' } }, /A: value contains a NUL, CR or newline/],
    ['CR', { role: 'minion', cluster: 'demo', vars: { A: 'x\r' } }, /NUL, CR or newline/],
    ['NUL', { role: 'minion', cluster: 'demo', vars: { A: 'x\0y' } }, /NUL, CR or newline/],
    ['escape char', { role: 'minion', cluster: 'demo', vars: { A: '\x1b[31m' } }, /control character/],
    ['lone surrogate', { role: 'minion', cluster: 'demo', vars: { A: 'x\ud800' } }, /invalid Unicode/],
    ['noncharacter', { role: 'minion', cluster: 'demo', vars: { A: '\u{8fffe}' } }, /invalid Unicode/],
    ['noncharacter U+FDD0', { role: 'minion', cluster: 'demo', vars: { A: '\ufdd0' } }, /invalid Unicode/],
    ['key with a dash', { role: 'minion', cluster: 'demo', vars: { 'A-B': 'x' } }, /invalid variable name "A-B"/],
    ['key with a dash', { role: 'minion', cluster: 'demo', vars: { 'A-B': 'x' } }, /invalid variable name/],
    ['key starting with a digit', { role: 'minion', cluster: 'demo', vars: { '1A': 'x' } }, /invalid variable name/],
    ['key injecting a line', { role: 'minion', cluster: 'demo', vars: { 'A=1\nB': 'x' } }, /invalid variable name/],
    ['CLUSTER_NAME as a var', { role: 'minion', cluster: 'demo', vars: { CLUSTER_NAME: 'other' } }, /comes from --cluster/],
    ['cluster with a subshell', { role: 'minion', cluster: '$(touch /tmp/x)' }, /CLUSTER_NAME/],
    ['dotted cluster', { role: 'minion', cluster: 'a.b' }, /CLUSTER_NAME/],
    ['leading dash', { role: 'minion', cluster: '-x' }, /CLUSTER_NAME/],
    ['empty cluster', { role: 'minion', cluster: '' }, /CLUSTER_NAME/],
    ['64-char cluster', { role: 'minion', cluster: 'a'.repeat(64) }, /CLUSTER_NAME/],
    ['bad role', { role: 'boss' as Role, cluster: 'demo' }, /bad role "boss"/],
    ['bad domain', { role: 'minion', cluster: 'demo', domain: 'k8s..local' }, /DNS_DOMAIN "k8s..local" is not a DNS name/],
  ];
  for (const [what, opts, message] of cases) {
    const err = await renderUserData(opts).then(() => undefined, (e: unknown) => e);
    t.type(err, InputError, what);
    t.match((err as InputError).message, message, what);
  }
  t.ok(await renderUserData({ role: 'minion', cluster: 'a'.repeat(63) }), 'a 63-char label is fine');
});

t.test('a missing secret names its file', async (t) => {
  const { dir } = await secretsDir(t);
  await rm(path.join(dir, 'bootstrap-token'));
  const err = (await renderUserData({ role: 'minion', cluster: 'demo', secretsDir: dir }).catch((e) => e)) as InputError;
  t.type(err, InputError);
  t.equal(err.describe(), `${path.join(dir, 'bootstrap-token')}: cannot read secret bootstrap-token for role minion: ENOENT`);
});

t.test("another cluster's secrets are refused, naming both clusters", async (t) => {
  const other = await makeTestSecrets('other');
  t.teardown(() => rm(path.dirname(other), { recursive: true, force: true }));
  for (const role of ['master', 'minion'] as const) {
    const err = (await renderUserData({ role, cluster: 'demo', secretsDir: other }).catch((e) => e)) as InputError;
    t.type(err, InputError, role);
    t.equal(err.describe(), `${path.join(other, 'ca.crt')}: the secrets are of cluster "other", not "demo"`, role);
  }
  t.ok(await renderUserData({ role: 'minion', cluster: 'Other', secretsDir: other }), 'the same cluster in another case is the same cluster');
});

t.test('npm run userdata: --set, --out 0600, and one-line errors', async (t) => {
  const work = await tempDir(t, 'kubeseed-cli-');
  const { dir } = await secretsDir(t);
  const out = path.join(work, 'ud.yaml');
  const tsx = path.resolve('node_modules/.bin/tsx');
  await run(tsx, ['scripts/userdata.ts', '--role', 'master', '--cluster', 'demo', '--domain', 'corp.k8s', '--set', 'API_ENDPOINT=https://masters.demo.corp.k8s:6443/a=b', '--secrets', dir, '--out', out]);
  t.equal((await stat(out)).mode & 0o777, 0o600, 'user-data with keys is not world-readable');
  const cfg = parse(await readFile(out, 'utf8')) as { write_files: { path: string; content: string }[] };
  t.equal(cfg.write_files[0]!.content.split('\n').slice(1, 4).join('\n'), 'CLUSTER_NAME="demo"\nDNS_DOMAIN="corp.k8s"\nAPI_ENDPOINT="https://masters.demo.corp.k8s:6443/a=b"');
  t.equal(cfg.write_files.length, secretsForRole('master').length + 1);

  const unnamed = await run(tsx, ['scripts/userdata.ts', '--role', 'minion', '--cluster', 'demo', '--set', 'API_ENDPOINT=https://10.0.0.5:6443', '--secrets', dir]).catch((e) => e);
  t.equal(unnamed.code, 2, 'an API_ENDPOINT the serving certificate does not name is refused at render time, as a bad value');
  t.equal(
    unnamed.stderr.split('\n')[0],
    `userdata: API_ENDPOINT https://10.0.0.5:6443 names 10.0.0.5, which ${path.join(dir, 'apiserver.crt')} does not carry (it names masters.demo.k8s, masters.demo.corp.k8s, 10.96.0.1, 127.0.0.1): set API_ENDPOINT to one of those, or leave it out for the masters name`,
  );
  t.equal(unnamed.stdout, '', 'nothing rendered');

  // The cluster is spelt lowercase everywhere (role file, tags, secrets), so the message names it so.
  const bad = await run(tsx, ['scripts/userdata.ts', '--role', 'minion', '--cluster', 'Bad_Name']).catch((e) => e);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /^userdata: CLUSTER_NAME "bad_name" is not a DNS label \(letters, digits and inner '-' only\)\nusage: /);
  t.equal(bad.stdout, '', 'nothing rendered');
  const usage = await run(tsx, ['scripts/userdata.ts', '--role', 'minion']).catch((e) => e);
  t.equal(usage.code, 2);
  t.match(usage.stderr, /^userdata: --cluster is required\nusage: /);
});
