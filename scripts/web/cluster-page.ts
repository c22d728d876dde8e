// The page of a local cluster while `cluster up|start` follows it: every answer the watcher gets from a
// node (scripts/cluster/watch.ts, over SSH) updates the page, which `--web` serves live; when the watcher
// is done the same page is written to <state-dir>/report.html, the run's report.
import { writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import type { NodeReport } from '../check/node-report.js';
import type { ClusterState, NodeState } from '../cluster/state.js';
import { serveLivePage, type LiveOptions, type LiveServer } from './live-server.js';
import { renderPage, type PageModel } from './page.js';

export const REPORT_FILE = 'report.html';

export interface ClusterPage {
  /** For WatchOptions.onReport: a node answered. */
  report(node: NodeState, report: NodeReport): void;
  /** Writes the report; with --web, keeps serving the final page until Ctrl-C. */
  finish(): Promise<void>;
}

export function clusterModel(state: ClusterState, reports: ReadonlyMap<string, NodeReport>, now: number): PageModel {
  return {
    title: `kubeseed cluster ${state.cluster}`,
    now,
    // A node powered off has no current answer: an old one would show a state it is no longer in.
    nodes: state.nodes.map((n) =>
      n.power === 'off'
        ? { name: n.name, role: n.role, off: true }
        : {
            name: n.name,
            role: n.role,
            ...(n.poweredOnAt !== undefined && { poweredOnAt: n.poweredOnAt }),
            ...(n.readyAt !== undefined && { readyAt: n.readyAt }),
            ...(reports.has(n.name) && { report: reports.get(n.name) }),
          },
    ),
  };
}

/** Resolves when the user presses Ctrl-C (or the process is told to stop). */
export function interrupted(): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      resolve();
    };
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
}

export async function openClusterPage(state: ClusterState, stateDir: string, web: LiveOptions | undefined, log: (line: string) => void): Promise<ClusterPage> {
  const reports = new Map<string, NodeReport>();
  const model = () => clusterModel(state, reports, Date.now());
  let server: LiveServer | undefined;
  if (web) {
    server = await serveLivePage(model, web);
    log(`live page: ${server.url}`);
  }
  return {
    report(node, report) {
      reports.set(node.name, report);
      server?.changed();
    },
    async finish() {
      const file = path.join(stateDir, REPORT_FILE);
      await writeFile(file, renderPage(model()));
      log(`report: ${file}`);
      if (!server) return;
      server.changed();
      log(`the live page stays at ${server.url} until Ctrl-C`);
      await interrupted();
      await server.close();
    },
  };
}
