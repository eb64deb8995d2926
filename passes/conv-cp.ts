/**
 * conv-cp — a Conv becomes 1x1 → depthwise → 1x1 through a rank-R CP decomposition of its
 * kernel reshaped to [T, S, K] (K = ∏k), fitted by ALS (Lebedev et al. 2015):
 * W[t, s, k] ≈ Σ_r A[t, r]·B[s, r]·C[k, r].
 *
 * Before: Y = Conv(X, W [T, S, k…], b; strides, pads, dilations, auto_pad)
 * After:  Z1 = Conv(X,  Bᵀ [R, S, 1…])
 *         Z2 = Conv(Z1, Cᵀ [R, 1, k…]; group R, strides, pads, dilations, auto_pad)
 *         Y  = Conv(Z2, A  [T, R, 1…], b)
 * The window lives on the depthwise conv only. Each rank-one term's scale λ_r is spread
 * evenly over its three factors (λ^⅓ each) so no factor is far from unit scale (fp16).
 * Grouped convs are declined (CP per group is not implemented), as are depthwise and 1x1.
 * Plain CP-ALS can diverge on conv kernels: the numerics regularise the fit; a fit that is
 * not finite is declined, and one that hit the iteration cap is kept with its measured
 * error (the doc string says it did not converge).
 *
 * Data-aware (with calibration statistics): the output error of a patch p is
 * tr(ΔW·Σ·ΔWᵀ), Σ = E[p·pᵀ] over the im2col patches (index c·K + k). With the Kronecker
 * approximation Σ ≈ Σ_S ⊗ Σ_K = (L_S·L_Sᵀ) ⊗ (L_K·L_Kᵀ) (conv-stats.ts) it is
 * Σ_t ‖L_Sᵀ·ΔW_t·L_K‖²_F, so CP-ALS runs on W'_t = L_Sᵀ·W_t·L_K (modes S and K whitened)
 * and the factors map back as B = L_S⁻ᵀ·B', C = L_K⁻ᵀ·C': the rank goes to the directions
 * the inputs excite (exact when Σ is Kronecker-structured). The last factor A is then
 * refitted by least squares on the full Σ (refit.ts) and the mean error moved into the
 * bias, which also corrects what the Kronecker approximation misses.
 *
 * Anchored (statistics with an `anchor`, src/optimize/anchored.ts): the whitening comes from
 * the partly compressed model's patch covariance Ĉ, and the last factor is the anchored
 * fit through the fixed first two convs H: A = W·(X + δI)ᵀ·Hᵀ·(H·(Ĉ + δI)·Hᵀ)⁻¹ on the
 * patch covariances (X = E[p̂·pᵀ]), the mean error W·E[p] − A·H·E[p̂] into the bias.
 */
import type { LayerInfo } from '../src/graph/layers.js';
import { cpAls } from '../src/linalg/cp.js';
import { transpose, type Matrix } from '../src/linalg/matrix.js';
import { solveUpperLeft } from '../src/linalg/triangular.js';
import { makeFloatTensor } from '../src/onnx/tensor.js';
import {
  convLayerGeometry, finiteWeight, chainConvAttrs, convCost, convNode, cpCost, groupKernels, isDepthwise, isPointwise, placementAttrs,
  type ConvGeometry, type GroupKernel,
} from '../src/rewrite/conv-geometry.js';
import { composeConv } from '../src/rewrite/conv-compose.js';
import { docString } from '../src/rewrite/emit.js';
import {
  derivedName, isSkip, skip, type Applied, type BoundPass, type Challenge, type LayerPass, type MatchBase, type PassContext, type Skip,
} from '../src/rewrite/pass.js';
import { bound } from '../src/rewrite/registry.js';
import { alignRank } from '../src/linalg/rank.js';
import type { RankPolicy } from '../src/rewrite/rank-policy.js';
import { correctedBias, tucker2RawRanks, type ConvTucker2Match } from './conv-tucker2.js';
import {
  anchoredPatches, ANCHOR_PATCH_DAMP, channelBlocks, kroneckerWhitening, patchBlocks, type AnchoredPatch, type PatchBlocks,
} from '../src/rewrite/conv-stats.js';
import { anchoredError, fitThroughInputMap, meanEnergy, meanError } from '../src/linalg/anchored.js';
import { product } from '../src/linalg/engine.js';
import { refitLastFactor } from '../src/rewrite/refit.js';

