/**
 * Index statistics of an embedding Gather: how often the calibration inputs look up each
 * row of its table E [V, D], and the row weights a data-aware factorization uses.
 *
 * For Y = Gather(E, idx) the layer's "input" is a one-hot row selector, whose Gram matrix
 * is diag(counts): minimising the output error over the calibration lookups is minimising
 * Σᵢ cᵢ‖eᵢ − êᵢ‖², a row-weighted low-rank fit (passes/gather-svd.ts, with the weights of
 * src/linalg/row-weights.ts, which floors the rows the data never looks up).
 */

/** Adds the lookups in `indices` (any int shape, negative = from the end, as Gather reads them) to `counts` [V]; returns how many were out of range. */
export function accumulateIndexCounts(counts: Float64Array, indices: ArrayLike<number | bigint>): number {
  const v = counts.length;
  let bad = 0;
  for (let k = 0; k < indices.length; k++) {
    let i = Number(indices[k]);
    if (i < 0) i += v;
    if (!Number.isInteger(i) || i < 0 || i >= v) { bad++; continue; }
    counts[i]! += 1;
  }
  return bad;
}

export { ROW_WEIGHT_FLOOR, rowScales } from '../linalg/row-weights.js';
