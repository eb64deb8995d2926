/** Argument checks shared by the decompositions (clear LrErrors instead of NaN). */
import { LrError } from '../errors.js';

/** Whether `r` can be a rank: a positive integer. */
export const isRank = (r: number): boolean => Number.isInteger(r) && r >= 1;

/** The skip message for a requested rank that is not one. */
export const notARank = (rank: number): string => `rank ${rank} is not a positive integer`;

/**
 * Validates a requested rank: must be a positive integer (LrError 'rank' otherwise).
 * Ranks above `max` are clamped to `max` — a rank-min(m, n) factorisation is exact,
 * so asking for more is not an error, just pointless.
 */
export function checkRank(rank: number, max: number, what: string): number {
  if (!isRank(rank)) {
    throw new LrError('rank', `${what}: rank must be a positive integer, got ${rank}`);
  }
  return Math.min(rank, max);
}
