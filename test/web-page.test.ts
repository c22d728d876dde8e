// The page of a cluster's boot, seen the way a person sees it: in a real browser (Debian's chromium, driven
// by playwright-core). `cluster watch --web` follows three nodes over real SSH (in-process ssh2 servers on
// loopback answering `agent status --json` with a recorded stream of status documents that agent/run.ts
// wrote), and the page must show the rows, the phases and why the stuck node waits, then take the
// server's pushed updates without reloading or polling. The bench report must read without JavaScript.
// UPDATE_SCREENSHOTS=1 also saves the screenshots in docs/.
import t, { type Test } from 'tap';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { reportFromStatus, STATUS_COMMAND } from '../scripts/check/node-report.js';
import { planNodes } from '../scripts/cluster/plan.js';
import { writeState, type ClusterState } from '../scripts/cluster/state.js';
import { KNOWN_HOSTS } from '../scripts/cluster/watch.js';
import { knownHostsLines } from '../scripts/check/known-hosts.js';
import { benchReport, type BenchEntry } from '../scripts/web/bench-report.js';
import { renderPage } from '../scripts/web/page.js';
import { segmentsOf } from '../scripts/web/timeline.js';
import { localSource, watchCluster, watchCommand } from '../scripts/web/watch-command.js';
import { openClusterPage, REPORT_FILE } from '../scripts/web/cluster-page.js';
import { main as cluster } from '../scripts/cluster.js';
import { generateKeyPair, startSshServer, type ExecAnswer, type TestSshServer } from './helpers/ssh-server.js';
import { recordStatusStream, STUCK_REASON, type StreamEvent } from './helpers/status-stream.js';

const REPO = path.resolve(import.meta.dirname, '..');
const CHROMIUM = '/usr/bin/chromium';
const SAVE = process.env.UPDATE_SCREENSHOTS === '1';

const start = Date.now() - 75_000;
const stream = await recordStatusStream(start);
/** Every node's answers in the order the agent wrote them; the test moves each node's cursor. */
const answersOf = (node: string) => stream.events.filter((e) => e.node === node).map((e) => e.result);
const upTo = (node: string, secondsAfterStart: number) => stream.events.filter((e: StreamEvent) => e.node === node && e.at <= start + secondsAfterStart * 1000).length - 1;

/** Bounded wait on the page, failing with what it waited for. */
async function waitFor(page: Page, what: string, fn: string, timeoutMs = 15_000): Promise<void> {
  try {
    await page.waitForFunction(fn, undefined, { timeout: timeoutMs, polling: 100 });
  } catch {
    throw new Error(`waited ${timeoutMs / 1000} s for ${what}; the page says: ${(await page.locator('body').innerText()).slice(0, 600)}`);
  }
}

async function launch(t: Test): Promise<Browser> {
  // As root, chromium refuses to start without --no-sandbox; nothing but our loopback page is loaded.
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  t.teardown(() => browser.close());
  return browser;
}

t.test('the recorded stream gives each node its phases, waits drawn apart from work', async (t) => {
  const last = (node: string) => reportFromStatus(node, answersOf(node).at(-1) as StreamEvent['result']);
  const now = start + 75_000;
  const minion2 = segmentsOf({ name: 'minion-2', poweredOnAt: start + 2000, report: last('minion-2') }, now);
  t.same(
    minion2.map((s) => [s.label, s.kind, s.ongoing]),
    [
      ['boot', 'boot', false],
      ['pki', 'work', false],
      ['resolver', 'work', false],
      ['wait-for-masters', 'wait', true],
    ],
    'the stuck minion: booted, did pki, and still waits',
  );
  t.equal(minion2.at(-1)?.to, now, 'its open wait runs to now');
  const minion1 = segmentsOf({ name: 'minion-1', report: last('minion-1') }, now);
  t.same(
    minion1.map((s) => `${s.label}:${s.kind}`),
    ['pki:work', 'resolver:work', 'wait-for-masters:wait', 'cni:work', 'weave:work', 'units:work'],
    'a ready minion: every phase closed, its wait told apart',
  );
  t.ok(minion1.every((s) => !s.ongoing), 'nothing open once ready');
});

