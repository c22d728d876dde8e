// The one error type for bad input anywhere in kubeseed: it names where the problem is, so
// `agent check`, `agent status` and the operator scripts can print "file:line: what" and nothing else.
export interface Where {
  file?: string;
  line?: number;
  value?: string;
}

export class InputError extends Error {
  readonly file: string | undefined;
  readonly line: number | undefined;
  readonly value: string | undefined;

  constructor(message: string, where: Where = {}) {
    super(message);
    this.name = 'InputError';
    this.file = where.file;
    this.line = where.line;
    this.value = where.value;
  }

  /** `file:line: message`, the form editors and people both understand. */
  describe(): string {
    const at = this.file ? `${this.file}${this.line ? `:${this.line}` : ''}: ` : '';
    return `${at}${this.message}`;
  }
}

export function describeError(err: unknown): string {
  if (err instanceof InputError) return err.describe();
  if (err instanceof Error) return err.message;
  return String(err);
}
