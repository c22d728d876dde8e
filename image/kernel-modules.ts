// Which kernel modules a disk boot must insmod, and in what order, read from the root's modules.dep
// (the host may have no modprobe, and its kmod would not know the image's kernel anyway).

/** modules.dep line: `kernel/a/b.ko: kernel/c.ko kernel/d.ko` (deps closed transitively; load right to left). */
export function parseModulesDep(text: string): Map<string, string[]> {
  const deps = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    deps.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim().split(/\s+/).filter(Boolean));
  }
  return deps;
}

/** A module's name as modprobe matches it: file name without .ko(.xz|.zst|.gz), '-' and '_' alike. */
export function moduleName(file: string): string {
  return (file.split('/').pop() ?? file).replace(/\.ko(\.[a-z]+)?$/, '').replace(/-/g, '_');
}

/**
 * The module files (relative to /lib/modules/<ver>) to insmod for `names`, every dependency before its
 * users, each once. A name that modules.dep does not list is an error unless `builtin` says the kernel
 * has it built in (modules.builtin), in which case there is nothing to load.
 */
export function loadOrder(deps: Map<string, string[]>, names: readonly string[], builtin: ReadonlySet<string> = new Set()): string[] {
  const byName = new Map([...deps.keys()].map((file) => [moduleName(file), file]));
  const order: string[] = [];
  const visit = (file: string) => {
    if (order.includes(file)) return;
    // modules.dep lists the closure with the first-needed last: load those first.
    for (const dep of [...(deps.get(file) ?? [])].reverse()) visit(dep);
    order.push(file);
  };
  for (const name of names) {
    const file = byName.get(moduleName(name));
    if (file) visit(file);
    else if (!builtin.has(moduleName(name))) throw new Error(`kernel module ${name} is neither in modules.dep nor built in`);
  }
  return order;
}

/** modules.builtin lists built-in modules as paths, like modules.dep. */
export function parseBuiltin(text: string): Set<string> {
  return new Set(text.split('\n').filter(Boolean).map(moduleName));
}