t.test('a malformed or unreachable node shows as such on its row, and the others still show', async (t) => {
  const html = renderPage({
    title: 'bad input',
    now: start + 75_000,
    nodes: [
      { name: 'minion-1', report: reportFromStatus('minion-1', answersOf('minion-1').at(-1) as StreamEvent['result']) },
      { name: 'garbled', report: reportFromStatus('garbled', { code: 3, stdout: '{"state": "wait', stderr: '' }) },
      { name: 'gone', report: { target: 'gone', state: 'unreachable', detail: '127.0.0.1:1: connect ECONNREFUSED 127.0.0.1:1' } },
      { name: 'odd', report: reportFromStatus('odd', { code: 3, stdout: JSON.stringify({ state: 'running', phases: 'not a list', startedAt: 'yesterday' }), stderr: '' }) },
    ],
  });
  t.match(html, /<tr id="node-garbled" class="state-unreachable"[^]*agent status --json exited 3/, 'a damaged document: unreachable, with what it answered');
  t.match(html, /<tr id="node-gone" class="state-unreachable"[^]*ECONNREFUSED/, 'an unreachable node says why');
  t.match(html, /<tr id="node-odd" class="state-running"/, 'a document of the wrong shape still gets its row');
  t.match(html, /<tr id="node-minion-1" class="state-ready"/, 'the good node is unaffected');
  t.notMatch(html, /<script/, 'a report carries no script');
  t.notMatch(html, /(src|href)="?https?:/, 'nothing is fetched from the network');
});

t.test('cluster watch --web: rows, phases, the stuck node\'s reason, then live updates pushed to Chromium', async (t) => {
  const client = generateKeyPair();
  const cursor = new Map<string, number>(stream.nodes.map((n) => [n.name, upTo(n.name, 52)]));
  const override = new Map<string, ExecAnswer>();
  const servers = new Map<string, TestSshServer>();
  for (const n of stream.nodes) {
    const answer = (command: string): ExecAnswer => {
      if (command !== STATUS_COMMAND) return { stdout: '', code: 127 };
      const r = override.get(n.name) ?? answersOf(n.name)[cursor.get(n.name) as number];
      return r ? { stdout: r.stdout, code: r.code } : { stdout: '', code: 127 };
    };
    servers.set(n.name, await startSshServer(client.publicKey, answer));
  }
  t.teardown(async () => {
    for (const s of servers.values()) await s.close();
  });

  // A local cluster's state directory, as `cluster up` leaves it: cluster.json, the key, known_hosts.
  const dir = await mkdtemp(path.join(tmpdir(), 'web-page-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // The nodes `cluster up` plans for one master and two minions: the stream's three.
  const state: ClusterState = {
    cluster: 'local', domain: 'k8s', accel: 'tcg', memoryMb: 1536, mcast: { group: '230.0.0.1', port: 5000 },
    nodes: planNodes(1, 2).map((n) => {
      const recorded = stream.nodes.find((r) => r.name === n.name);
      if (!recorded) throw new Error(`the recorded stream has no ${n.name}`);
      return { ...n, sshPort: (servers.get(n.name) as TestSshServer).port, power: 'on', poweredOnAt: recorded.poweredOnAt, boots: 1 };
    }),
  };
  await writeState(dir, state);
  await writeFile(path.join(dir, 'id_ed25519'), client.privateKey, { mode: 0o600 });
  const knownHosts = [...servers.values()].map((s) => {
    const [type, blob] = s.hostPublicKey.split(' ');
    return knownHostsLines('127.0.0.1', s.port, [{ type: type as string, blob: blob as string }]);
  });
  await writeFile(path.join(dir, KNOWN_HOSTS), knownHosts.join(''));

  const controller = new AbortController();
  const lines: string[] = [];
  let serving: (url: string) => void = () => undefined;
  const url = new Promise<string>((resolve) => (serving = resolve));
  const watching = watchCluster(await localSource(dir, 'root'), { everyMs: 200, web: { port: 0 }, log: (l) => lines.push(l), onServing: serving }, controller.signal);
  t.teardown(async () => {
    controller.abort();
    await watching;
  });
  const pageUrl = await Promise.race([url, watching.then(() => Promise.reject(new Error('the watcher ended before serving')))]);
  t.match(pageUrl, /^http:\/\/127\.0\.0\.1:\d+\/$/, 'the page is served on 127.0.0.1 only');

  const browser = await launch(t);
  const page = await browser.newPage({ viewport: { width: 1200, height: 560 } });
  const requests: string[] = [];
  page.on('request', (r) => requests.push(r.url()));
  await page.goto(pageUrl);
  await waitFor(page, 'three rows with answers from their nodes', `document.querySelectorAll('tbody tr').length === 3 && !document.body.innerText.includes('not asked yet')`);
  await waitFor(page, 'the live connection', `document.getElementById('connection').textContent === 'live'`);

  const rowText = (name: string) => page.locator(`#node-${name}`).innerText();
  t.match(await rowText('master-1'), /running[^]*units[^]*boot booting 41s[^]*pki working 3s[^]*units working/, 'master-1: booted, pki done, units at work');
  t.match(await rowText('minion-1'), /waiting[^]*wait-for-masters[^]*https:\/\/masters\.local\.k8s:6443\/readyz/, 'minion-1 waits for the master, and says on what');
  t.match(await rowText('minion-2'), new RegExp(`waiting[^]*${STUCK_REASON.replace(/\./g, '\\.')} \\(for \\d+s\\)`), "the stuck node's reason, and for how long");
  t.match(await page.locator('#node-minion-2 ol.phases li.wait').innerText(), /^wait-for-masters waiting \d+s…$/, 'the open wait is listed as a wait');
  t.equal(await page.locator('#node-minion-2 svg rect.wait').count(), 1, 'and drawn as one');
  t.match(await page.locator('#node-minion-2 svg').getAttribute('aria-label'), /timeline of minion-2: boot booting \d+s, pki working 2s, resolver working 0s, wait-for-masters waiting/, 'the timeline has words for a screen reader');
  t.match(await page.locator('#summary').innerText(), /cluster check: 0 of 3 nodes ready; waiting: minion-1, minion-2/, 'the check result');

  // Keyboard: the first Tab reaches the first row; the focus survives the updates.
  await page.evaluate('window.notReloaded = true');
  await page.keyboard.press('Tab');
  t.equal(await page.evaluate('document.activeElement.id'), 'node-master-1', 'rows are reachable with the keyboard');
  const updates = Number(await page.locator('#view').getAttribute('data-updates'));

  for (const n of stream.nodes) cursor.set(n.name, answersOf(n.name).length - 1);
  await waitFor(page, 'master-1 and minion-1 to turn ready', `['master-1','minion-1'].every((n) => document.querySelector('#node-' + n + ' .badge')?.textContent === 'ready')`);
  t.ok(Number(await page.locator('#view').getAttribute('data-updates')) > updates, 'the view was replaced by pushed updates');
  t.equal(await page.evaluate('window.notReloaded'), true, 'without reloading the page');
  t.equal(await page.evaluate('document.activeElement.id'), 'node-master-1', 'the focused row keeps the focus');
  t.match(await rowText('minion-1'), /ready in 1m07s[^]*wait-for-masters waiting 10s[^]*cni working 1s[^]*weave working 4s[^]*units working 7s/, 'minion-1 took 67 s from power-on, 10 s of it waiting');
  t.match(await page.locator('#summary').innerText(), /2 of 3 nodes ready; waiting: minion-2/, 'the check result follows');
  t.match(lines.join('\n'), /minion-1 ready units/, 'the terminal gets one line per change too');
  if (SAVE) await page.screenshot({ path: path.join(REPO, 'docs/web-live-page.png'), fullPage: true });

  // Bad input: a damaged document, then a node that is gone; the other rows stay.
  override.set('minion-1', { stdout: '{"state": "ready", "pha', code: 0 });
  await waitFor(page, "minion-1's damaged answer", `document.querySelector('#node-minion-1 .badge')?.textContent === 'unreachable'`);
  t.match(await rowText('minion-1'), /agent status --json exited 0/, 'the row says what was wrong');
  await servers.get('master-1')?.close();
  await waitFor(page, 'master-1 to be unreachable', `document.querySelector('#node-master-1 .badge')?.textContent === 'unreachable'`);
  t.match(await rowText('master-1'), /ECONNREFUSED/, 'the row says why');
  t.equal(await page.locator('tbody tr').count(), 3, 'every row is still there');

  t.same(
    requests.filter((r) => !r.startsWith(pageUrl)),
    [],
    'nothing but the page itself is fetched',
  );
  t.equal(requests.filter((r) => r.endsWith('/events')).length, 1, 'one event stream: the browser does not poll');
});

t.test('the bench report: tables without JavaScript, charts of the side-by-side figures', async (t) => {
  // A real `npm run bench -- --only agent,dns --quick` run, recorded (bench/results.json is not tracked).
  const results = JSON.parse(await readFile(path.join(REPO, 'test/fixtures/bench-results-recorded.json'), 'utf8')) as { benches: Record<string, BenchEntry> };
  const browser = await launch(t);
  const context = await browser.newContext({ javaScriptEnabled: false, viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  const requests: string[] = [];
  page.on('request', (r) => requests.push(r.url()));
  await page.setContent(benchReport(results.benches));
  for (const [name, entry] of Object.entries(results.benches)) {
    t.equal(await page.locator(`section[aria-labelledby="bench-${name}"] tbody tr`).count(), entry.rows.length, `${name}: one table row per result`);
  }
  const charts = await page.locator('svg.chart').evaluateAll((svgs) => svgs.map((s) => s.getAttribute('aria-label') ?? ''));
  t.ok(charts.some((c) => /^Agent against the Node floor: wall time: agent status median [\d.]+ ms, node -e 0 \(floor\) median [\d.]+ ms$/.test(c)), 'agent status against the node -e 0 floor');
  t.ok(charts.some((c) => /^DNS server against dnsmasq: .*metal median \d+ qps, dnsmasq median \d+ qps$/.test(c)), 'the DNS server against dnsmasq');
  t.ok(await page.locator('svg.chart rect.ours').first().isVisible(), 'the bars are drawn');
  t.same(requests, [], 'the report fetches nothing');
  if (SAVE) await page.screenshot({ path: path.join(REPO, 'docs/web-bench-report.png'), fullPage: true });
});

t.test('cluster watch: the command-line convention; bad input is named and changes nothing', async (t) => {
  const run = async (args: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await watchCommand(args, (l) => out.push(l), (l) => err.push(l));
    return { code, out: out.join('\n'), err: err.join('\n') };
  };
  const help: string[] = [];
  t.equal(await cluster(['watch', '--help'], (l) => void help.push(l)), 0, '--help through `cluster watch` exits 0');
  t.match(help.join('\n'), /^usage: cluster watch /, 'and prints the usage on stdout');
  t.match(await run(['--every', '0']), { code: 2, err: /^cluster watch: --every: expected a positive number of seconds, got "0"\nusage:/ }, 'a bad --every names the value');
  t.match(await run(['--web', '--port', '70000']), { code: 2, err: /--port: expected a port number \(0 for any free one\), got "70000"/ }, 'a bad --port names the value');
  t.match(await run(['--hosts', '127.0.0.1:22']), { code: 2, err: /--hosts, --key and --known-hosts go together/ }, '--hosts alone is refused');
  const dir = await mkdtemp(path.join(tmpdir(), 'web-watch-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  t.match(await run(['--state-dir', dir]), { code: 1, err: new RegExp(`^cluster watch: no cluster here: ${dir} has no cluster\\.json`) }, 'a directory without a cluster is named');
  t.match(await run(['--hosts', '127.0.0.1', '--key', path.join(dir, 'nope'), '--known-hosts', path.join(dir, 'nope')]), { code: 1, err: /--known-hosts: cannot read .*nope: ENOENT/ }, 'an unreadable file is named');
});

t.test('cluster up: the answers its watcher gets make the report it leaves in the state directory', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'web-report-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const state: ClusterState = {
    cluster: 'local', domain: 'k8s', accel: 'tcg', memoryMb: 1536, mcast: { group: '230.0.0.1', port: 5000 },
    nodes: planNodes(1, 2).map((n, i) => ({ ...n, sshPort: 2200 + i, power: 'on', poweredOnAt: stream.nodes[i]?.poweredOnAt, boots: 1 })),
  };
  const minion2 = state.nodes[2] as ClusterState['nodes'][number];
  Object.assign(minion2, { power: 'off' });
  const lines: string[] = [];
  const page = await openClusterPage(state, dir, undefined, (l) => lines.push(l));
  for (const node of state.nodes) page.report(node, reportFromStatus(node.name, answersOf(node.name).at(-1) as StreamEvent['result']));
  await page.finish();
  const html = await readFile(path.join(dir, REPORT_FILE), 'utf8');
  t.match(html, /<tr id="node-master-1" class="state-ready"[^]*<tr id="node-minion-1" class="state-ready"/, 'the nodes that answered, in order');
  t.match(html, /<tr id="node-minion-2" class="state-off"/, 'a node powered off shows as off, not as its last answer');
  t.notMatch(html, /<script/, 'the report has no script');
  t.same(lines, [`report: ${path.join(dir, REPORT_FILE)}`], 'and says where it is');
});