export interface ConvCpMatch extends MatchBase {
  geo: ConvGeometry;
  w: Float32Array;
  /** One group (group 1): the kernel as [T, S, K]. */
  groups: GroupKernel[];
  spectra?: ConvTucker2Match['spectra'];
  /** The last factorization, reused by apply when the rank matches. */
  fitted?: CpFactors;
  /** Patch statistics (group 1) for the whitening and the least-squares refit of the last factor. */
  patches?: PatchBlocks;
  /** Input-channel Gram (group 1): whitens mode S when there are no patch statistics. */
  channelGram?: Float64Array;
  /** Rows (input positions) behind the statistics. */
  samples: number;
  /** Anchored patch covariances (group 1), when the statistics carry them. */
  anchor?: AnchoredPatch;
  /** Cholesky factors of the Kronecker whitening, computed on first use (null: none). */
  whitening?: { ls: Matrix; lk?: Matrix } | null;
}

interface CpFactors {
  rank: number; R: number; first: Float32Array; depth: Float32Array; last: Float32Array; relError: number; converged: boolean; iterations: number;
  dataError?: number;
  biasDelta?: Float64Array;
  /** True when the CP was fitted to the whitened kernel (data-aware). */
  whitened?: boolean;
}

/** Whitening needs a covariance estimated from at least this many rows per dimension. */
export const MIN_ROWS_PER_DIM = 2;

/** Iteration budget and tolerance of the ALS fit. */
const ALS = { maxIter: 50, tol: 1e-5 };

/** rank × kernel elements above which --method auto does not try CP against the preferred pass. */
const MAX_CP_COMPARE_WORK = 5e7;

export const convCp: LayerPass<ConvCpMatch, 'cp'> = {
  name: 'conv-cp',
  method: 'cp',
  ops: ['Conv'],
  // Under auto CP is not chosen by preference but by `challenge` (equal size, error compared).
  benefit: 0,

  compose: composeConv,

  challenge: (layer, preferred, ranks, cx) => challengeCp(layer, preferred, ranks, cx),

  match(layer: LayerInfo, cx: PassContext): ConvCpMatch | Skip {
    const n = layer.node;
    const c = convLayerGeometry(layer);
    if (isSkip(c)) return c;
    const { geo, dataType } = c;
    if (isDepthwise(geo)) return skip(`depthwise: nothing to gain (one input channel per group, group ${geo.group})`);
    if (geo.group !== 1) return skip(`grouped conv (group ${geo.group}): CP per group is not implemented (conv-tucker2 handles it)`);
    if (isPointwise(geo)) return skip('1x1 kernel: a matrix, conv1x1-svd handles it');
    const w = finiteWeight(layer, cx);
    if (isSkip(w)) return w;
    return {
      layer, node: n, graph: layer.graph, dataType, geo, w, groups: groupKernels(w, geo),
      patches: patchBlocks(cx, layer.name, geo), channelGram: channelBlocks(cx, layer.name, geo)?.[0],
      samples: cx.stats?.get(layer.name)?.count ?? 0, anchor: anchoredPatches(cx, layer.name, geo)?.[0],
    };
  },

  /**
   * fixed r → R = r; ratio ρ → R = ⌊ρ·T·S·K / (S + T + K)⌋ (CP params R(S + T + K));
   * energy and vbmf have no CP spectrum to read: they take the Tucker-2 ranks of the
   * channel unfoldings and use R = max(R1, R2) (a CP of rank R has Tucker-2 ranks ≤ R,
   * so this is a lower bound on the CP rank needed, exact when the kernel is a
   * "diagonal" Tucker tensor).
   */
  rankLimits(m: ConvCpMatch): number[] {
    // The generic CP rank of a T×S×K tensor is at most TSK / max(T, S, K).
    const { T, S, kernelSize: K } = m.geo;
    return [(T * S * K) / Math.max(T, S, K)];
  },

  chooseRanks(m: ConvCpMatch, policy: RankPolicy): number[] | Skip {
    const { T, S, kernelSize: K } = m.geo;
    let r: number;
    switch (policy.kind) {
      case 'fixed':
        if (!Number.isInteger(policy.rank) || policy.rank < 1) return skip(`rank ${policy.rank} is not a positive integer`);
        r = policy.rank;
        break;
      case 'ratio':
        r = Math.max(1, Math.floor((policy.ratio * T * S * K) / (S + T + K)));
        break;
      case 'energy': case 'vbmf': {
        const t = tucker2RawRanks(m, policy);
        if (isSkip(t)) return t;
        r = Math.max(t[0], t[1]);
        break;
      }
    }
    // Beyond T·S·K / max(T, S, K) a CP is always exact: no point in more.
    r = alignRank(Math.min(r, (T * S * K) / Math.max(T, S, K)), policy.align, (T * S * K) / Math.max(T, S, K));
    if (r <= 0) return skip('rank 0: the kernel has no low-rank structure worth keeping');
    return [r];
  },

  cost: (m, ranks) => ({ before: convCost(m.geo), after: cpCost(m.geo, ranks[0]) }),

  estimate(m: ConvCpMatch, ranks: readonly number[], cx: PassContext): { relError: number; dataError?: number } | Skip {
    const f = factorizeCp(m, ranks[0], cx);
    return isSkip(f) ? f : { relError: f.relError, dataError: f.dataError };
  },

  apply(m: ConvCpMatch, ranks: readonly number[], cx: PassContext): Applied | Skip {
    const { node: n, graph: g, geo } = m;
    const { T, S } = geo;
    const f = factorizeCp(m, ranks[0], cx);
    if (isSkip(f)) return f;
    const { R, first, depth, last, relError } = f;
    const bias = correctedBias(cx, m, f.biasDelta);
    if (isSkip(bias)) return bias;
    const ones = new Array<number>(geo.spatial).fill(1);
    const nameB = derivedName(cx, n, 'lr_cp_s');
    const nameC = derivedName(cx, n, 'lr_cp_k');
    const nameA = derivedName(cx, n, 'lr_cp_t');
    g.addInitializer(makeFloatTensor(nameB, [R, S, ...ones], first, m.dataType));
    g.addInitializer(makeFloatTensor(nameC, [R, 1, ...geo.kernel], depth, m.dataType));
    g.addInitializer(makeFloatTensor(nameA, [T, R, ...ones], last, m.dataType));
    const z1 = derivedName(cx, n, 'lr_z1');
    const z2 = derivedName(cx, n, 'lr_z2');
    const fitNote = (f.converged ? '' : `, ALS stopped at ${f.iterations} iterations before converging`)
      + (f.whitened ? ', data-aware (Kronecker-whitened) input factors' : '')
      + (m.anchor ? ', last factor fitted to the original outputs (anchored)' : m.patches ? ', last factor refitted on calibration patches' : '');
    const doc = docString('conv-cp', `rank ${R} of ${T}x${S}x${geo.kernel.join('x')} (weight rel. error ${relError.toExponential(2)}${fitNote})`);
    const nodes = [
      convNode(derivedName(cx, n, 'lr_a'), n.input[0], nameB, z1, chainConvAttrs(ones, 1), undefined, doc),
      convNode(derivedName(cx, n, 'lr_b'), z1, nameC, z2, chainConvAttrs(geo.kernel, R, placementAttrs(n)), undefined, doc),
      convNode(derivedName(cx, n, 'lr_c'), z2, nameA, n.output[0], chainConvAttrs(ones, 1), bias, doc),
    ];
    g.replaceNode(n, nodes);
    return { relError, dataError: f.dataError, nodes: nodes.map((x) => x.name!) };
  },
};

