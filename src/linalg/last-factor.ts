/**
 * The last 1x1 conv of a chain fitted on calibration statistics, the rest of the chain
 * fixed: H [r, D] maps an im2col patch to the chain's last inputs, and the original conv
 * is W [t, D]. Least squares on the patch moments (refit.ts: min E‖(W − B·H)·p‖²) or,
 * anchored (with the partly compressed model's patches p̂), B fitted so that B·H·p̂
 * reproduces the original W·p (anchored.ts). The mean error goes into the bias correction.
 */
import { anchoredError, fitThroughInputMap, meanEnergy, meanError, type AnchoredPatch } from './anchored.js';
import { product, type SyncGemm } from './engine.js';
import type { Matrix } from './matrix.js';
import { refitLastFactor } from './refit.js';

export interface LastFactorStats {
  /** Anchored patch moments and their damping: used before `patches`. */
  anchor?: { patch: AnchoredPatch; damp: number };
  /** Patch second moment [D·D] and mean [D]. */
  patches?: { gram: Float64Array; mean?: Float64Array };
}

export interface LastFactorFit {
  /** B [t, r]. */
  last: Float64Array;
  /** Relative output error on the statistics. */
  dataError: number;
  biasDelta?: Float64Array;
  anchored: boolean;
}

/** About how many flops fitLastFactor spends with H [r, D] (its products with the D×D patch moments dominate). */
export function lastFactorFlops(r: number, D: number): number {
  return 2 * r * D * (D + r);
}

/** The fitted last factor, or undefined without statistics. */
export function fitLastFactor(w: Matrix, h: Matrix, stats: LastFactorStats, gemm?: SyncGemm): LastFactorFit | undefined {
  if (stats.anchor) {
    const p = stats.anchor.patch;
    const b = fitThroughInputMap(w, h, p.gramHat, p.cross, stats.anchor.damp, gemm);
    const wHat = product(b, h, {}, gemm);
    const e = anchoredError(w, wHat, p, gemm);
    const den = e.den + meanEnergy(w, p.mean);
    return { last: Float64Array.from(b.data), dataError: den > 0 ? Math.sqrt(Math.max(e.num, 0) / den) : 0, biasDelta: meanError(w, wHat, p.mean, p.meanHat), anchored: true };
  }
  if (!stats.patches) return undefined;
  const rf = refitLastFactor(w, h, stats.patches.gram, stats.patches.mean, gemm);
  return { last: rf.b, dataError: rf.dataError, biasDelta: rf.biasDelta, anchored: false };
}
