// What a phase writes, as plain data its pure "decide" step returns, and the one way it is applied:
// directories first, then files (atomically, through the Host), changing only what is not already right.
import type { Host } from './host.js';

export interface FilePlan {
  dirs: { path: string; mode: number }[];
  files: { path: string; content: string; mode: number }[];
}

/** Applies the plan; returns the node paths it changed (none on a re-run). Logs paths, never contents. */
export async function applyFilePlan(host: Host, plan: FilePlan, event: string): Promise<string[]> {
  const changed: string[] = [];
  for (const dir of plan.dirs) if (await host.mkdir(dir.path, dir.mode)) changed.push(dir.path);
  for (const file of plan.files) if (await host.writeFile(file.path, file.content, file.mode)) changed.push(file.path);
  for (const path of changed) host.log(event, { path });
  return changed;
}
