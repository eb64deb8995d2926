/**
 * Predicted sensitivity: the model's output error at every candidate rank of a layer from
 * the layer's own output error there and one or two ORT runs of the model, instead of a
 * run per rank.
 *
 * The layer's own error. A layer h = f(x) compressed at ranks r gives ĥ; its relative
 * output error on the inputs is ε²(r) = Σ‖ĥ − h‖² / Σ‖h‖².
 * - SVD pair, data-aware: with the input Gram matrix G = XᵀX = L·Lᵀ and the whitened
 *   weight A = Lᵀ·W, ‖X·(W − W_r)‖² = ‖A − A_r‖² = Σ_{i>r} σ_i(A)² at the optimum, so
 *   ε²(r) = Σ_{i>r} σ_i² / Σ_i σ_i², every rung from one SVD (svd-pair.ts `dataError`).
 *   But the fit whitens with a damped G (+3% of its mean diagonal, WHITEN_DAMP), and the
 *   damping's isotropic share of the tail does not fall with r as the data's does, so at
 *   high ranks that figure overstates the undamped error. Weight-only, the same tail of
 *   W's own spectrum is the weight error (`relError`), the output error only for white
 *   inputs.
 * - Tucker-2 and CP: each rank pair is its own fit (HOOI, ALS), no closed form over ranks;
 *   each fit reports its error on the patch statistics or the weight.
 * So ε² is measured instead (layer-error.ts): the layer alone, as the trial wrote it, run
 * on its input captured from the original, one small session per rung, exact on the same
 * inputs as the model's error and the same for every pass. The factorizations' figures
 * stand in when the layer cannot be cut out (layers inside subgraphs). With output weights
 * (optimize/output-sensitivity.ts) each output channel's error counts by its weight, as the
 * fit counts it (sensitivity.ts layerWeights): a weighted fit moves its error into the
 * channels the outputs barely read, which the plain ε² would count in full. On PP-OCRv4 rec
 * (every rung run, 8 seeded calibration inputs) the rungs between the cheapest and the
 * most accurate came within a median 1.14× of the measured (90% within 1.51×, worst 1.60×)
 * weighted, 1.15× (1.60×, 1.97×) unweighted; the cheapest rungs (rank 1, far past where
 * the model stays linear) came out higher, which only keeps them from being chosen.
 *
 * The model's error. Downstream, y = F(h); to first order Δy ≈ J·Δh, so
 *   err²(r) = Σ‖Δy‖²/Σ‖y‖² ≈ g · ε²(r),  g = (Δhᵀ·JᵀJ·Δh / ‖Δh‖²) · (Σ‖h‖² / Σ‖y‖²),
 * a Rayleigh quotient of JᵀJ over the directions the truncation discards, times a scale.
 * It is constant over ranks only when J amplifies the directions cut at each rank alike;
 * large errors also meet the non-linear parts (activations, softmax, normalisation). On
 * PP-OCRv4 rec (every rung of its 28 budgeted layers run, 2 seeded random inputs), g at
 * the cheapest rung and at the middle one differed by a median 2.2× (up to 14×)
 * data-aware, and the model's error mostly fell faster than the layer's toward the
 * accurate rungs. So two rungs are run, the middle and the most accurate one (one when a
 * layer has two; see firstRungs): between them the prediction follows the power law
 * through both (a straight line in log ε² – log err²), past them the nearest rung's g
 * (slope one). There the predicted rungs came within a median 1.38× of the measured
 * (90% within 2.35×) data-aware, 1.56× (4.05×) weight-only; g from one rung alone gave
 * 1.6× (4.3×). The allocation is checked by running the final model in ORT as before
 * (budget-run.ts), which redoes an error budget's allocation when the sum does not hold.
 *
 * Uncertainty. A layer whose measured gains differ by more than GAIN_SPREAD, or that has
 * no measured rung to anchor on (a run failed) or a rung whose layer error is unknown, is
 * run at more rungs until that no longer holds (at worst at all of them).
 */

