// Throttling is normal at scale (Route53 allows five requests per second per account), so every AWS
// call goes through one policy: exponential backoff with full jitter ("Error retries and exponential
// backoff in AWS") for throttling and for transient failures (5xx, dropped connections). Every call
// retried here is safe to repeat: reads, UPSERTs, and creates that carry a client token. The SDK's
// own retries are turned off (maxAttempts: 1) so this is the only policy and every retry is logged.

// The SDK's throttling codes (@smithy/service-error-classification), plus Route53's per-zone
// "still processing a prior request".
const THROTTLING = new Set([
  'Throttling',
  'ThrottlingException',
  'ThrottledException',
  'RequestThrottled',
  'RequestThrottledException',
  'RequestLimitExceeded',
  'EC2ThrottledException',
  'TooManyRequestsException',
  'SlowDown',
  'BandwidthLimitExceeded',
  'LimitExceededException',
  'ProvisionedThroughputExceededException',
  'TransactionInProgressException',
  'PriorRequestNotComplete',
]);

export function isThrottling(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { Code?: string }).Code ?? err.name;
  const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  return THROTTLING.has(code) || status === 429;
}

const TRANSIENT_NETWORK = new Set(['ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'TimeoutError', 'RequestTimeout', 'RequestTimeoutException']);

/** Worth asking again: throttled, the service failed (5xx), or the connection dropped. */
export function isRetryable(err: unknown): boolean {
  if (isThrottling(err)) return true;
  if (!(err instanceof Error)) return false;
  const e = err as { $fault?: string; $metadata?: { httpStatusCode?: number }; code?: string };
  return e.$fault === 'server' || (e.$metadata?.httpStatusCode ?? 0) >= 500 || TRANSIENT_NETWORK.has(e.code ?? err.name);
}

export interface RetryPolicy {
  attempts: number;
  baseMs: number;
  capMs: number;
  sleep: (ms: number) => Promise<void>;
  random: () => number;
  log: (line: string) => void;
}

export const DEFAULT_RETRY: RetryPolicy = {
  attempts: 8,
  baseMs: 200,
  capMs: 20_000,
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  random: Math.random,
  log: (line) => console.log(line),
};

export async function withRetry<T>(what: string, call: () => Promise<T>, policy: RetryPolicy = DEFAULT_RETRY): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      if (!isRetryable(err) || attempt >= policy.attempts) throw err;
      const ms = Math.round(policy.random() * Math.min(policy.capMs, policy.baseMs * 2 ** (attempt - 1)));
      policy.log(`${isThrottling(err) ? 'throttled' : 'failed'}: ${what} (${(err as Error).name}), retry ${attempt}/${policy.attempts - 1} in ${ms} ms`);
      await policy.sleep(ms);
    }
  }
}
