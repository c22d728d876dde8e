// The boot flow's phases, in the order they run (agent/run.ts runs those of the node's role).
// Adding a phase is one line here: put it where its inputs are ready.
import type { Phase } from './phase.js';
import { cniPhase } from './cni.js';
import { pkiPhase } from './pki.js';
import { unitsPhase } from './units.js';
import { waitForMastersPhase } from './wait-for-masters.js';
import { weavePhase } from './weave.js';

export const PHASES: readonly Phase[] = [
  pkiPhase,
  waitForMastersPhase,
  cniPhase,
  weavePhase,
  unitsPhase,
];
