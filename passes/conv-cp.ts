/**
 * conv-cp — a Conv becomes 1x1 → depthwise → 1x1 through a rank-R CP decomposition of its
 * kernel reshaped to [T, S, K] (K = ∏k), fitted by ALS (Lebedev et al. 2015):
 * W[t, s, k] ≈ Σ_r A[t, r]·B[s, r]·C[k, r].
 *
 * Before: Y = Conv(X, W [T, S/g, k…], b; strides, pads, dilations, auto_pad, group g)
 * After:  Z1 = Conv(X,  Bᵀ [g·R, S/g, 1…]; group g)
 *         Z2 = Conv(Z1, Cᵀ [g·R, 1, k…]; group g·R, strides, pads, dilations, auto_pad)
 *         Y  = Conv(Z2, A  [T, R, 1…], b; group g)
 * Per group j (W_j [T/g, S/g, K]): W_j[t, s, k] ≈ Σ_r A_j[t, r]·B_j[s, r]·C_j[k, r], the
 * same rank R in every group; Bᵀ, Cᵀ and A stack the groups' factors (group j's R chain
 * channels are j·R … j·R + R − 1). With g = 1 this is the plain chain 1x1 → depthwise → 1x1.
 * The window lives on the depthwise conv only. Each rank-one term's scale λ_r is spread
 * evenly over its three factors (λ^⅓ each) so no factor is far from unit scale (fp16).
 * Depthwise convs (S/g = 1) and 1x1 kernels are declined.
 * Plain CP-ALS can diverge on conv kernels: the numerics regularise the fit; a fit that is
 * not finite is declined, and one that hit the iteration cap is kept with its measured
 * error (the doc string says it did not converge). Each CP's sensitivity (Phan et al. 2020,
 * linalg/cp-sensitivity.ts) goes into the doc string and the layer's note; a degenerate fit
 * (ratio above SENSITIVITY_LIMIT) is refitted under the sensitivity bound first, and when
 * that refit does not meet the bound the rank is declined with the ratio and the bound (no
 * degenerate CP is shipped): the energy search and auto's shrink count it as unusable.
 *
 * The factorization is linalg/cp-conv.ts (per group: cp-conv-groups.ts). With calibration
 * statistics the pass picks, for each group, the Kronecker whitening of the patch space
 * (conv-stats.ts; from the partly compressed model's patch covariance when anchored, from
 * the channel Gram alone when the patch covariance is not well determined) and hands over
 * the patch moments: the last factor is then refitted on them (anchored: fitted to the
 * original model's outputs), all three factors are refined on them by a few ALS sweeps
 * where the work is small enough (linalg/cp-data-als.ts), and the mean error is moved into
 * the bias.
 */
import type { LayerInfo } from '../src/graph/layers.js';
import { isRank, notARank } from '../src/linalg/checks.js';
import { cpRankBound } from '../src/linalg/cp-als.js';
import { cpConvGroups, type CpConvGroups } from '../src/linalg/cp-conv-groups.js';
import type { Matrix } from '../src/linalg/matrix.js';
import { lastFactorFlops } from '../src/linalg/last-factor.js';
import { cpDataSweepCount, cpDataSweepFlops, CP_DATA_CG_ITERATIONS } from '../src/linalg/cp-data-als.js';
import { makeFloatTensor } from '../src/onnx/tensor.js';
import {
  chainCost, convLayerGeometry, finiteWeight, chainConvAttrs, convCost, convNode, groupKernels, isDepthwise, isPointwise, placementAttrs,
  type ConvGeometry, type GroupKernel,
} from '../src/rewrite/conv-geometry.js';
import { composeConv } from '../src/rewrite/conv-compose.js';
import { challengeAtEqualCost } from '../src/rewrite/challenge.js';
import { docString } from '../src/rewrite/emit.js';
import {
  derivedName, isSkip, skip, type Applied, type BoundPass, type Challenge, type Cost, type LayerPass, type MatchBase, type PassContext, type Skip,
} from '../src/rewrite/pass.js';
import { cpEnergyRank, cpRanks } from '../src/rewrite/cp-rank.js';
import { degenerateReason, SENSITIVITY_LIMIT, stableCpFlops, type CpSensitivity, type Stabilized } from '../src/linalg/cp-sensitivity.js';
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
  /** Each group's kernel as [T/g, S/g, K]. */
  groups: GroupKernel[];
  spectra?: ConvTucker2Match['spectra'];
  /** The last factorization, reused by apply when the rank matches. */
  fitted?: CpFactors;
  /** Patch statistics (per group) for the whitening and the least-squares refit of the last factor. */
  patches?: PatchBlocks;
  /** Input-channel Gram blocks (per group): whiten mode S when there are no patch statistics. */
  channelGram?: Float64Array[];
  /** Rows (input positions) behind the statistics. */
  samples: number;
  /** Anchored patch covariances (per group), when the statistics carry them. */
  anchor?: AnchoredPatch[];
  /** Cholesky factors of each group's Kronecker whitening, computed on first use (null: none). */
  whitening?: ({ ls: Matrix; lk?: Matrix } | undefined)[] | null;
  /** Where chooseRanks's weight-only fits (the energy search) draw and multiply. */
  search: { rng: Rng; gemm?: SyncGemm };
  /** Weight-only fits by rank, made by the energy search (shared across its policies). */
  weightFits?: Map<number, CpFactors>;
  /** Relative error² of every weight-only fit the energy search made (failed fits: NaN), by rank. */
  weightErr2?: Map<number, number>;
}

