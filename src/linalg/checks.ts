/** Argument checks shared by the decompositions (clear LrErrors instead of NaN). */
import { LrError } from '../errors.js';

/**
 * Validates a requested rank: must be a positive integer (LrError 'rank' otherwise).
 * Ranks above `max` are clamped to `max` — a rank-min(m, n) factorisation is exact,
 * so asking for more is not an error, just pointless.
 */
export function checkRank(rank: number, max: number, what: string): number {
  if (!Number.isInteger(rank) || rank < 1) {
    throw new LrError('rank', `${what}: rank must be a positive integer, got ${rank}`);
  }
  return Math.min(rank, max);
}
