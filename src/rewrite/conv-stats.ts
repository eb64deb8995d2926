/**
 * Calibration statistics of a Conv as the conv passes use them (conv-tucker2, conv-cp):
 * per-group input-channel Gram blocks, per-group im2col patch Gram blocks and means, and
 * a Kronecker-structured whitening of the patch space for decompositions whose factors
 * act on the channel mode and the kernel mode separately (CP), or on the channel mode and
 * each kernel axis separately (TT, 4-way CP: perModeWhitening).
 *
 * Patch layout (calib/stats.ts): index c·K + k (input channel c, kernel offset k), so a
 * group's conv is y = W [t, s·K] · p and its output error is tr(ΔW·Σ·ΔWᵀ), Σ = E[p·pᵀ].
 */
import { centered, type AnchoredPatch } from '../linalg/anchored.js';
import type { PatchMoments } from '../linalg/refit.js';
import { choleskyWithRidge } from '../linalg/cholesky.js';
import type { Matrix } from '../linalg/matrix.js';
import { modeGrams, unitDiagonalMean } from '../linalg/mode-whitening.js';
import type { ConvGeometry } from './conv-geometry.js';
import type { PassContext } from './pass.js';
import { ANCHOR_DAMP, damped, WHITEN_DAMP, whiteningFor, type Whitening } from './svd-pair.js';

/** Whitening needs a covariance estimated from at least this many rows per dimension (below it, in-sample errors flatter). */
export const MIN_ROWS_PER_DIM = 2;

export type { AnchoredPatch };

/** Per-group patch Gram blocks [g][D·D] and means [g][D], D = (S/g)·K. */
export type PatchBlocks = PatchMoments;

/** Patch statistics of a conv, per group, when they were collected and fit. */
export function patchBlocks(cx: PassContext, name: string, geo: ConvGeometry): PatchBlocks | undefined {
  const st = cx.stats?.get(name);
  const D = (geo.S / geo.group) * geo.kernelSize;
  if (!st?.patchGram || st.patchDim !== D || st.patchGram.length !== geo.group * D * D) return undefined;
  const pm = st.patchMean;
  return {
    gram: Array.from({ length: geo.group }, (_, j) => st.patchGram!.subarray(j * D * D, (j + 1) * D * D)),
    mean: pm && pm.length === geo.group * D ? Array.from({ length: geo.group }, (_, j) => pm.subarray(j * D, (j + 1) * D)) : undefined,
  };
}

/** The input-channel Gram blocks [g][s·s] of a conv's calibration statistics, when they fit. */
export function channelBlocks(cx: PassContext, name: string, geo: ConvGeometry): Float64Array[] | undefined {
  const st = cx.stats?.get(name);
  const s = geo.S / geo.group;
  if (!st || st.kind !== 'conv' || st.dim !== s || (st.groups ?? 1) !== geo.group || st.gram.length !== geo.group * s * s || st.count === 0) return undefined;
  return Array.from({ length: geo.group }, (_, j) => st.gram.subarray(j * s * s, (j + 1) * s * s));
}

/**
 * Σ ≈ Σ_S ⊗ Σ_K for a patch Gram Σ [s·K, s·K] by partial traces:
 * Σ_S[c, c'] = Σ_k Σ[cK+k, c'K+k] and Σ_K[k, k'] = Σ_c Σ[cK+k, cK+k']. When Σ is a
 * Kronecker product these are its factors up to scale (tr Σ_K and tr Σ_S), and both are
 * positive semidefinite whenever Σ is. Each is scaled to mean diagonal 1 (scale-free).
 */
export function kroneckerFactors(gram: ArrayLike<number>, s: number, K: number): { gs: Float64Array; gk: Float64Array } {
  const D = s * K;
  if (gram.length !== D * D) throw new Error(`kroneckerFactors: Gram has ${gram.length} entries, expected ${D}x${D}`);
  const [gs, gk] = modeGrams(gram, [s, K]) as [Float64Array, Float64Array];
  return { gs, gk };
}

/**
 * Lower Cholesky factors of a Kronecker whitening Σ_S ⊗ Σ_K = (L_S·L_Sᵀ) ⊗ (L_K·L_Kᵀ):
 * then tr(ΔW·(Σ_S ⊗ Σ_K)·ΔWᵀ) = Σ_t ‖L_Sᵀ·ΔW_t·L_K‖²_F with ΔW_t the [s, K] slice of
 * output t, so a decomposition fitted to W_t ↦ L_Sᵀ·W_t·L_K in plain Frobenius norm is
 * fitted to the outputs. From the patch Gram when there is one (partial traces), else
 * from the channel Gram alone (L_K = I, absent). Ridge as in svd-pair.ts when a factor
 * is only semidefinite (channels the data never excites), after the damping of svd-pair.ts
 * (WHITEN_DAMP) on each factor. Undefined when the statistics
 * are degenerate (zero or non-finite trace): then there is nothing to weight by.
 */