/**
 * --method auto on a kxk conv: the preferred pass (Tucker-2) unless a CP chain with no
 * more parameters (and no more MACs) reconstructs the weight (with calibration data: the
 * layer's output) at least as well. CP chains run faster in ORT at equal rank (depthwise
 * core), so equal error at equal size favours CP.
 */
function challengeCp(layer: LayerInfo, preferred: BoundPass, ranksT: readonly number[], cx: PassContext): Challenge | undefined {
  const mc = convCp.match(layer, cx);
  if (isSkip(mc)) return undefined;
  const ct = preferred.cost(ranksT);
  if (ct.after.params >= ct.before.params) return undefined;
  let r = 0;
  for (let lo = 1, hi = Math.max(1, ct.after.params); lo <= hi;) {
    const mid = (lo + hi) >> 1;
    const c = convCp.cost(mc, [mid]);
    if (c.after.params <= ct.after.params && c.after.macsPerPosition <= ct.after.macsPerPosition) { r = mid; lo = mid + 1; } else hi = mid - 1;
  }
  if (r === 0 || !preferred.estimate) return undefined;
  // The comparison costs a CP-ALS fit, about rank × kernel size per product: at rank 760
  // on a 512x256x3x3 kernel that took minutes in JS. Past this size the preferred pass stays.
  if (r * layer.params > MAX_CP_COMPARE_WORK) return { note: `cp ${r} not compared (fit too costly at this size)` };
  const fT = preferred.estimate(ranksT, cx);
  const fC = factorizeCp(mc, r, cx);
  if (isSkip(fT) || isSkip(fC)) return undefined;
  // Data-aware fits are compared by their output error on the calibration statistics,
  // when those determine the patch covariance (else in-sample errors flatter overfits).
  // Group 1 (CP declines grouped convs): a patch has S·K values.
  const patchDim = mc.geo.S * mc.geo.kernelSize;
  const rows = cx.stats?.get(layer.name)?.count ?? 0;
  const data = fT.dataError !== undefined && fC.dataError !== undefined && rows >= MIN_ROWS_PER_DIM * patchDim;
  const [eT, eC] = data ? [fT.dataError!, fC.dataError!] : [fT.relError, fC.relError];
  const note = `${preferred.method} ${ranksT.join(',')} ${data ? 'data ' : ''}err ${eT.toExponential(2)} vs cp ${r} err ${eC.toExponential(2)}`;
  // Equal within 2% (or both below 1e-4, where ALS stops) counts as equal.
  return eC <= eT * 1.02 + 1e-4 ? { note, use: { bound: bound(convCp, mc), ranks: [r] } } : { note };
}

