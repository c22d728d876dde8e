// The boot flow's phases, in the order they run (agent/run.ts runs those of the node's role).
// Adding a phase is one line here: put it where its inputs are ready. Each is loaded only by `agent run`
// (dynamic import): `agent status` and `check` start without evaluating any of them.
import type { Phase } from './phase.js';

const LOADERS: readonly (() => Promise<Phase>)[] = [
  () => import('./pki.js').then((m) => m.pkiPhase),
  () => import('./resolver.js').then((m) => m.resolverPhase),
  () => import('./etcd.js').then((m) => m.etcdPhase),
  () => import('./wait-for-masters.js').then((m) => m.waitForMastersPhase),
  () => import('./cni.js').then((m) => m.cniPhase),
  () => import('./weave.js').then((m) => m.weavePhase),
  () => import('./units.js').then((m) => m.unitsPhase),
];

export function loadPhases(): Promise<Phase[]> {
  return Promise.all(LOADERS.map((load) => load()));
}