/** A fit (rank: as fitted) and the rank it was asked for. */
interface CpFactors extends CpConvGroups {
  requested: number;
  /** True when the CP was fitted to the whitened kernel (data-aware). */
  whitened?: boolean;
}


/** Iteration budget and tolerance of the ALS fit. */
export const ALS = { maxIter: 50, tol: 1e-5 };

/**
 * Why CP's win on a grouped conv under auto is timed against Tucker-2 where latency counts
 * (challengeCp). Measured with conv-cp4's CP4_SLOW_PATH bench (ORT-node, 1 thread, 3x3
 * convs of 64–256 channels at 14²–56², CP at the params and MACs of Tucker-2 [r, r],
 * r = C/8 … C/2, group 1).
 */
export const GROUPED_CP_SLOW_PATH = 'measured 1.00–1.73x (median 1.11x) the time of Tucker-2 at equal params and MACs';

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
    if (isPointwise(geo)) {
      return skip(geo.group === 1 ? '1x1 kernel: a matrix, conv1x1-svd handles it' : `1x1 kernel: a matrix per group (group ${geo.group}), conv-tucker2 handles it`);
    }
    const w = finiteWeight(layer, cx);
    if (isSkip(w)) return w;
    return {
      layer, node: n, graph: layer.graph, dataType, geo, w, groups: groupKernels(w, geo),
      patches: patchBlocks(cx, layer.name, geo), channelGram: channelBlocks(cx, layer.name, geo),
      samples: cx.stats?.get(layer.name)?.count ?? 0, anchor: anchoredPatches(cx, layer.name, geo),
      search: { rng: cx.rng, gemm: cx.gemm },
    };
  },

  /**
   * Ranks are per group (s = S/g, t = T/g).
   * fixed r → R = r; ratio ρ → R = ⌊ρ·T·s·K / (S + T + g·K)⌋ (CP params R(S + T + g·K));
   * energy e → the smallest R (to within 1/16) whose weight-only CP has relative
   * error² ≤ 1 − e, searched over CP-ALS fits from max(R1, R2), the Tucker-2 energy ranks of the
   * channel unfoldings (a CP of rank R has Tucker-2 ranks ≤ R, so by Eckart–Young no
   * smaller CP meets e), up to the break-even rank; declined when no CP that pays meets e.
   * vbmf has no CP spectrum to read: R = max(R1, R2) of the EVBMF Tucker-2 ranks.
   */
  rankLimits: (m: ConvCpMatch): number[] => [cpLimit(m.geo)],

  chooseRanks(m: ConvCpMatch, policy: RankPolicy): number[] | Skip {
    const { T, S, group: g, kernelSize: K } = m.geo;
    // Beyond the generic rank a CP is always exact: no point in more.
    return cpRanks(policy, { T, S: S / g, K, perRank: S + T + g * K, limit: cpLimit(m.geo), tucker2: (p) => tucker2RawRanks(m, p), energyRank: (e, lo) => energyCpRank(m, e, lo) });
  },

  cost: (m, ranks) => ({ before: convCost(m.geo), after: cpGroupCost(m.geo, ranks[0]!) }),

  // Per group: the ALS and its refit under the sensitivity bound (stableCpFlops), the last factor's fit on statistics and the data sweeps.
  fitWork(m: ConvCpMatch, ranks: readonly number[]): number {
    const { T, S, group: G, kernelSize: K } = m.geo;
    const R = Math.min(ranks[0]!, cpLimit(m.geo));
    const [t, s] = [T / G, S / G];
    const sweeps = m.patches || m.anchor ? cpDataSweepFlops(t, s, K, R, cpDataSweepCount(t, s, K, R, G), CP_DATA_CG_ITERATIONS) : 0;
    const stats = m.patches || m.anchor ? lastFactorFlops(R, s * K) : 0;
    return G * (stableCpFlops([t, s, K], R, ALS.maxIter) + stats + sweeps);
  },

  estimate(m: ConvCpMatch, ranks: readonly number[], cx: PassContext): { relError: number; dataError?: number } | Skip {
    const f = factorizeCp(m, ranks[0], cx);
    return isSkip(f) ? f : { relError: f.relError, dataError: f.dataError };
  },

  apply(m: ConvCpMatch, ranks: readonly number[], cx: PassContext): Applied | Skip {
    const { node: n, graph: g, geo } = m;
    const { T, S, group: G } = geo;
    const f = factorizeCp(m, ranks[0]!, cx, !cx.quickFits);
    if (isSkip(f)) return f;
    const quick = quickDegenerate(f, cx);
    if (quick) return quick;
    const { rank: R, first, depth, last, relError } = f;
    const bias = correctedBias(cx, m, f.biasDelta);
    if (isSkip(bias)) return bias;
    const ones = new Array<number>(geo.spatial).fill(1);
    const nameB = derivedName(cx, n, 'lr_cp_s');
    const nameC = derivedName(cx, n, 'lr_cp_k');
    const nameA = derivedName(cx, n, 'lr_cp_t');
    g.addInitializer(makeFloatTensor(nameB, [G * R, S / G, ...ones], first, m.dataType));
    g.addInitializer(makeFloatTensor(nameC, [G * R, 1, ...geo.kernel], depth, m.dataType));
    g.addInitializer(makeFloatTensor(nameA, [T, R, ...ones], last, m.dataType));
    const z1 = derivedName(cx, n, 'lr_z1');
    const z2 = derivedName(cx, n, 'lr_z2');
    const fitNote = (f.converged ? '' : `, ALS stopped at ${f.iterations} iterations before converging`)
      + (f.whitened ? ', data-aware (Kronecker-whitened) input factors' : '')
      + (m.anchor ? ', last factor fitted to the original outputs (anchored)' : m.patches ? ', last factor refitted on calibration patches' : '')
      + (f.dataSweeps ? `, all three factors refined on them (${f.dataSweeps} ALS sweeps)` : '');
    const per = G > 1 ? ` per group (${G} groups)` : '';
    const note = sensitivityNote(f);
    const doc = docString('conv-cp', `rank ${R}${per} of ${T}x${S}x${geo.kernel.join('x')} (weight rel. error ${relError.toExponential(2)}${fitNote}; ${note})`);
    const nodes = [
      convNode(derivedName(cx, n, 'lr_a'), n.input[0], nameB, z1, chainConvAttrs(ones, G), undefined, doc),
      convNode(derivedName(cx, n, 'lr_b'), z1, nameC, z2, chainConvAttrs(geo.kernel, G * R, placementAttrs(n)), undefined, doc),
      convNode(derivedName(cx, n, 'lr_c'), z2, nameA, n.output[0], chainConvAttrs(ones, G), bias, doc),
    ];
    g.replaceNode(n, nodes);
    return { relError, dataError: f.dataError, nodes: nodes.map((x) => x.name!), note };
  },
};

