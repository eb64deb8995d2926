/**
 * Expected failures travel as values (Result), not exceptions; only broken invariants throw.
 * The CLI turns an LrError into one line on stderr and an exit code.
 */
export type LrErrorKind = 'parse' | 'unsupported' | 'rank' | 'verify-mismatch' | 'io' | 'usage' | 'numeric';

export class LrError extends Error {
  constructor(readonly kind: LrErrorKind, message: string) {
    super(message);
    this.name = 'LrError';
  }

  /** The kind under the name Node's own errors use (`e.code`), for library callers. */
  get code(): LrErrorKind {
    return this.kind;
  }
}

export type Result<T, E = LrError> = { ok: true; value: T } | { ok: false; error: E };

export const ok = <T>(value: T): Result<T, never> => ({ ok: true, value });
export const err = (kind: LrErrorKind, message: string): Result<never> => ({ ok: false, error: new LrError(kind, message) });

/** Unwraps a Result, throwing its LrError (for code paths that convert to exceptions at a boundary). */
export function unwrap<T>(r: Result<T>): T {
  if (!r.ok) throw r.error;
  return r.value;
}
