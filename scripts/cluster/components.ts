// A components directory with some components swapped for local files: how the local cluster puts the
// kube-apiserver double (test/fixtures/master-double) into the doubles the image is built from, and how a
// developer tries a locally built binary. The manifest keeps its pins: every swapped file gets its own
// sha256 as its digest, and the image's provision step verifies it like any other. Only a single-file component
// can be swapped (a tarball or image component installs several files from one pinned archive).
import { createHash } from 'node:crypto';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { InputError } from '../../agent/errors.js';

interface Component {
  name: string;
  kind?: string;
  url?: string;
  file?: string;
  digest?: string;
  [key: string]: unknown;
}

/** `NAME=FILE` → [name, file]. */
export function parseSwap(text: string): [string, string] {
  const m = /^([A-Za-z0-9._-]+)=(.+)$/.exec(text);
  if (!m) throw new InputError(`--component: expected NAME=FILE, got ${JSON.stringify(text)}`, { value: text });
  return [m[1] as string, m[2] as string];
}

/** Writes `<out>/manifest.json` and the files it names; returns the manifest's path. */
export async function composeComponents(baseDir: string, manifestFile: string, swaps: readonly [string, string][], out: string): Promise<string> {
  let doc: { components?: Component[] };
  try {
    doc = JSON.parse(await readFile(manifestFile, 'utf8'));
  } catch (err) {
    throw new InputError(`cannot read the components manifest: ${(err as Error).message}`, { file: manifestFile });
  }
  const components = doc.components ?? [];
  await mkdir(out, { recursive: true });
  for (const [name, file] of swaps) {
    const c = components.find((x) => x.name === name);
    if (!c) throw new InputError(`--component: no component named ${name} in the manifest`, { file: manifestFile, value: name });
    if (c.kind !== 'file') throw new InputError(`--component ${name}: only a "file" component can be swapped, it is ${JSON.stringify(c.kind)}`, { file: manifestFile, value: name });
    const bytes = await readFile(file).catch((err: NodeJS.ErrnoException) => {
      throw new InputError(`--component ${name}: cannot read ${file}: ${err.code ?? err.message}`, { file });
    });
    c.file = `${name}.swapped`;
    c.digest = createHash('sha256').update(bytes).digest('hex');
    await writeFile(path.join(out, c.file), bytes, { mode: 0o755 });
  }
  const swapped = new Set(swaps.map(([name]) => name));
  for (const c of components) {
    if (swapped.has(c.name)) continue;
    // Local doubles are files named in the manifest (a URL's last part may hold an unfilled {version}).
    const file = c.file ?? c.url?.split('/').pop() ?? '';
    await copyFile(path.join(baseDir, file), path.join(out, file));
  }
  const manifest = path.join(out, 'manifest.json');
  await writeFile(manifest, `${JSON.stringify(doc, null, 2)}\n`);
  return manifest;
}
