// The one way a test waits for something to happen: polled, bounded, and a failure that says what never
// happened (a hang would only say "timeout" at the end of the whole file).
export async function until(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`waited ${timeoutMs / 1000} s for ${what}, and it never happened`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
