/**
 * Output comparison metrics (pure). The *reference* is the original model's output,
 * the *candidate* the optimized model's.
 *
 * Elementwise rule, as in numpy.isclose and Polygraphy: an element passes when
 *   |candidate − reference| ≤ atol + rtol · |reference|.
 * relL2 = ‖candidate − reference‖₂ / ‖reference‖₂ (0 when both are zero, ∞ when only
 * the reference is). cosine = ⟨c, r⟩ / (‖c‖‖r‖) (1 when both are zero, 0 when one is).
 * A NaN in either output fails the comparison with a reason; an Inf matches only the
 * same Inf. Norms and the cosine are taken over finite pairs only.
 */

export interface Tolerances {
  atol: number;
  rtol: number;
  /** Fail when the cosine similarity is below this (unset: not checked). */
  minCosine?: number;
  /** Fail when the top-1 agreement of a [N, C] output is below this (unset: reported only). */
  minTop1?: number;
}

/** Polygraphy's defaults. Low-rank rewrites will usually be judged by minCosine instead. */
export const DEFAULT_TOLERANCES: Tolerances = { atol: 1e-5, rtol: 1e-5 };

export interface OutputStats {
  name: string;
  dims: number[];
  maxAbs: number;
  meanAbs: number;
  relL2: number;
  cosine: number;
  /** Fraction of rows whose argmax agrees; only for 2-D [N, C] outputs with C > 1. */
  top1?: number;
  /** Elements outside atol + rtol·|reference|. */
  mismatches: number;
  pass: boolean;
  reasons: string[];
  /** False when --outputs left this output out of the check (its figures are for information). */
  checked?: boolean;
  /**
   * With several feeds, the one this output agrees worst on (by cosine); the verdict stays on
   * all of them. `samples`: feeds holding batches were split into their samples (`of` of
   * them; VerifyOptions.learned), and `index` counts samples.
   */
  worstFeed?: { index: number; cosine: number; relL2: number; samples?: true; of?: number };
}

const fmt = (x: number) => (Number.isFinite(x) ? Number(x.toPrecision(3)).toString() : String(x));

export function compareOutput(
  name: string,
  reference: ArrayLike<number>,
  candidate: ArrayLike<number>,
  dims: readonly number[],
  tol: Tolerances,
): OutputStats {
  const reasons: string[] = [];
  const n = reference.length;
  if (candidate.length !== n) {
    return {
      name, dims: [...dims], maxAbs: NaN, meanAbs: NaN, relL2: NaN, cosine: NaN, mismatches: n, pass: false,
      reasons: [`output ${name}: ${candidate.length} elements, reference has ${n}`],
    };
  }
  let nanRef = 0, nanCand = 0, counted = 0, mismatches = 0, worst = -1;
  let maxAbs = 0, sumAbs = 0, diff2 = 0, ref2 = 0, cand2 = 0, dot = 0;
  for (let i = 0; i < n; i++) {
    const r = reference[i]!;
    const c = candidate[i]!;
    if (Number.isNaN(r) || Number.isNaN(c)) {
      if (Number.isNaN(r)) nanRef++;
      if (Number.isNaN(c)) nanCand++;
      continue;
    }
    const d = r === c ? 0 : Math.abs(c - r); // r === c also covers equal infinities
    // d = ∞ needs its own test: with an infinite reference the allowance is ∞ too.
    if (d > tol.atol + tol.rtol * Math.abs(r) || d === Infinity) {
      mismatches++;
      if (worst < 0 || d > maxAbs) worst = i;
    }
    if (d > maxAbs) maxAbs = d;
    counted++;
    sumAbs += d;
    if (Number.isFinite(r) && Number.isFinite(c)) {
      diff2 += d * d; ref2 += r * r; cand2 += c * c; dot += r * c;
    }
  }
  const meanAbs = counted ? sumAbs / counted : 0;
  const relL2 = ref2 > 0 ? Math.sqrt(diff2) / Math.sqrt(ref2) : diff2 === 0 ? 0 : Infinity;
  const cosine = ref2 === 0 && cand2 === 0 ? 1 : ref2 === 0 || cand2 === 0 ? 0 : dot / Math.sqrt(ref2 * cand2);

  if (nanRef) reasons.push(`output ${name}: ${nanRef} NaN in the original model's output`);
  if (nanCand) reasons.push(`output ${name}: ${nanCand} NaN in the optimized model's output`);
  if (mismatches) {
    reasons.push(
      `output ${name}: ${mismatches} of ${n} elements exceed atol ${tol.atol} + rtol ${tol.rtol}·|ref| ` +
      `(max |diff| ${fmt(maxAbs)} at index ${worst}: ref ${fmt(reference[worst]!)}, got ${fmt(candidate[worst]!)})`,
    );
  }
  if (tol.minCosine !== undefined && !(cosine >= tol.minCosine)) {
    reasons.push(`output ${name}: cosine ${fmt(cosine)} < ${tol.minCosine}`);
  }
  const top1 = dims.length === 2 && dims[1]! > 1 ? top1Agreement(reference, candidate, dims[0]!, dims[1]!) : undefined;
  if (top1 !== undefined && tol.minTop1 !== undefined && top1 < tol.minTop1) {
    reasons.push(`output ${name}: top-1 agreement ${fmt(top1)} < ${tol.minTop1}`);
  }
  const stats: OutputStats = { name, dims: [...dims], maxAbs, meanAbs, relL2, cosine, mismatches, pass: reasons.length === 0, reasons };
  if (top1 !== undefined) stats.top1 = top1;
  return stats;
}

/** Fraction of the `rows` rows of a row-major [rows, cols] pair whose argmax index agrees. */
export function top1Agreement(a: ArrayLike<number>, b: ArrayLike<number>, rows: number, cols: number): number {
  if (rows === 0) return 1;
  let agree = 0;
  for (let r = 0; r < rows; r++) {
    if (argmax(a, r * cols, cols) === argmax(b, r * cols, cols)) agree++;
  }
  return agree / rows;
}

function argmax(x: ArrayLike<number>, off: number, len: number): number {
  let best = 0;
  for (let j = 1; j < len; j++) if (x[off + j]! > x[off + best]!) best = j;
  return best;
}