/** CP-ALS fit of the kernel at rank `rank`, as chain weights; cached on the match. */
function factorizeCp(m: ConvCpMatch, rank: number, cx: PassContext): CpFactors | Skip {
  if (!Number.isInteger(rank) || rank < 1) return skip(`rank ${rank} is not a positive integer`);
  if (m.fitted?.rank === rank) return m.fitted;
  const { T, S, kernelSize: K } = m.geo;
  // Without statistics the weight itself is fitted (weight-only behaviour unchanged). A
  // covariance estimated from fewer rows than about twice its dimension is rank-deficient
  // and the whitened fit overfits the calibration set (seen on PP-OCRv4 rec's 1x3 convs
  // at 640 rows for 1440 patch dims): then whiten by what is well determined, or not at all.
  if (m.whitening === undefined) {
    const patch = m.patches && m.samples >= MIN_ROWS_PER_DIM * S * K ? m.anchor?.gramHat ?? m.patches.gram[0] : undefined;
    const channel = !patch && m.channelGram && m.samples >= MIN_ROWS_PER_DIM * S ? m.channelGram : undefined;
    m.whitening = patch || channel ? kroneckerWhitening(S, K, patch, channel) ?? null : null;
  }
  const wh = m.whitening;
  const target = wh ? whitenKernel(m.groups[0].data, T, S, K, wh.ls, wh.lk) : m.groups[0].data;
  const fit = cpAls({ data: target, dims: [T, S, K] }, rank, { rng: cx.rng, maxIter: ALS.maxIter, tol: ALS.tol, gemm: cx.gemm });
  if (!Number.isFinite(fit.relError)) return skip('CP-ALS produced a non-finite fit');
  // The numerics clamp R to T·S·K / max(T, S, K) (a CP of that rank is always exact).
  const R = fit.rank;
  const fa = fit.factors[0]; // A [T, R]
  // B [S, R], C [K, R]; fitted in whitened coordinates, mapped back by L⁻ᵀ.
  const fb = wh ? solveUpperLeft(transpose(wh.ls), fit.factors[1]) : fit.factors[1];
  const fc = wh?.lk ? solveUpperLeft(transpose(wh.lk), fit.factors[2]) : fit.factors[2];
  const lambda = fit.weights;
  const first = new Float32Array(R * S); // Bᵀ [R, S]
  const depth = new Float32Array(R * K); // Cᵀ [R, K]
  const last = new Float32Array(T * R); // A [T, R]
  for (let r = 0; r < R; r++) {
    const na = colNorm(fa.data, T, R, r);
    const nb = colNorm(fb.data, S, R, r);
    const nc = colNorm(fc.data, K, R, r);
    const scale = Math.cbrt(Math.abs((lambda ? lambda[r] : 1) * na * nb * nc));
    const sign = lambda && lambda[r] < 0 ? -1 : 1;
    const ka = na === 0 ? 0 : (sign * scale) / na;
    const kb = nb === 0 ? 0 : scale / nb;
    const kc = nc === 0 ? 0 : scale / nc;
    for (let i = 0; i < T; i++) last[i * R + r] = fa.data[i * R + r] * ka;
    for (let i = 0; i < S; i++) first[r * S + i] = fb.data[i * R + r] * kb;
    for (let i = 0; i < K; i++) depth[r * K + i] = fc.data[i * R + r] * kc;
  }
  const relError = cpError(m.w, T, S, K, first, depth, last, R);
  if (!Number.isFinite(relError)) return skip('CP factorization produced non-finite values');
  m.fitted = { rank, R, first, depth, last, relError, converged: fit.converged, iterations: fit.iterations, whitened: wh ? true : undefined };
  if (m.patches || m.anchor) {
    // H [R, D]: the chain before its last 1x1, H[r, c·K + k] = depth[r, k]·first[r, c].
    const D = S * K;
    const h = new Float64Array(R * D);
    for (let r = 0; r < R; r++) for (let c = 0; c < S; c++) for (let k = 0; k < K; k++) h[r * D + c * K + k] = depth[r * K + k] * first[r * S + c];
    if (m.anchor) {
      const p = m.anchor;
      const w = { rows: T, cols: D, data: Float64Array.from(m.groups[0].data) };
      const hm = { rows: R, cols: D, data: h };
      const refit = Float32Array.from(fitThroughInputMap(w, hm, p.gramHat, p.cross, ANCHOR_PATCH_DAMP, cx.gemm).data);
      const wHat = product({ rows: T, cols: R, data: Float64Array.from(refit) }, hm, {}, cx.gemm);
      const e = anchoredError(w, wHat, p, cx.gemm);
      const den = e.den + meanEnergy(w, p.mean);
      m.fitted = {
        ...m.fitted, last: refit, relError: cpError(m.w, T, S, K, first, depth, refit, R),
        dataError: den > 0 ? Math.sqrt(e.num / den) : 0, biasDelta: meanError(w, wHat, p.mean, p.meanHat),
      };
      return m.fitted;
    }
    const rf = refitLastFactor({ rows: T, cols: D, data: m.groups[0].data }, { rows: R, cols: D, data: h }, m.patches!.gram[0], m.patches!.mean?.[0], cx.gemm);
    const refit = Float32Array.from(rf.b);
    m.fitted = { ...m.fitted, last: refit, relError: cpError(m.w, T, S, K, first, depth, refit, R), dataError: rf.dataError, biasDelta: rf.biasDelta };
  }
  return m.fitted;
}