/**
 * --method auto on a kxk conv: the preferred pass (Tucker-2) unless a CP chain with no
 * more parameters (and no more MACs) reconstructs the weight (with calibration data: the
 * layer's output) at least as well. CP chains run faster in ORT at equal rank (depthwise
 * core), so equal error at equal size favours CP (at equal params and MACs, though, the
 * issue-19 bench measured CP at 1.00–1.73x Tucker-2's time, median 1.11x: see
 * GROUPED_CP_SLOW_PATH; the group-1 rule is kept as it was). The CP competes at the largest rank of
 * that size, except under a fixed rank policy (--rank N), where it competes at rank N
 * (aligned) as --method cp would write it, when that chain is no larger. A CP rank search
 * costs several CP-ALS fits, so it does not take the policy when Tucker-2 does not pay.
 */
export function challengeCp(layer: LayerInfo, preferred: BoundPass, ranksT: readonly number[], cx: PassContext, policy?: RankPolicy): Challenge | undefined {
  const mc = convCp.match(layer, cx);
  if (isSkip(mc)) return undefined;
  // A patch has (S/g)·K values. The comparison costs a CP-ALS fit (fitWork): at rank 760 on a
  // 512x256x3x3 kernel that took minutes, so past COMPARE_WORK it is not made by default.
  // On a grouped conv the CP is new (per group): its depthwise conv runs on g·R channels,
  // and CP chains measured slower than Tucker-2 at equal params and MACs in ORT (median
  // 1.11x at group 1, the bench of conv-cp4's CP4_SLOW_PATH), so on grouped convs a win is
  // timed against Tucker-2 where latency counts; group 1 keeps the rule auto had.
  const slowPath = mc.geo.group > 1 ? GROUPED_CP_SLOW_PATH : undefined;
  const spec = {
    pass: convCp, match: mc, limit: convCp.rankLimits(mc)[0]!, patchDim: (mc.geo.S / mc.geo.group) * mc.geo.kernelSize, fixedRank: true, slowPath,
    rough: (ranks: number[]) => factorizeCp(mc, ranks[0]!, cx, false),
  };
  return challengeAtEqualCost(layer, spec, preferred, ranksT, cx, policy);
}

