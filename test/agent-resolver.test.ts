// The resolver phase: a metal node's system resolver (systemd-resolved) sends the cluster's names to the
// NAMESERVER of its role file, port and all, so the kubelet finds masters.<cluster>.<domain> as the agent does.
import t from 'tap';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { decideResolver, resolvedDropIn, resolverPhase, RESOLVED_DROP_IN, RESOLVED_UNIT_FILE } from '../agent/resolver.js';
import { minionConfig, minionContext } from './helpers/overlay.js';

t.test('the drop-in routes the cluster domain alone to NAMESERVER, port included', async (t) => {
  const conf = resolvedDropIn(minionConfig({ NAMESERVER: '10.0.2.2:41008' }))!;
  t.match(conf, /^\[Resolve\]$/m);
  t.match(conf, /^DNS=10\.0\.2\.2:41008$/m);
  t.match(conf, /^Domains=~demo\.k8s$/m, 'a routing-only domain: not added to the search list');
  t.match(resolvedDropIn(minionConfig({ NAMESERVER: '[fd00::53]:5353' })), /^DNS=\[fd00::53\]:5353$/m, 'IPv6 in brackets before a port');
  t.match(resolvedDropIn(minionConfig({ NAMESERVER: '192.0.2.53' })), /^DNS=192\.0\.2\.53:53$/m);
  t.equal(resolvedDropIn(minionConfig()), undefined, 'no NAMESERVER: nothing to write');
  t.equal(decideResolver(minionConfig()), undefined);
  t.throws(() => resolvedDropIn(minionConfig({ NAMESERVER: 'dns.example:53' })), { name: 'InputError', message: /NAMESERVER.*dns\.example:53/ });
});

t.test('the phase: nothing to do without NAMESERVER, skipped when resolved is missing, written once', async (t) => {
  const none = await minionContext(t, '127.0.0.1:53');
  t.equal(await resolverPhase.skipReason!(none), undefined, 'no NAMESERVER: nothing to warn about');
  await resolverPhase.run(none);
  t.equal(await none.host.readFile(RESOLVED_DROP_IN), undefined, 'and nothing written');
  t.match(none.facts(), { resolver: { nameserver: 'system' } });

  const vars = { NAMESERVER: '10.0.2.2:41008' };
  const noResolved = await minionContext(t, '127.0.0.1:53', { vars });
  t.match(await resolverPhase.skipReason!(noResolved), /systemd-resolved is not installed/, 'says why the system resolver will not know');

  const ctx = await minionContext(t, '127.0.0.1:53', { vars });
  await mkdir(path.dirname(ctx.host.resolve(RESOLVED_UNIT_FILE)), { recursive: true });
  await writeFile(ctx.host.resolve(RESOLVED_UNIT_FILE), '[Service]\n');
  t.equal(await resolverPhase.skipReason!(ctx), undefined);
  await resolverPhase.run(ctx);
  t.match(await ctx.host.readFile(RESOLVED_DROP_IN), /^DNS=10\.0\.2\.2:41008$/m);
  t.match(ctx.facts(), { resolver: { zone: 'demo.k8s', nameserver: '10.0.2.2:41008', dropIn: RESOLVED_DROP_IN } });
  t.equal(ctx.logs.filter((l) => l.startsWith('resolver-changed')).length, 2, 'one line each for the directory and the file');

  const before = await stat(ctx.host.resolve(RESOLVED_DROP_IN));
  await resolverPhase.run(ctx);
  t.equal((await stat(ctx.host.resolve(RESOLVED_DROP_IN))).mtimeMs, before.mtimeMs, 'second run: the file is not rewritten');
  t.equal(ctx.logs.filter((l) => l.startsWith('resolver-changed')).length, 2, 'and nothing more logged as changed');
});