/** W'_t = L_Sᵀ·W_t·L_K for each output t (W_t the [S, K] slice; L_K = I when absent). */
export function whitenKernel(w: ArrayLike<number>, T: number, S: number, K: number, ls: Matrix, lk?: Matrix): Float64Array {
  const out = new Float64Array(T * S * K);
  const tmp = new Float64Array(S * K);
  const L = ls.data;
  for (let t = 0; t < T; t++) {
    const off = t * S * K;
    // tmp = L_Sᵀ·W_t: tmp[i, k] = Σ_{c ≥ i} L_S[c, i]·W_t[c, k] (L_S lower triangular).
    tmp.fill(0);
    for (let c = 0; c < S; c++) {
      for (let i = 0; i <= c; i++) {
        const l = L[c * S + i];
        if (l === 0) continue;
        for (let k = 0; k < K; k++) tmp[i * K + k] += l * w[off + c * K + k];
      }
    }
    if (!lk) { out.set(tmp, off); continue; }
    // out = tmp·L_K: out[i, k'] = Σ_{k ≥ k'} tmp[i, k]·L_K[k, k'].
    for (let i = 0; i < S; i++) for (let k = 0; k < K; k++) {
      const v = tmp[i * K + k];
      if (v === 0) continue;
      for (let k2 = 0; k2 <= k; k2++) out[off + i * K + k2] += v * lk.data[k * K + k2];
    }
  }
  return out;
}

function colNorm(d: ArrayLike<number>, rows: number, cols: number, c: number): number {
  let s = 0;
  for (let i = 0; i < rows; i++) s += d[i * cols + c] * d[i * cols + c];
  return Math.sqrt(s);
}

/** ‖W − Σ_r a_r∘b_r∘c_r‖_F / ‖W‖_F from the stored (fp32) chain weights. */
export function cpError(w: Float32Array, T: number, S: number, K: number, first: Float32Array, depth: Float32Array, last: Float32Array, R: number): number {
  let num = 0;
  let den = 0;
  const bc = new Float64Array(R * S * K); // (b_r ⊗ c_r)[s, k]
  for (let r = 0; r < R; r++) for (let s = 0; s < S; s++) for (let k = 0; k < K; k++) bc[(r * S + s) * K + k] = first[r * S + s] * depth[r * K + k];
  const row = new Float64Array(S * K);
  for (let t = 0; t < T; t++) {
    row.fill(0);
    for (let r = 0; r < R; r++) {
      const a = last[t * R + r];
      if (a === 0) continue;
      const off = r * S * K;
      for (let i = 0; i < S * K; i++) row[i] += a * bc[off + i];
    }
    for (let i = 0; i < S * K; i++) {
      const x = w[t * S * K + i];
      const d = x - row[i];
      num += d * d;
      den += x * x;
    }
  }
  return den === 0 ? 0 : Math.sqrt(num / den);
}
