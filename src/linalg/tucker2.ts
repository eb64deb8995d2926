/**
 * Tucker-2 of a conv kernel W [T, S, kh, kw] on its two channel modes (Kim et al. 2015):
 *
 *   W ≈ G ×₁ U_T ×₂ U_S,   i.e.  W[t,s,i,j] ≈ Σ_{a,b} U_T[t,a] · U_S[s,b] · G[a,b,i,j]
 *
 * with U_T [T, R2] and U_S [S, R1] orthonormal columns and core G [R2, R1, kh, kw].
 * (R1 is the input-channel rank, R2 the output-channel rank, as in the design notes.)
 * Initialised by HOSVD (leading left singular vectors of the two unfoldings) and
 * refined by HOOI (alternating projections), which monotonically increases ‖G‖.
 */
import { LrError } from '../errors.js';
import { checkRank } from './checks.js';
import { mm, runAsync, runSync, type GemmEngine, type GemmProgram, type SyncGemm } from './engine.js';
import { asFloat64, assertFinite, sliceCols, type Matrix } from './matrix.js';
import { truncatedSvdProgram, type TruncatedSvdOptions } from './rsvd.js';
import { leftVectorsByGram } from './svd.js';
import { checkTensor, swapLeadingAxes, tensorNorm, type Tensor } from './tensor.js';

export interface Tucker2Options {
  /** HOOI sweeps after the HOSVD initialisation (default 10; 0 = plain HOSVD). */
  maxIter?: number;
  /**
   * Stop when a sweep improves the relative error by at most this fraction of itself
   * (default 1e-3: past that, sweeps change the fit by under 0.1% yet cost as much as the
   * first; a 512×512×3×3 kernel at rank 300 gained 0.1% in sweeps 3–10).
   */
  tol?: number;
  /** Options for the truncated SVDs of the unfoldings (seed, power iterations, method). */
  svd?: TruncatedSvdOptions;
  onIter?: (info: { iteration: number; relError: number }) => void;
}

export interface Tucker2Result {
  /** Core G [R2, R1, kh, kw] (Float64). */
  core: Tensor;
  /** U_S [S, R1]: input-channel factor (first 1x1 conv uses U_Sᵀ). */
  uS: Matrix;
  /** U_T [T, R2]: output-channel factor (last 1x1 conv uses U_T). */
  uT: Matrix;
  /** The ranks actually used [R1, R2] (after clamping). */
  ranks: [number, number];
  /** ‖W − G ×₁ U_T ×₂ U_S‖_F / ‖W‖_F (0 for a zero kernel). */
  relError: number;
  iterations: number;
}

/**
 * Tucker-2 as a gemm program. `ranks = [R1, R2]` (input, output channel ranks):
 * positive integers (LrError 'rank' otherwise), clamped to R1 ≤ min(S, R2·kh·kw) and
 * R2 ≤ min(T, R1·kh·kw) — larger ranks cannot lower the error.
 */
