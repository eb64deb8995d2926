/** A declined match or rank choice, with the reason that reaches the per-layer report. */
export interface Skip { skip: string }
export const skip = (reason: string): Skip => ({ skip: reason });
export const isSkip = (x: unknown): x is Skip => typeof x === 'object' && x !== null && 'skip' in x;
