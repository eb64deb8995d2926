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
 * The factorization is linalg/cp-conv.ts. With calibration statistics the pass picks the
 * Kronecker whitening of the patch space (conv-stats.ts; from the partly compressed model's
 * patch covariance when anchored, from the channel Gram alone when the patch covariance is
 * not well determined) and hands over the patch moments: the last factor is then refitted
 * on them (anchored: fitted to the original model's outputs) and the mean error moved
 * into the bias.
 */
import type { LayerInfo } from '../src/graph/layers.js';
import { isRank, notARank } from '../src/linalg/checks.js';
import { cpConv, type CpConv } from '../src/linalg/cp-conv.js';
import type { Matrix } from '../src/linalg/matrix.js';
import { makeFloatTensor } from '../src/onnx/tensor.js';
import {
  convLayerGeometry, finiteWeight, chainConvAttrs, convCost, convNode, cpCost, groupKernels, isDepthwise, isPointwise, placementAttrs,
  type ConvGeometry, type GroupKernel,
} from '../src/rewrite/conv-geometry.js';
import { composeConv } from '../src/rewrite/conv-compose.js';
import { challengeAtEqualCost } from '../src/rewrite/challenge.js';
import { docString } from '../src/rewrite/emit.js';
import {
  derivedName, isSkip, skip, type Applied, type BoundPass, type Challenge, type LayerPass, type MatchBase, type PassContext, type Skip,
} from '../src/rewrite/pass.js';
import { cpEnergyRank, cpRanks } from '../src/rewrite/cp-rank.js';
import type { RankPolicy } from '../src/rewrite/rank-policy.js';
import type { SyncGemm } from '../src/linalg/engine.js';
import type { Rng } from '../src/util/rng.js';
import { correctedBias, tucker2RawRanks, type ConvTucker2Match } from './conv-tucker2.js';
import {
  anchoredPatches, ANCHOR_PATCH_DAMP, channelBlocks, kroneckerWhitening, MIN_ROWS_PER_DIM, patchBlocks, type AnchoredPatch, type PatchBlocks,
} from '../src/rewrite/conv-stats.js';

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
  /** Where chooseRanks's weight-only fits (the energy search) draw and multiply. */
  search: { rng: Rng; gemm?: SyncGemm };
  /** Weight-only fits by rank, made by the energy search (shared across its policies). */
  weightFits?: Map<number, CpFactors>;
  /** Relative error² of every weight-only fit the energy search made (failed fits: NaN), by rank. */
  weightErr2?: Map<number, number>;
}

/** A fit (rank: as fitted) and the rank it was asked for. */
interface CpFactors extends CpConv {
  requested: number;
  /** True when the CP was fitted to the whitened kernel (data-aware). */
  whitened?: boolean;
}


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

  challenge: (layer, preferred, ranks, cx, policy?: RankPolicy) => challengeCp(layer, preferred, ranks, cx, policy),

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
      search: { rng: cx.rng, gemm: cx.gemm },
    };
  },

  /**
   * fixed r → R = r; ratio ρ → R = ⌊ρ·T·S·K / (S + T + K)⌋ (CP params R(S + T + K));
   * energy e → the smallest R (to within 1/16) whose weight-only CP has relative
   * error² ≤ 1 − e, searched over CP-ALS fits from max(R1, R2), the Tucker-2 energy ranks of the
   * channel unfoldings (a CP of rank R has Tucker-2 ranks ≤ R, so by Eckart–Young no
   * smaller CP meets e), up to the break-even rank; declined when no CP that pays meets e.
   * vbmf has no CP spectrum to read: R = max(R1, R2) of the EVBMF Tucker-2 ranks.
   */
  rankLimits(m: ConvCpMatch): number[] {
    // The generic CP rank of a T×S×K tensor is at most TSK / max(T, S, K).
    const { T, S, kernelSize: K } = m.geo;
    return [(T * S * K) / Math.max(T, S, K)];
  },

  chooseRanks(m: ConvCpMatch, policy: RankPolicy): number[] | Skip {
    const { T, S, kernelSize: K } = m.geo;
    // Beyond T·S·K / max(T, S, K) a CP is always exact: no point in more.
    const limit = (T * S * K) / Math.max(T, S, K);
    return cpRanks(policy, { T, S, K, perRank: S + T + K, limit, tucker2: (p) => tucker2RawRanks(m, p), energyRank: (e, lo) => energyCpRank(m, e, lo) });
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
    const { rank: R, first, depth, last, relError } = f;
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
 * core), so equal error at equal size favours CP. The CP competes at the largest rank of
 * that size, except under a fixed rank policy (--rank N), where it competes at rank N
 * (aligned) as --method cp would write it, when that chain is no larger. A CP rank search
 * costs several CP-ALS fits, so it does not take the policy when Tucker-2 does not pay.
 */