export function kroneckerWhitening(s: number, K: number, patchGram?: ArrayLike<number>, channelGram?: ArrayLike<number>, damp = WHITEN_DAMP): { ls: Matrix; lk?: Matrix } | undefined {
  let gs: Float64Array;
  let gk: Float64Array | undefined;
  if (patchGram) ({ gs, gk } = kroneckerFactors(patchGram, s, K));
  else if (channelGram && channelGram.length === s * s) gs = unitDiagonalMean(Float64Array.from(channelGram), s);
  else return undefined;
  const ls = dampedCholesky(gs, s, damp);
  if (!ls) return undefined;
  if (!gk) return { ls };
  const lk = dampedCholesky(gk, K, damp);
  return lk ? { ls, lk } : undefined;
}

/** Lower Cholesky factor of a damped factor Gram (ridge when semidefinite); undefined when its trace is zero or not finite. */
function dampedCholesky(a: Float64Array, n: number, damp: number): Matrix | undefined {
  let tr = 0;
  for (let i = 0; i < n; i++) tr += a[i * n + i];
  if (!(tr > 0) || !Number.isFinite(tr) || a.some((v) => !Number.isFinite(v))) return undefined;
  return choleskyWithRidge({ rows: n, cols: n, data: damped(a, n, damp) }, 1e-6).l;
}

/**
 * Per-mode whitening of a conv kernel's input modes (s, k1, …, kn) from what the statistics
 * give, as kroneckerWhitening: from the patch Gram when there is one, every mode
 * (linalg/mode-whitening.ts: Σ ≈ Σ_S ⊗ Σ_1 ⊗ … ⊗ Σ_n by partial traces); else from the channel Gram [s·s] alone, [L_S, undefined…] (the kernel
 * axes left as they are: Σ ≈ Σ_S ⊗ I). Undefined when the statistics are degenerate.
 * For decompositions with one factor per input mode (TT, 4-way CP); linalg/mode-whitening.ts
 * whitenModes and unwhitenMode apply it and skip the undefined modes.
 */
export function perModeWhitening(
  dims: readonly number[], patchGram?: ArrayLike<number>, channelGram?: ArrayLike<number>, damp = WHITEN_DAMP,
): (Matrix | undefined)[] | undefined {
  if (patchGram) {
    const ls = modeGrams(patchGram, dims).map((g, a) => dampedCholesky(g, dims[a]!, damp));
    return ls.every((l) => l) ? ls : undefined;
  }
  const s = dims[0]!;
  if (!channelGram || channelGram.length !== s * s) return undefined;
  const ls = dampedCholesky(unitDiagonalMean(Float64Array.from(channelGram), s), s, damp);
  return ls && [ls, ...dims.slice(1).map(() => undefined)];
}

/**
 * Damping λ of the anchored patch fits (Ĉ + δI, X + δI with δ = λ·mean(diag Ĉ); see
 * linalg/anchored.ts): the same pull toward the original kernel as the SVD pairs' (ANCHOR_DAMP).
 */
export const ANCHOR_PATCH_DAMP = ANCHOR_DAMP;

/** Per-group anchored patch covariances of a conv, when its statistics carry them and fit. */
export function anchoredPatches(cx: PassContext, name: string, geo: ConvGeometry): AnchoredPatch[] | undefined {
  const st = cx.stats?.get(name);
  const an = st?.anchor;
  const D = (geo.S / geo.group) * geo.kernelSize;
  const G = geo.group;
  const n = st?.patchCount ?? 0;
  if (!st || !an || !(n > 0) || !st.patchGram || !st.patchMean || !an.patchGram || !an.patchCross || !an.patchMean) return undefined;
  if (st.patchDim !== D || [st.patchGram, an.patchGram, an.patchCross].some((a) => a.length !== G * D * D)) return undefined;
  if (st.patchMean.length !== G * D || an.patchMean.length !== G * D) return undefined;
  return Array.from({ length: G }, (_, j) => {
    const blk = (a: Float64Array): Float64Array => a.subarray(j * D * D, (j + 1) * D * D);
    const mean = st.patchMean!.subarray(j * D, (j + 1) * D);
    const meanHat = an.patchMean!.subarray(j * D, (j + 1) * D);
    return {
      gram: centered(blk(st.patchGram!), n, D, mean, mean),
      gramHat: centered(blk(an.patchGram!), n, D, meanHat, meanHat),
      cross: centered(blk(an.patchCross!), n, D, meanHat, mean),
      mean, meanHat,
    };
  });
}

/** Per-group anchored whitening of the input channels (rows side, centered), when the statistics carry it. */
export function anchoredChannelWhitenings(cx: PassContext, name: string, geo: ConvGeometry): Whitening[] | undefined {
  const st = cx.stats?.get(name);
  const an = st?.anchor;
  const s = geo.S / geo.group;
  if (!st || !an || st.kind !== 'conv' || st.dim !== s || (st.groups ?? 1) !== geo.group || !st.mean) return undefined;
  const out: Whitening[] = [];
  for (let j = 0; j < geo.group; j++) {
    const blk = (a: Float64Array, d: number): Float64Array => a.subarray(j * d, (j + 1) * d);
    const w = whiteningFor({
      kind: 'matrix', dim: s, count: st.count, gram: blk(st.gram, s * s), mean: blk(st.mean, s),
      anchor: { gram: blk(an.gram, s * s), cross: blk(an.cross, s * s), mean: blk(an.mean, s) },
    }, 'rows', s, { center: true });
    if (!w?.cross) return undefined;
    out.push(w);
  }
  return out;
}
