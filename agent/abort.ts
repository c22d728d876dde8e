// Waiting that ends promptly on SIGTERM: every wait in the agent goes through these, so an
// interrupted boot stops within milliseconds and run.ts can record "interrupted".
export class Interrupted extends Error {
  constructor() {
    super('interrupted');
    this.name = 'Interrupted';
  }
}

/** Resolves after `ms`, or rejects with Interrupted as soon as the signal aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal.aborted) return reject(new Interrupted());
    const onAbort = () => {
      clearTimeout(timer);
      reject(new Interrupted());
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** The promise's outcome, unless the signal aborts first (the promise is then left to settle unobserved). */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.reject(new Interrupted());
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new Interrupted());
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/**
 * Milliseconds on a clock that never steps, for deadlines and schedules. The wall clock (Date.now) jumps
 * when NTP corrects it, which at boot is common: a step back an hour would freeze a schedule kept in wall
 * time, and a step forward would end a wait early. Wall time is only for what people read (status times).
 */
export function monotonicMs(): number {
  return performance.now();
}
