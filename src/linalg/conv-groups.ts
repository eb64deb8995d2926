/**
 * Pure numerics of a grouped conv factorized group by group (the split passes on grouped
 * convs): the groups' chain weights stacked along their output channels, and the layer's
 * errors from the groups'. Weight error: Σ‖ΔW_j‖² over Σ‖W_j‖²; data error: the groups'
 * output-error energies over their output energies (each group's output channels are its
 * own, so the layer's output error is the sum of the groups').
 */
import { anchoredError, meanEnergy, type AnchoredPatch } from './anchored.js';
import type { Matrix } from './matrix.js';

/** Factors of the same shape per group, one after another (a [g·n, …] weight from g [n, …] ones). */
export function stackGroups(parts: readonly ArrayLike<number>[]): Float32Array {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Float32Array(n);
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

/** One group's fit as the combination reads it. */
export interface GroupError {
  relError: number;
  /** ‖W_j‖²_F. */
  energy: number;
  dataError?: number;
  /** Output energy of W_j on the statistics (the data error's denominator). */
  dataDen?: number;
}

/** The layer's weight and data errors from its groups' (data: only when every group has one). */
export function combineGroupErrors(parts: readonly GroupError[]): { relError: number; dataError?: number } {
  let num = 0, den = 0, dNum = 0, dDen = 0;
  let data = true;
  for (const p of parts) {
    num += p.relError * p.relError * p.energy;
    den += p.energy;
    if (p.dataError === undefined || p.dataDen === undefined) data = false;
    else { dNum += p.dataError * p.dataError * p.dataDen; dDen += p.dataDen; }
  }
  return { relError: den > 0 ? Math.sqrt(num / den) : 0, dataError: data ? (dDen > 0 ? Math.sqrt(dNum / dDen) : 0) : undefined };
}

export const energyOf = (w: ArrayLike<number>): number => {
  let e = 0;
  for (let i = 0; i < w.length; i++) e += w[i]! * w[i]!;
  return e;
};

/**
 * A group's output energy on its statistics, the denominator its data error was measured
 * against (up to the patch count, common to the groups): tr(W·G·Wᵀ) on the patch second
 * moment G = Σ p·pᵀ (= the centred quadratic plus the mean's energy); anchored, the
 * original outputs' energy as anchoredError and meanEnergy count it.
 */
export function outputEnergy(w: Matrix, stats: { anchor?: AnchoredPatch; gram?: ArrayLike<number> }): number | undefined {
  if (stats.anchor) return anchoredError(w, w, stats.anchor).den + meanEnergy(w, stats.anchor.mean);
  const g = stats.gram;
  if (!g) return undefined;
  const D = w.cols;
  let e = 0;
  for (let r = 0; r < w.rows; r++) {
    const row = w.data.subarray(r * D, (r + 1) * D);
    for (let i = 0; i < D; i++) {
      let s = 0;
      for (let k = 0; k < D; k++) s += g[i * D + k]! * row[k]!;
      e += row[i]! * s;
    }
  }
  return e;
}

/** Group j's slice of a weight stored group after group ([T, S/g, k…]: group j owns output channels j·T/g…). */
export function groupSlice(w: Float32Array, groups: number, j: number): Float32Array {
  const per = w.length / groups;
  return w.subarray(j * per, (j + 1) * per);
}
