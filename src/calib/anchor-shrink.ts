/**
 * Shrinking anchored statistics toward the original model's: the paired sums of a layer
 * (Σ x̂·x̂ᵀ, Σ x̂·xᵀ, E[x̂], and the patch versions) are replaced by those of the mixture
 * that is x̂ with probability α and x with probability 1 − α:
 *   Σ x̃·x̃ᵀ = α·Σ x̂·x̂ᵀ + (1 − α)·Σ x·xᵀ,  Σ x̃·xᵀ = α·Σ x̂·xᵀ + (1 − α)·Σ x·xᵀ,
 *   E[x̃] = α·E[x̂] + (1 − α)·E[x],
 * so an anchored fit on them minimises α·E‖W·x − Ŵ·x̂‖² + (1 − α)·E‖W·x − Ŵ·x‖²: α = 1 is
 * the anchored fit, α = 0 the fit to the original's inputs alone (the asymmetric/symmetric
 * mix of GPTAQ, Li et al. 2025). The compensation term Σ x̂·xᵀ − Σ x·xᵀ is a regression
 * of x on x̂; estimated from few rows per dimension it fits the calibration set's noise
 * (see anchoredShrinkage for how α follows from the rows).
 */
import type { AnchorStats, LayerInputStats } from '../rewrite/pass.js';

/**
 * Rows per dimension at which the anchored fit gets half the weight: α = n / (n + κ·D)
 * for n rows (or patches) of dimension D. See ANCHOR_ROWS_PER_DIM's measurements.
 */
export const ANCHOR_ROWS_PER_DIM = 8;

/** α = n / (n + κ·D): near 1 with many rows per dimension, near 0 with few. */
export function anchoredShrinkage(rows: number, dim: number, kappa = ANCHOR_ROWS_PER_DIM): number {
  if (!(rows > 0) || !(dim > 0)) return 0;
  if (kappa <= 0) return 1;
  return rows / (rows + kappa * dim);
}

/** α·a + (1 − α)·b elementwise (a new array, or `a` overwritten with `inPlace`; `a` itself when α = 1). */
export function mix(a: Float64Array, b: Float64Array, alpha: number, inPlace = false): Float64Array {
  if (a.length !== b.length) throw new Error(`mix: lengths ${a.length} and ${b.length} differ`);
  if (alpha === 1) return a;
  const out = inPlace ? a : new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = alpha * a[i]! + (1 - alpha) * b[i]!;
  return out;
}

/** Shrinkage weights of one layer's statistics: α for the vectors (channels) and for the patches. */
export interface Shrinkage { alpha: number; patchAlpha: number }

/** The weights α = n / (n + κ·D) of a layer's statistics (vector rows and patch rows). */
export function shrinkageOf(st: LayerInputStats, kappa = ANCHOR_ROWS_PER_DIM): Shrinkage {
  return {
    alpha: anchoredShrinkage(st.count, st.dim, kappa),
    patchAlpha: st.patchDim ? anchoredShrinkage(st.patchCount ?? 0, st.patchDim, kappa) : 1,
  };
}

/**
 * A copy of `st` whose anchor holds the mixture's sums (see the header); the original's
 * own fields are shared, read-only. Without an anchor, `st` itself. With `inPlace` the
 * anchor's arrays are overwritten instead of copied: for sums the caller owns and reads no
 * more (a wave's fresh statistics; at 512 channels 3x3 each patch sum is 170 MB, and
 * fresh memory costs more to touch than the mixing).
 */
export function shrinkAnchor(st: LayerInputStats, s: Shrinkage, inPlace = false): LayerInputStats {
  const an = st.anchor;
  // x̂ = x (nothing compressed upstream: the anchor shares the original's arrays): nothing to mix.
  if (!an || an.gram === st.gram || (s.alpha === 1 && s.patchAlpha === 1)) return st;
  // Arrays of the anchor that alias each other would be mixed twice: copies then.
  const arrays = [an.gram, an.cross, an.mean, an.patchGram, an.patchCross, an.patchMean].filter((a) => a !== undefined);
  inPlace &&= new Set(arrays).size === arrays.length;
  const mean = st.mean ?? new Float64Array(an.mean.length);
  const anchor: AnchorStats = { gram: mix(an.gram, st.gram, s.alpha, inPlace), cross: mix(an.cross, st.gram, s.alpha, inPlace), mean: mix(an.mean, mean, s.alpha, inPlace) };
  if (an.patchGram && an.patchCross && an.patchMean && st.patchGram && st.patchMean) {
    anchor.patchGram = mix(an.patchGram, st.patchGram, s.patchAlpha, inPlace);
    anchor.patchCross = mix(an.patchCross, st.patchGram, s.patchAlpha, inPlace);
    anchor.patchMean = mix(an.patchMean, st.patchMean, s.patchAlpha, inPlace);
  }
  return { ...st, anchor };
}