/** A candidate rung as the prediction sees it. */
export interface Rung {
  /** The layer's own squared relative output error ε². */
  layerErr2: number;
  /** The model's measured error (outErr2) when the rung was run in ORT. */
  measuredErr2?: number;
}

/** Measured gains further apart than this factor make another of the layer's rungs run (and so on). */
export const GAIN_SPREAD = 10;

/** The measured rungs the prediction can use: finite, with a known, positive layer error. */
function anchors(rungs: readonly Rung[]): { x: number; y: number }[] {
  return rungs
    .filter((r) => r.measuredErr2 !== undefined && Number.isFinite(r.measuredErr2) && r.layerErr2 > 0 && Number.isFinite(r.layerErr2))
    .map((r) => ({ x: r.layerErr2, y: r.measuredErr2! }))
    .sort((a, b) => a.x - b.x);
}

/**
 * The model's predicted err² at a layer error ε² from the measured rungs: NaN when no
 * measured rung is usable, 0 for a lossless rung. Between two measured rungs, the power
 * law through both; outside them, the nearest rung's gain.
 */
export function predictErr2(rungs: readonly Rung[], layerErr2: number): number {
  if (!(layerErr2 >= 0) || !Number.isFinite(layerErr2)) return NaN;
  const pts = anchors(rungs);
  if (pts.length === 0) return NaN;
  if (layerErr2 === 0) return 0;
  const first = pts[0]!;
  const last = pts[pts.length - 1]!;
  if (layerErr2 <= first.x) return first.y * (layerErr2 / first.x);
  if (layerErr2 >= last.x) return last.y * (layerErr2 / last.x);
  for (let k = 1; k < pts.length; k++) {
    const a = pts[k - 1]!;
    const b = pts[k]!;
    if (layerErr2 > b.x) continue;
    // A measured zero (the layer does not reach the judged outputs there) has no logarithm.
    if (a.y === 0 || b.y === 0) return a.y === 0 && b.y === 0 ? 0 : a.y + ((b.y - a.y) * (layerErr2 - a.x)) / (b.x - a.x);
    const t = Math.log(layerErr2 / a.x) / Math.log(b.x / a.x);
    return a.y * Math.pow(b.y / a.y, t);
  }
  return last.y * (layerErr2 / last.x);
}

/** The largest over the smallest measured gain err²/ε² (1 with fewer than two rungs; Infinity when one gain is 0 and another is not). */
export function gainSpread(rungs: readonly Rung[]): number {
  const gains = anchors(rungs).map((p) => p.y / p.x);
  if (gains.length < 2) return 1;
  const lo = Math.min(...gains);
  const hi = Math.max(...gains);
  if (hi === 0) return 1;
  return lo === 0 ? Infinity : hi / lo;
}

/**
 * Which rungs to measure first, of n ordered from the cheapest (largest error) to the most
 * accurate: the most accurate one and the middle one (only the most accurate of two).
 * Tight error budgets choose among the accurate rungs, where an error predicted low would
 * be chosen and then fail the final check; the cheap rungs, predicted from the middle
 * rung's gain, mostly err high (the model's error saturates there).
 */
export function firstRungs(n: number): number[] {
  if (n <= 0) return [];
  return n <= 2 ? [n - 1] : [Math.floor((n - 1) / 2), n - 1];
}

/**
 * Whether another of the layer's rungs must be measured: no measured rung can anchor a
 * prediction, a rung's layer error is unknown, or the measured gains disagree.
 */
export function needsMoreRungs(rungs: readonly Rung[]): boolean {
  if (rungs.some((r) => !Number.isFinite(r.layerErr2) || r.layerErr2 < 0)) return true;
  if (anchors(rungs).length === 0) return true;
  return gainSpread(rungs) > GAIN_SPREAD;
}
