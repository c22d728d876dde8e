// The environment-file contract (agent/contract/env-file.ts, agent/contract/role-file.ts): what user-data
// renders, the agent reads, the agent writes for units, and systemd reads, are one grammar.
import t from 'tap';
import fc from 'fast-check';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { parse } from 'yaml';
import { envKeyProblem, envValueProblem, parseEnvironmentFile, renderEnvFile } from '../agent/contract/env-file.js';
import { renderRoleFile, ROLE_FILES, validateRole } from '../agent/contract/role-file.js';
import { InputError } from '../agent/errors.js';
import { createHost } from '../agent/host.js';
import { renderWeaveEnv, WEAVE_ENV } from '../agent/weave.js';
import { checkPasswordFile, WEAVE_PASSWORD_FILE } from '../agent/weave-password.js';
import { renderUserData } from '../cloud-init/render.js';
import { holds } from './helpers/property.js';
import { systemdReadsEnvFile } from './helpers/systemd-env.js';
import { startUserManager } from './helpers/systemd-user.js';

const key = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,12}$/);
const anyValue = fc.string({ unit: 'binary', maxLength: 30 });

t.test('render then parse is the identity for every entry the renderer accepts', async (t) => {
  await holds(
    t,
    'env files round-trip',
    fc.property(fc.array(fc.tuple(key, anyValue), { maxLength: 6 }), (entries) => {
      let text: string;
      try {
        text = renderEnvFile('test', entries);
      } catch (err) {
        // Refused only for a reason the contract names, and the same reason the agent would give.
        return err instanceof InputError && entries.some(([k, v]) => (envKeyProblem(k) ?? envValueProblem(k, v)) === err.message);
      }
      const parsed = parseEnvironmentFile(text, 'f');
      return parsed.problems.length === 0 && JSON.stringify(parsed.assignments.map((a) => [a.key, a.value])) === JSON.stringify(entries);
    }),
    { numRuns: 500 },
  );
});

t.test('every role file the renderer writes, the agent accepts with the same values', async (t) => {
  await holds(
    t,
    'role files round-trip',
    fc.property(fc.constantFrom('master' as const, 'minion' as const), fc.dictionary(fc.stringMatching(/^[A-Z][A-Z0-9_]{0,8}$/), anyValue, { maxKeys: 4 }), (role, vars) => {
      delete vars.CLUSTER_NAME;
      delete vars.DNS_DOMAIN;
      let text: string;
      try {
        text = renderRoleFile({ role, cluster: 'demo', vars });
      } catch (err) {
        // Refused only for the reason the agent itself would give for that value.
        return err instanceof InputError && Object.entries(vars).some(([k, v]) => envValueProblem(k, v) === err.message);
      }
      const v = validateRole(role, ROLE_FILES[role], text);
      return v.problems.length === 0 && Object.entries(vars).every(([k, value]) => v.config?.vars[k] === value);
    }),
    { numRuns: 300 },
  );
});

// The acceptance scenario: one value through every path a node takes it.
const TRICKY = `it's a "quoted" pa$ 5 \\ back\\slash and spaces`;

