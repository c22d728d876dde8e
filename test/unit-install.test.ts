// agent/unit-install.ts against the real thing: for each of the image's own units, and for units using every
// [Install] key the agent links itself, the links it writes are exactly those `systemctl --root enable` writes.
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHost } from '../agent/host.js';
import { installPlan, isLinked, writeLinks, type InstallLink } from '../agent/unit-install.js';
import { parseUnitFile } from '../agent/unit-file.js';

const LIB = '/usr/lib/systemd/system';
const UNITS = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'units');

/** Every symlink under the root's /etc/systemd/system, as `path -> target`. */
async function linksIn(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string) => {
    for (const e of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(dir, e.name);
      if (e.isSymbolicLink()) out.push(`${p.slice(root.length)} -> ${await fs.readlink(p)}`);
      else if (e.isDirectory()) await walk(p);
    }
  };
  await walk(path.join(root, 'etc/systemd/system'));
  return out.sort();
}

async function rootWith(t: Test, units: Record<string, string>): Promise<string> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'unit-install-'));
  t.teardown(() => fs.rm(root, { recursive: true, force: true }));
  await fs.mkdir(path.join(root, LIB), { recursive: true });
  await fs.mkdir(path.join(root, 'etc/systemd/system'), { recursive: true });
  for (const [name, text] of Object.entries(units)) await fs.writeFile(path.join(root, LIB, name), text);
  return root;
}

/** The agent's links for `names` (Also= followed), in a root holding `units`. */
async function ourLinks(t: Test, units: Record<string, string>, names: string[]): Promise<{ root: string; links: InstallLink[] }> {
  const root = await rootWith(t, units);
  const links: InstallLink[] = [];
  const queue = [...names];
  const seen = new Set<string>();
  for (let name = queue.shift(); name; name = queue.shift()) {
    if (seen.has(name)) continue;
    seen.add(name);
    const plan = installPlan(name, parseUnitFile(units[name] ?? '', `${LIB}/${name}`).unit);
    if ('unsupported' in plan) throw new Error(plan.unsupported);
    links.push(...plan.links);
    queue.push(...plan.also);
  }
  t.equal(await writeLinks(createHost({ root, write: () => undefined }), links), undefined, 'written');
  return { root, links };
}

async function systemctlLinks(t: Test, units: Record<string, string>, names: string[]): Promise<string[]> {
  const root = await rootWith(t, units);
  const r = spawnSync('systemctl', [`--root=${root}`, 'enable', '--', ...names], { encoding: 'utf8' });
  t.equal(r.status, 0, `systemctl enable: ${r.stderr}`);
  return linksIn(root);
}

t.test("the image's own units: the agent links each as systemctl enable does", async (t) => {
  const units: Record<string, string> = {};
  for (const name of await fs.readdir(UNITS)) if (/\.(service|path)$/.test(name)) units[name] = await fs.readFile(path.join(UNITS, name), 'utf8');
  t.ok(Object.keys(units).length >= 10, `${Object.keys(units).length} units`);
  for (const name of Object.keys(units).filter((n) => /\[Install\]/.test(units[n]!))) {
    const { root } = await ourLinks(t, units, [name]);
    t.same(await linksIn(root), await systemctlLinks(t, units, [name]), `${name}: the same links`);
  }
});

t.test('WantedBy, RequiredBy, Alias, Also, several words and a reset: the same links as systemctl', async (t) => {
  const units = {
    'a.service': '[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=x.target\nWantedBy=\nWantedBy=multi-user.target  graphical.target\nRequiredBy=b.service\nAlias=alias-a.service\nAlso=b.service\n',
    'b.service': '[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=default.target\nAlso=a.service\n',
  };
  const { root, links } = await ourLinks(t, units, ['a.service']);
  t.same(await linksIn(root), await systemctlLinks(t, units, ['a.service']));
  t.notOk(links.some((l) => l.path.includes('x.target')), 'the empty WantedBy= reset the list');
  const host = createHost({ root, write: () => undefined });
  t.equal(await isLinked(host, links), true);
  t.equal(await writeLinks(host, links), undefined, 'a second write changes nothing');
  const r = spawnSync('systemctl', [`--root=${root}`, 'is-enabled', 'a.service', 'b.service'], { encoding: 'utf8' });
  t.same(r.stdout.trim().split('\n'), ['enabled', 'enabled'], 'systemctl calls both enabled');
});

t.test('a link path held by something else: refused with what is there, and nothing of the set is left', async (t) => {
  const units = { 'a.service': '[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\nAlias=taken.service\n' };
  const root = await rootWith(t, units);
  await fs.symlink(`${LIB}/other.service`, path.join(root, 'etc/systemd/system/taken.service'));
  const plan = installPlan('a.service', parseUnitFile(units['a.service'], `${LIB}/a.service`).unit);
  if ('unsupported' in plan) throw new Error(plan.unsupported);
  const host = createHost({ root, write: () => undefined });
  t.equal(await writeLinks(host, plan.links), `/etc/systemd/system/taken.service already exists and points at ${LIB}/other.service, not at ${LIB}/a.service`);
  t.same(await linksIn(root), [`/etc/systemd/system/taken.service -> ${LIB}/other.service`], 'the wants link made first is gone again');
  t.equal(await isLinked(host, plan.links), false);
});

t.test('templates, specifiers and keys not checked here are left to systemctl', async (t) => {
  const unit = (text: string) => parseUnitFile(text, `${LIB}/x.service`).unit;
  t.match(installPlan('getty@.service', unit('[Install]\nWantedBy=getty.target\n')), { unsupported: /template/ });
  t.match(installPlan('x.service', unit('[Install]\nAlias=%N-alias.service\n')), { unsupported: /specifiers/ });
  t.match(installPlan('x.service', unit('[Install]\nUpheldBy=multi-user.target\n')), { unsupported: /UpheldBy= in \[Install\]/ });
  t.match(installPlan('x.service', unit('[Install]\nWantedBy=../../../../etc/cron.d\n')), { unsupported: /not a unit name/ }, 'no link outside its directory');
  t.same(installPlan('x.service', unit('[Service]\nExecStart=/bin/true\n')), { links: [], also: [] }, 'no [Install]: nothing to link (static)');
});