export function* tucker2Program(kernel: Tensor, ranks: [number, number], opts: Tucker2Options = {}): GemmProgram<Tucker2Result> {
  checkTensor(kernel, 'tucker2');
  if (kernel.shape.length < 2) throw new LrError('numeric', `tucker2: kernel must be [T, S, ...], got [${kernel.shape.join(', ')}]`);
  assertFinite(kernel.data, 'tucker2 kernel');
  const [T, S] = kernel.shape as [number, number];
  const k = kernel.data.length / (T * S); // kh·kw (1 for a 1x1 conv or a matrix)
  let r1 = checkRank(ranks[0], S, 'tucker2 R1');
  let r2 = checkRank(ranks[1], T, 'tucker2 R2');
  r1 = Math.min(r1, r2 * k);
  r2 = Math.min(r2, r1 * k);
  const svdOpts = opts.svd ?? {};
  const maxIter = opts.maxIter ?? 10;
  const tol = opts.tol ?? 1e-3;

  const xT: Matrix = { rows: T, cols: S * k, data: Float64Array.from(kernel.data) }; // [T, S·k]
  const xS: Matrix = { rows: S, cols: T * k, data: swapLeadingAxes(xT.data, T, S, k) }; // [S, T·k]
  const wNorm = tensorNorm(xT.data);

  // Each HOOI update warm-starts the sketch from the previous factor (subspace
  // iteration carried across sweeps), so randomized SVDs converge with HOOI.
  // A warm-started sketch is already close, so one power iteration suffices there
  // (unless the caller chose powerIters).
  const lead = function* (x: Matrix, r: number, start?: Matrix | null): GemmProgram<Matrix> {
    // Where the exact path would run, only U is needed: the SVD of the small Gram X·Xᵀ
    // gives it (σ² as values) at a fraction of the cost of the wide X's full SVD (a
    // 512×2700 unfolding at rank 300: 1 s instead of 5 s in JS).
    if (!svdOpts.method && x.rows <= x.cols && x.rows <= 2 * Math.min(r + 10, x.rows)) {
      return sliceCols(yield* leftVectorsByGram(x), 0, Math.min(r, x.rows));
    }
    const o = start ? { powerIters: 1, ...svdOpts, start } : svdOpts;
    return (yield* truncatedSvdProgram(x, r, o)).u;
  };
  // HOSVD initialisation. HOOI recomputes U_T first, so U_T's HOSVD is only needed
  // when there are no HOOI sweeps.
  let uS = yield* lead(xS, r1);
  let uT: Matrix | null = maxIter > 0 && wNorm > 0 ? null : yield* lead(xT, r2);
  let prevErr = Infinity;
  let relError = Infinity;
  let iterations = 0;
  for (let it = 1; it <= maxIter && wNorm > 0; it++) {
    // U_T ← leading vectors of (W ×₂ U_Sᵀ) unfolded on T: [T, R1·k].
    const ys = asFloat64(yield* mm(uS, xS, { transA: true })); // [R1, T·k]
    uT = yield* lead({ rows: T, cols: r1 * k, data: swapLeadingAxes(ys.data, r1, T, k) }, r2, uT);
    // U_S ← leading vectors of (W ×₁ U_Tᵀ) unfolded on S: [S, R2·k].
    const yt = asFloat64(yield* mm(uT, xT, { transA: true })); // [R2, S·k]
    uS = yield* lead({ rows: S, cols: r2 * k, data: swapLeadingAxes(yt.data, r2, S, k) }, r1, uS);
    prevErr = relError;
    relError = relErrFromCore(wNorm, yield* coreOf(xT, uT, uS, T, S, k));
    iterations = it;
    opts.onIter?.({ iteration: it, relError });
    if (prevErr - relError <= tol * relError) break;
  }
  if (!uT) throw new LrError('numeric', 'tucker2: internal error, no HOOI sweep ran'); // unreachable: maxIter > 0 ran a sweep
  const core = yield* coreOf(xT, uT, uS, T, S, k);
  // Explicit residual: the ‖W‖² − ‖G‖² identity loses all digits when the fit is near exact.
  const recon = yield* reconstructTucker2(core, uT, uS);
  let d2 = 0;
  for (let i = 0; i < recon.length; i++) d2 += (recon[i]! - xT.data[i]!) ** 2;
  relError = wNorm > 0 ? Math.sqrt(d2) / wNorm : 0;
  return {
    core: { data: core, shape: [r2, r1, ...kernel.shape.slice(2)] },
    uS,
    uT,
    ranks: [r1, r2],
    relError,
    iterations,
  };
}

/** Tucker-2 with products on `opts.gemm` (default JS). */
export function tucker2Sync(kernel: Tensor, ranks: [number, number], opts: Tucker2Options & { gemm?: SyncGemm } = {}): Tucker2Result {
  return runSync(tucker2Program(kernel, ranks, opts), opts.gemm);
}

/** Tucker-2 with products on `opts.engine` (default JS). */
export function tucker2(
  kernel: Tensor, ranks: [number, number], opts: Tucker2Options & { engine?: GemmEngine } = {},
): Promise<Tucker2Result> {
  const p = tucker2Program(kernel, ranks, opts);
  return opts.engine ? runAsync(p, opts.engine) : Promise.resolve(runSync(p));
}

/** G = W ×₁ U_Tᵀ ×₂ U_Sᵀ as a flat [R2, R1, k] array. */
function* coreOf(xT: Matrix, uT: Matrix, uS: Matrix, _T: number, S: number, k: number): GemmProgram<Float64Array> {
  const r2 = uT.cols;
  const r1 = uS.cols;
  const yt = asFloat64(yield* mm(uT, xT, { transA: true })); // [R2, S, k]
  const ytS: Matrix = { rows: S, cols: r2 * k, data: swapLeadingAxes(yt.data, r2, S, k) }; // [S, R2, k]
  const g = asFloat64(yield* mm(uS, ytS, { transA: true })); // [R1, R2, k]
  return swapLeadingAxes(g.data, r1, r2, k); // [R2, R1, k]
}

/** W' = G ×₁ U_T ×₂ U_S as a flat [T, S, k] array (Float64). */
export function* reconstructTucker2(core: Float64Array, uT: Matrix, uS: Matrix): GemmProgram<Float64Array> {
  const T = uT.rows, r2 = uT.cols, S = uS.rows, r1 = uS.cols;
  const k = core.length / (r1 * r2);
  const a = asFloat64(yield* mm(uT, { rows: r2, cols: r1 * k, data: core })); // [T, R1, k]
  const aS: Matrix = { rows: r1, cols: T * k, data: swapLeadingAxes(a.data, T, r1, k) }; // [R1, T, k]
  const b = asFloat64(yield* mm(uS, aS)); // [S, T, k]
  return swapLeadingAxes(b.data, S, T, k);
}

function relErrFromCore(wNorm: number, core: Float64Array): number {
  if (wNorm === 0) return 0;
  const g = tensorNorm(core);
  return Math.sqrt(Math.max(0, wNorm * wNorm - g * g)) / wNorm;
}