t.test('a value with a quote, a space, a $ and a backslash survives user-data → its env file → systemd', async (t) => {
  const userData = await renderUserData({ role: 'minion', cluster: 'demo', vars: { WEAVE_PASSWORD: TRICKY, KUBELET_HOSTNAME: TRICKY } });
  const files = (parse(userData.replace(/^#cloud-config\n/, '')) as { write_files: { path: string; content: string; permissions: string }[] }).write_files;
  const roleFile = files.find((f) => f.path === ROLE_FILES.minion)!;
  t.equal((await systemdReadsEnvFile(roleFile.content)).get('KUBELET_HOSTNAME'), TRICKY, 'systemd reads the role file as written');
  const agent = validateRole('minion', ROLE_FILES.minion, roleFile.content);
  t.same(agent.problems, []);
  t.equal(agent.config?.vars.KUBELET_HOSTNAME, TRICKY, 'the agent reads the same value');
  t.notOk(roleFile.content.includes('WEAVE_PASSWORD'), 'the password is not in the role file that kubelet and kube-proxy load');
  const passwordFile = files.find((f) => f.path === WEAVE_PASSWORD_FILE)!;
  t.equal(passwordFile.permissions, '0600');
  t.equal((await systemdReadsEnvFile(passwordFile.content)).get('WEAVE_PASSWORD'), TRICKY, 'systemd reads the password file the same');
});

t.test('the same value through a real service manager: EnvironmentFile= gives the unit exactly what the agent read', async (t) => {
  // systemd's own reading, not a re-implementation: a `systemd --user` manager (test/helpers/systemd-user.ts)
  // runs a oneshot that loads the files as weave.service does and dumps the environment its process got.
  const userData = await renderUserData({ role: 'minion', cluster: 'demo', vars: { WEAVE_PASSWORD: TRICKY, KUBELET_HOSTNAME: TRICKY } });
  const files = (parse(userData.replace(/^#cloud-config\n/, '')) as { write_files: { path: string; content: string; permissions: string }[] }).write_files;
  const root = await mkdtemp(path.join(tmpdir(), 'kubeseed-envfile-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  for (const f of files) {
    await mkdir(path.join(root, path.dirname(f.path)), { recursive: true });
    await writeFile(path.join(root, f.path), f.content, { mode: Number.parseInt(f.permissions, 8) });
  }
  const roleFile = path.join(root, ROLE_FILES.minion);
  const agent = validateRole('minion', ROLE_FILES.minion, await readFile(roleFile, 'utf8'));
  t.equal(agent.config?.vars.KUBELET_HOSTNAME, TRICKY, 'the agent reads the role file’s value');
  t.same(await checkPasswordFile(createHost({ root })), { encrypted: true }, 'the agent accepts the password file as written');
  const weaveEnv = path.join(root, WEAVE_ENV);
  await mkdir(path.dirname(weaveEnv), { recursive: true });
  await writeFile(weaveEnv, renderWeaveEnv({ name: '02:00:00:00:0a:05', range: '10.32.0.0/12', init: 'observer', peers: ['10.0.0.2'] }));

  const m = await startUserManager();
  t.teardown(() => m.stop());
  const dump = path.join(root, 'environment');
  await m.writeUnit(
    'kubeseed-envfile-check.service',
    ['[Service]', 'Type=oneshot', `EnvironmentFile=${roleFile}`, `EnvironmentFile=${weaveEnv}`, `EnvironmentFile=${path.join(root, WEAVE_PASSWORD_FILE)}`, 'ExecStart=/usr/bin/env -0', `StandardOutput=file:${dump}`, ''].join('\n'),
  );
  await m.systemctl('start', 'kubeseed-envfile-check.service');
  const env = new Map((await readFile(dump, 'utf8')).split('\0').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  t.equal(env.get('KUBELET_HOSTNAME'), TRICKY, 'the role file: the unit gets the value the agent read');
  t.equal(env.get('WEAVE_PASSWORD'), TRICKY, 'the password file: weave.service gets the password as given');
  t.equal(env.get('PEERS'), '10.0.0.2', 'weave.env: the launch arguments as the agent wrote them');
  t.equal(env.get('CLUSTER_NAME'), 'demo');
});

t.test('a value with a newline is refused at render time with the message the agent gives for it', async (t) => {
  const value = `${TRICKY}\nSECOND=line`;
  const rendered = await renderUserData({ role: 'minion', cluster: 'demo', vars: { KUBELET_HOSTNAME: value } }).then(
    () => undefined,
    (err: unknown) => err,
  );
  t.type(rendered, InputError);
  // The same file written by hand (systemd keeps a newline inside double quotes) reaches the agent:
  const byHand = `CLUSTER_NAME=demo\nKUBELET_HOSTNAME="${value.replace(/["\\`$]/g, (c) => `\\${c}`)}"\n`;
  const agent = validateRole('minion', ROLE_FILES.minion, byHand);
  t.same(
    agent.problems.map((p) => p.message),
    [(rendered as InputError).message],
    'one message on both sides',
  );
  t.match((rendered as InputError).message, /^KUBELET_HOSTNAME: value contains a NUL, CR or newline/);
  const password = await renderUserData({ role: 'minion', cluster: 'demo', vars: { WEAVE_PASSWORD: value } }).catch((err: unknown) => err);
  t.match(password, { name: 'InputError', message: /^WEAVE_PASSWORD: value contains a NUL, CR or newline/ }, 'the password file is checked the same way');
});

t.test('env files the agent writes for units are read by systemd as the agent meant', async (t) => {
  const text = renderEnvFile('Written by a test', [
    ['SERVICE_CIDR', '10.96.0.0/12'],
    ['CNI_BIN_DIR', '/opt/cni/bin'],
  ]);
  const vars = await systemdReadsEnvFile(text);
  t.equal(vars.get('SERVICE_CIDR'), '10.96.0.0/12');
  t.equal(vars.get('CNI_BIN_DIR'), '/opt/cni/bin');
  t.throws(() => renderEnvFile('x', [['A', 'ok'], ['B-C', 'x']]), /invalid variable name "B-C"/, 'a bad key renders nothing');
});
