/** Checks of typed option values, with the messages the command line gives for the same option. */
import { LrError } from '../errors.js';

export interface NumberRange { min?: number; max?: number; integer?: boolean }

/** `v` within [min, max] (an integer if asked), else a usage error naming --`name`. */
export function checkNumber(name: string, v: number | undefined, r: NumberRange = {}): number | undefined {
  if (v === undefined) return undefined;
  const bad = typeof v !== 'number' || !Number.isFinite(v) || (r.integer && !Number.isInteger(v))
    || (r.min !== undefined && v < r.min) || (r.max !== undefined && v > r.max);
  if (bad) {
    const range = r.min !== undefined || r.max !== undefined ? ` in [${r.min ?? '-inf'}, ${r.max ?? 'inf'}]` : '';
    throw new LrError('usage', `--${name} expects ${r.integer ? 'an integer' : 'a number'}${range}, got "${String(v)}"`);
  }
  return v;
}

/** The names of the options in `given` that are set, as --flags, for "choose one of" messages. */
export function givenFlags(given: Record<string, unknown>): string[] {
  return Object.entries(given).filter(([, v]) => v !== undefined && v !== false).map(([k]) => `--${k}`);
}
