// Waiting for instances, shown the way the output is consumed: on a terminal one line redrawn in
// place; in a log or a pipe one line per instance state change, so nothing is repeated.
export interface InstanceView {
  id: string;
  state: string;
  privateIp?: string | undefined;
}

export interface Output {
  isTTY?: boolean;
  write(text: string): unknown;
}

export function createProgress(out: Output) {
  const seen = new Map<string, string>();
  let drawn = false;
  return {
    update(instances: InstanceView[], elapsedMs: number): void {
      if (out.isTTY) {
        const counts = new Map<string, number>();
        for (const i of instances) counts.set(i.state, (counts.get(i.state) ?? 0) + 1);
        const summary = [...counts].map(([state, n]) => `${n} ${state}`).join(', ');
        out.write(`\r\x1b[2Kwaiting for ${instances.length} instance${instances.length === 1 ? '' : 's'}: ${summary} (${Math.round(elapsedMs / 1000)} s)`);
        drawn = true;
        return;
      }
      for (const i of instances) {
        const before = seen.get(i.id);
        if (before === i.state) continue;
        seen.set(i.id, i.state);
        out.write(`${i.id}: ${before ? `${before} -> ` : ''}${i.state}${i.privateIp ? ` ${i.privateIp}` : ''}\n`);
      }
    },
    done(): void {
      if (drawn) out.write('\n');
      drawn = false;
    },
  };
}