/**
 * The smallest CP rank in [lo, break-even] (to within a tolerance) whose weight-only fit leaves at most 1 − energy
 * of ‖W‖² (rewrite/cp-rank.ts), or why none does. The fit at the answer serves apply
 * when the layer has no statistics.
 */
function energyCpRank(m: ConvCpMatch, energy: number, lo: number): number | Skip {
  const { T, S, group: G, kernelSize: K } = m.geo;
  const limit = cpLimit(m.geo);
  const dense = convCost(m.geo).params;
  let even = 0;
  for (let a = 1, b = limit; a <= b;) {
    const mid = (a + b) >> 1;
    if (cpGroupCost(m.geo, mid).params < dense) { even = mid; a = mid + 1; } else b = mid - 1;
  }
  const fits = (m.weightFits ??= new Map());
  const fit = (r: number): CpFactors => ({ ...cpConvGroups({ data: m.w, shape: [T, S / G, K], groups: G }, r, { rng: m.search.rng, gemm: m.search.gemm, maxIter: ALS.maxIter, tol: ALS.tol }), requested: r });
  const r = cpEnergyRank({ limit, even, fit, fits, err2: (m.weightErr2 ??= new Map()), words: ['CP rank', 'CP rank'] }, energy, lo);
  // Weight-only fits are what apply makes without statistics: keep the one chosen.
  if (!isSkip(r) && !m.patches && !m.channelGram && !m.anchor) m.fitted = fits.get(r);
  return r;
}

