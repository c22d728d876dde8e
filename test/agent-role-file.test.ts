import t, { type Test } from 'tap';
import { writeFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import fc from 'fast-check';
import { createHost } from '../agent/host.js';
import { parseEnvironmentFile } from '../agent/contract/env-file.js';
import { ROLE_FILES, validateRole } from '../agent/contract/role-file.js';
import { loadRole } from '../agent/role-file.js';
import { holds } from './helpers/property.js';

const MINION = ROLE_FILES.minion;
const values = (text: string) => Object.fromEntries(parseEnvironmentFile(text, 'f').assignments.map((a) => [a.key, a.value]));
const problems = (text: string) => validateRole('minion', MINION, text).problems.map((p) => p.describe());

t.test("systemd's EnvironmentFile grammar", async (t) => {
  t.same(values('A=1\nB = spaced  \n  C=indented\n'), { A: '1', B: 'spaced', C: 'indented' }, 'whitespace around keys and values trimmed');
  t.same(values('# comment\n; comment\n   # indented comment\nA=1 # not a comment\n'), { A: '1 # not a comment' });
  t.same(values(`A='single $HOME \\n "x"'\n`), { A: 'single $HOME \\n "x"' }, 'single quotes are literal');
  t.same(values('A="a \\" b \\\\ c \\$ d \\` e \\n f"\n'), { A: 'a " b \\ c $ d ` e \\n f' }, 'double quotes honour only \\" \\\\ \\$ \\`');
  t.same(values('A=x\\ y\\"z\n'), { A: 'x y"z' }, 'unquoted: backslash escapes the next character');
  t.same(values('A=one \\\n  two\nB="x\\\ny"\n'), { A: 'one   two', B: 'xy' }, 'backslash-newline continues');
  t.same(values(`A="x" 'y' z\n`), { A: 'xyz' }, 'quoted pieces concatenate as in systemd');
  t.same(values(`A='multi\nline'\n`), { A: 'multi\nline' }, 'quotes may span lines');
  t.same(values('A=\nB=""\nC=last'), { A: '', B: '', C: 'last' }, 'empty values; no final newline');
  t.same(values('A=1\r\n'), { A: '1' }, 'CRLF tolerated');
  t.same(parseEnvironmentFile('A=1\n\nB=two \\\n  lines\nC=3\n', 'f').assignments.map((a) => a.line), [1, 3, 5], 'lines are where assignments start');
});

t.test('our parser reads values exactly as systemd does (differential, against systemd-analyze)', async (t) => {
  // systemd reads os-release with the same env-file parser as EnvironmentFile=, SYSTEMD_OS_RELEASE points it
  // at any file, and ConditionOSRelease="K=V" is true exactly when systemd read V for K.
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'agent-envfile-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'env');
  const systemdSays = (key: string, value: string) =>
    spawnSync('systemd-analyze', ['condition', `ConditionOSRelease="${key}=${value.replace(/[\\"]/g, (c) => `\\${c}`)}"`], {
      env: { ...process.env, SYSTEMD_OS_RELEASE: file },
    }).status === 0;
  // No glob characters, '%' specifiers or operators: ConditionOSRelease= would read those itself.
  const plain = fc.constantFrom(...'ab9 ._:/-');
  const unquoted = fc.oneof(
    plain,
    fc.constantFrom('\\a', '\\"', "\\'", '\\$', '\\\\', '\\ ', '\\\n  '),
  );
  const single = fc.array(fc.constantFrom(...'ab "$\\'), { maxLength: 4 }).map((cs) => `'${cs.join('')}'`);
  const double = fc
    .array(fc.oneof(fc.constantFrom(...'ab \''), fc.constantFrom('\\"', '\\\\', '\\$', '\\`', '\\n', '\\\n')), { maxLength: 4 })
    .map((cs) => `"${cs.join('')}"`);
  const valueText = fc.tuple(fc.constantFrom('', ' '), fc.array(fc.oneof(unquoted, single, double), { minLength: 1, maxLength: 5 }), fc.constantFrom('', '  '));
  let checked = 0;
  await holds(
    t,
    'random values read the same by systemd and by us',
    fc.property(valueText, ([lead, pieces, trail]) => {
      const text = `# comment\nOTHER=1\nVALUE=${lead}${pieces.join('')}${trail}\nTAIL=2\n`;
      const parsed = parseEnvironmentFile(text, 'env');
      const value = parsed.assignments.find((a) => a.key === 'VALUE')?.value;
      // ConditionOSRelease= refuses an expected value that is empty or starts with whitespace: not askable.
      if (parsed.problems.length || value === undefined || /^(\s|$)/.test(value)) return true;
      writeFileSync(file, text);
      checked++;
      return systemdSays('VALUE', value) && !systemdSays('VALUE', `${value}x`) && systemdSays('TAIL', '2');
    }),
    { numRuns: 80 },
  );
  t.ok(checked >= 40, `${checked} random values read the same by systemd and by us`);
});

t.test('a valid minion file and its defaults', async (t) => {
  const v = validateRole('minion', MINION, 'CLUSTER_NAME=Demo\n');
  t.same(v.problems, []);
  t.same(v.config, {
    role: 'minion',
    file: MINION,
    cluster: 'demo',
    domain: 'k8s',
    apiEndpoint: 'https://masters.demo.k8s:6443',
    vars: { CLUSTER_NAME: 'Demo' },
  });
  const full = validateRole(
    'minion',
    MINION,
    'CLUSTER_NAME=prod\nDNS_DOMAIN=corp.example\nCLOUD_PROVIDER=external\nKUBELET_HOSTNAME=ip-10-0-0-1\nNAMESERVER=10.0.0.2:5353\nAPI_ENDPOINT=https://api.prod.corp.example:443/\n',
  );
  t.match(full.config, {
    domain: 'corp.example',
    apiEndpoint: 'https://api.prod.corp.example:443',
    cloudProvider: 'external',
    kubeletHostname: 'ip-10-0-0-1',
  });
  t.same(full.nameserver, { host: '10.0.0.2', port: 5353 });
  t.same(validateRole('minion', MINION, 'CLUSTER_NAME=a\nDNS_DOMAIN=\nCLOUD_PROVIDER=\n').config?.domain, 'k8s', 'blank optional keys mean unset');
});

t.test('CLUSTER_NAME missing, empty, too long, not a DNS label', async (t) => {
  t.same(problems('DNS_DOMAIN=k8s\n'), [`${MINION}: CLUSTER_NAME is required`]);
  t.same(problems('CLUSTER_NAME=\n'), [`${MINION}:1: CLUSTER_NAME is empty`]);
  t.same(problems(`# x\nCLUSTER_NAME=${'a'.repeat(64)}\n`), [`${MINION}:2: CLUSTER_NAME is 64 characters long; a DNS label has at most 63`]);
  t.same(problems(`CLUSTER_NAME=${'a'.repeat(63)}\n`), [], '63 characters is fine');
  for (const bad of ['$(touch /tmp/x)', 'a.b', '-x', 'x-', 'a_b', 'ä']) {
    t.same(problems(`CLUSTER_NAME=${bad}\n`), [`${MINION}:1: CLUSTER_NAME ${JSON.stringify(bad)} is not a DNS label (letters, digits and inner '-' only)`], bad);
  }
  t.same(problems('CLUSTER_NAME="$(touch /tmp/x)"\n').length, 1, 'quoted, it is still refused');
});

t.test('other bad values name file, line and value', async (t) => {
  t.same(problems('CLUSTER_NAME=a\nDNS_DOMAIN=bad_domain\n'), [`${MINION}:2: DNS_DOMAIN "bad_domain" is not a DNS name`]);
  t.same(problems('CLUSTER_NAME=a\nAPI_ENDPOINT=ftp://x\n'), [`${MINION}:2: API_ENDPOINT "ftp://x" must be an http:// or https:// URL`]);
  t.same(problems('CLUSTER_NAME=a\nAPI_ENDPOINT=https://u:secret@x\n'), [`${MINION}:2: API_ENDPOINT "https://u:secret@x" must not carry credentials`]);
  t.same(problems('CLUSTER_NAME=a\nAPI_ENDPOINT=not a url\n'), [`${MINION}:2: API_ENDPOINT "not a url" is not a URL`]);
  t.same(problems('CLUSTER_NAME=a\nNAMESERVER=dns.example\n'), [
    `${MINION}:2: NAMESERVER: expected an IP address with an optional :port, got "dns.example"`,
  ]);
  // The kubelet of 1.36 starts with --cloud-provider empty or "external" only: an in-tree name would leave every
  // node's kubelet failing at start, so the role file refuses it before any unit runs.
  for (const name of ['aws', 'External', 'gce']) {
    t.same(problems(`CLUSTER_NAME=a\nCLOUD_PROVIDER=${name}\n`), [
      `${MINION}:2: CLOUD_PROVIDER "${name}" is not one the kubelet takes: Kubernetes 1.36 has no built-in cloud providers, so it is "external" (a cloud-controller-manager initialises the nodes) or empty`,
    ]);
  }
  t.same(problems('CLUSTER_NAME=a\n1BAD=x\nno equals sign\n'), [`${MINION}:2: invalid variable name "1BAD": names are [A-Za-z_][A-Za-z0-9_]*`, `${MINION}:3: missing '=' in "no equals sign"`]);
});

t.test('unterminated quotes and ambiguous comments', async (t) => {
  t.same(problems('CLUSTER_NAME=a\nX="open\nY=1\n'), [`${MINION}:2: unterminated double quote in the value of X`]);
  t.same(problems("CLUSTER_NAME=a\nX='open\n"), [`${MINION}:2: unterminated single quote in the value of X`]);
  t.same(problems('# x\nCLUSTER_NAME="demo\n'), [`${MINION}:2: unterminated double quote in the value of CLUSTER_NAME`], 'one problem, not also "required"');
  t.same(problems('CLUSTER_NAME=a\n# trailing backslash \\\nX=1\n'), [
    `${MINION}:2: comment ends in a backslash (systemd versions disagree on whether the next line is a comment)`,
  ]);
});

t.test('unknown keys warn and the file is still used', async (t) => {
  const v = validateRole('minion', MINION, 'CLUSTER_NAME=a\nFOO=1\nCLUSTER_NAME=b\n');
  t.same(v.problems, []);
  t.equal(v.config?.cluster, 'b', 'the last assignment wins, as in systemd');
  t.same(v.warnings.map((w) => w.describe()), [
    `${MINION}:2: unknown key FOO (ignored by the agent)`,
    `${MINION}:3: CLUSTER_NAME is set again (line 1 is overridden, as systemd does)`,
  ]);
  t.equal(v.config?.vars.FOO, '1', 'kept for units that read it');
});

async function rootWith(t: Test, files: Record<string, string>) {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'agent-role-'));
  t.teardown(() => fs.rm(root, { recursive: true, force: true }));
  for (const [file, text] of Object.entries(files)) {
    await fs.mkdir(path.dirname(path.join(root, file)), { recursive: true });
    await fs.writeFile(path.join(root, file), text);
  }
  return createHost({ root, write: () => undefined });
}

t.test('exactly one role file', async (t) => {
  t.same(await loadRole(await rootWith(t, {})), { state: 'unconfigured' }, 'none: unconfigured');
  const both = await loadRole(await rootWith(t, { [ROLE_FILES.master]: 'CLUSTER_NAME=a\n', [MINION]: 'CLUSTER_NAME=a\n' }));
  t.equal(both.state, 'invalid');
  if (both.state === 'invalid') {
    t.same(both.files, [ROLE_FILES.master, MINION]);
    t.match(both.problems[0]?.describe(), `both role files exist (${ROLE_FILES.master} and ${MINION})`);
  }
  const master = await loadRole(await rootWith(t, { [ROLE_FILES.master]: 'CLUSTER_NAME=a\nNAMESERVER=127.0.0.1\n' }));
  t.match(master, { state: 'configured', config: { role: 'master', file: ROLE_FILES.master }, nameserver: { host: '127.0.0.1', port: 53 } });
  const bad = await loadRole(await rootWith(t, { [MINION]: 'CLUSTER_NAME=a.b\n' }));
  t.match(bad, { state: 'invalid', files: [MINION] });
});