export function challengeCp(layer: LayerInfo, preferred: BoundPass, ranksT: readonly number[], cx: PassContext, policy?: RankPolicy): Challenge | undefined {
  const mc = convCp.match(layer, cx);
  if (isSkip(mc)) return undefined;
  // Group 1 (CP declines grouped convs): a patch has S·K values. The comparison costs a
  // CP-ALS fit, about rank × kernel size per product: at rank 760 on a 512x256x3x3 kernel
  // that took minutes in JS.
  const spec = { pass: convCp, match: mc, limit: convCp.rankLimits(mc)[0]!, patchDim: mc.geo.S * mc.geo.kernelSize, maxWork: MAX_CP_COMPARE_WORK, fixedRank: true };
  return challengeAtEqualCost(layer, spec, preferred, ranksT, cx, policy);
}

/**
 * The smallest CP rank in [lo, break-even] (to within a tolerance) whose weight-only fit leaves at most 1 − energy
 * of ‖W‖² (rewrite/cp-rank.ts), or why none does. The fit at the answer serves apply
 * when the layer has no statistics.
 */
function energyCpRank(m: ConvCpMatch, energy: number, lo: number): number | Skip {
  const { T, S, kernelSize: K } = m.geo;
  const limit = (T * S * K) / Math.max(T, S, K);
  const dense = convCost(m.geo).params;
  let even = 0;
  for (let a = 1, b = limit; a <= b;) {
    const mid = (a + b) >> 1;
    if (cpCost(m.geo, mid).params < dense) { even = mid; a = mid + 1; } else b = mid - 1;
  }
  const fits = (m.weightFits ??= new Map());
  const fit = (r: number): CpFactors => ({ ...cpConv({ data: m.w, shape: [T, S, K] }, r, { rng: m.search.rng, gemm: m.search.gemm, maxIter: ALS.maxIter, tol: ALS.tol }), requested: r });
  const r = cpEnergyRank({ limit, even, fit, fits, err2: (m.weightErr2 ??= new Map()), words: ['CP rank', 'CP rank'] }, energy, lo);
  // Weight-only fits are what apply makes without statistics: keep the one chosen.
  if (!isSkip(r) && !m.patches && !m.channelGram && !m.anchor) m.fitted = fits.get(r);
  return r;
}

/** The CP at rank `rank` (linalg/cp-conv.ts) with the match's statistics; cached on the match. */
function factorizeCp(m: ConvCpMatch, rank: number, cx: PassContext): CpFactors | Skip {
  if (!isRank(rank)) return skip(notARank(rank));
  if (m.fitted?.requested === rank) return m.fitted;
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
  const f = cpConv({ data: m.w, shape: [T, S, K] }, rank, {
    rng: cx.rng, gemm: cx.gemm, maxIter: ALS.maxIter, tol: ALS.tol, whitening: m.whitening ?? undefined,
    anchor: m.anchor && { patch: m.anchor, damp: ANCHOR_PATCH_DAMP },
    patches: m.patches && { gram: m.patches.gram[0]!, mean: m.patches.mean?.[0] },
  });
  if (!Number.isFinite(f.alsError)) return skip('CP-ALS produced a non-finite fit');
  if (!Number.isFinite(f.relError)) return skip('CP factorization produced non-finite values');
  m.fitted = { ...f, requested: rank, whitened: m.whitening ? true : undefined };
  return m.fitted;
}