/** The CP at rank `rank` (linalg/cp-conv.ts) with the match's statistics; cached on the match. */
function factorizeCp(m: ConvCpMatch, rank: number, cx: PassContext, stable = true): CpFactors | Skip {
  if (!isRank(rank)) return skip(notARank(rank));
  if (stable && m.fitted?.requested === rank) return shippable(m.fitted);
  const { T, S, group: G, kernelSize: K } = m.geo;
  const s = S / G;
  // Without statistics the weight itself is fitted (weight-only behaviour unchanged). A
  // covariance estimated from fewer rows than about twice its dimension is rank-deficient
  // and the whitened fit overfits the calibration set (seen on PP-OCRv4 rec's 1x3 convs
  // at 640 rows for 1440 patch dims): then whiten by what is well determined, or not at all.
  if (m.whitening === undefined) {
    const usePatch = !!m.patches && m.samples >= MIN_ROWS_PER_DIM * s * K;
    const useChannel = !usePatch && !!m.channelGram && m.samples >= MIN_ROWS_PER_DIM * s;
    const per = Array.from({ length: G }, (_, j) => {
      const patch = usePatch ? m.anchor?.[j]?.gramHat ?? m.patches!.gram[j] : undefined;
      const channel = useChannel ? m.channelGram![j] : undefined;
      return patch || channel ? kroneckerWhitening(s, K, patch, channel) : undefined;
    });
    // Groups are independent CPs: a group whose statistics give no whitening is fitted to its weight.
    m.whitening = per.some((x) => x) ? per : null;
  }
  const f = cpConvGroups({ data: m.w, shape: [T, s, K], groups: G }, rank, {
    rng: cx.rng, gemm: cx.gemm, maxIter: ALS.maxIter, tol: ALS.tol, whitening: m.whitening ?? undefined,
    anchor: m.anchor && { patch: m.anchor, damp: ANCHOR_PATCH_DAMP },
    patches: m.patches && m.patches.gram.map((gram, j) => ({ gram, mean: m.patches!.mean?.[j] })), stable,
  });
  if (!Number.isFinite(f.alsError)) return skip('CP-ALS produced a non-finite fit');
  if (!Number.isFinite(f.relError)) return skip('CP factorization produced non-finite values');
  const fitted = { ...f, requested: rank, whitened: m.whitening ? true : undefined };
  // A rough fit (no refit under the sensitivity bound: the shrink search) is never shipped.
  if (stable) m.fitted = fitted;
  return stable ? shippable(fitted) : fitted;
}

/**
 * A quick fit (sensitivity's rival rungs: no refit under the sensitivity bound) whose terms
 * cancel is not offered: built for real it would be refitted (another error than the one
 * measured) or declined, so a budget must not pick it (conv-cp4 too).
 */
export function quickDegenerate(f: { rank: number; sensitivity?: CpSensitivity }, cx: PassContext): Skip | undefined {
  const ratio = f.sensitivity?.ratio;
  if (!cx.quickFits || ratio === undefined || !(ratio > SENSITIVITY_LIMIT)) return undefined;
  return skip(`degenerate CP at rank ${f.rank} (quick fit, sensitivity ratio ${ratio.toFixed(2)} > ${SENSITIVITY_LIMIT}): not offered, as the fit built would differ or be declined`);
}

/** A fit refitted under the sensitivity bound that still did not meet it is declined: no degenerate CP is shipped (conv-cp4 too). */
export function shippable<F extends { rank: number; stabilized?: Stabilized }>(f: F): F | Skip {
  const why = degenerateReason(f.rank, f.stabilized);
  return why ? skip(why) : f;
}

/** A CP of a [T/g, S/g, K] group is exact at rank t·s·K / max(t, s, K) (its generic rank bound). */
function cpLimit(geo: ConvGeometry): number {
  return cpRankBound([geo.T / geo.group, geo.S / geo.group, geo.kernelSize]);
}

/**
 * CP chain with per-group rank R: 1x1 [g·R, S/g] at the input resolution (R·S) →
 * depthwise [g·R, 1, k…] (g·R·K) → 1x1 [T, R] (T·R). With g = 1: cpCost.
 */
export function cpGroupCost(geo: ConvGeometry, r: number): Cost {
  const g = geo.group;
  return chainCost(geo, [
    { params: r * geo.S, macs: r * geo.S, atInput: true },
    { params: g * r * geo.kernelSize, macs: g * r * geo.kernelSize, atInput: false },
    { params: geo.T * r, macs: geo.T * r, atInput: false },
  ]);
}

/** A CP fit's sensitivity for the doc string and the layer's note (and the refit, ratio and fit error before → after, when there was one); conv-cp4's too. */
export function sensitivityNote(f: { sensitivity?: CpSensitivity; stabilized?: Stabilized }): string {
  const ss = f.sensitivity;
  let out = ss ? `CP sensitivity ss ${ss.ss.toExponential(2)} (ratio ${ss.ratio.toFixed(2)} to a non-cancelling CP's)` : 'CP sensitivity not computed';
  const st = f.stabilized;
  if (st) {
    out += `; degenerate ALS fit refitted under the sensitivity bound: ratio ${st.ratioBefore.toFixed(2)} → ${st.ratioAfter.toFixed(2)} (limit ${st.limit})`
      + `, fit error ${st.errorBefore.toExponential(2)} → ${st.errorAfter.toExponential(2)}`;
  }
  return out;
}
