/**
 * conv-cp4 — a 2-D Conv becomes 1x1 → depthwise kh×1 → depthwise 1×kw → 1x1 through a
 * rank-R 4-way CP decomposition of its kernel, fitted by ALS (Lebedev et al. 2015):
 * W[t, s, y, x] ≈ Σ_r A[t, r]·B[s, r]·Y[y, r]·X[x, r].
 *
 * Before: Y = Conv(X, W [T, S, kh, kw], b; strides [sh, sw], pads [ph0, pw0, ph1, pw1],
 *                  dilations [dh, dw], auto_pad)
 * After:  Z1 = Conv(X,  Bᵀ [R, S, 1, 1])
 *         Z2 = Conv(Z1, Yᵀ [R, 1, kh, 1]; group R, strides [sh, 1], pads [ph0, 0, ph1, 0], dilations [dh, 1], auto_pad)
 *         Z3 = Conv(Z2, Xᵀ [R, 1, 1, kw]; group R, strides [1, sw], pads [0, pw0, 0, pw1], dilations [1, dw], auto_pad)
 *         Y  = Conv(Z3, A  [T, R, 1, 1], b)
 * The window is split by axis as in conv-spatial-svd and conv-tt (no bias before the last
 * conv, so zero padding commutes through the chain; under auto_pad SAME_* each axis pads
 * by its own kernel, stride and dilation). Depthwise kernels other than 3×3 can be slow
 * paths in some runtimes: the latency screen judges each chain.
 * 2-D, group-1 convs with kh, kw > 1 only (1-D/3-D, 1xk/kx1, 1x1, depthwise and grouped
 * convs are declined with the reason; conv-cp handles the 3-way CP of any of its convs).
 *
 * The factorization is linalg/cp4-conv.ts (CP-ALS with the norm bound of cp-als.ts; a fit
 * that is not finite is declined; a degenerate one is refitted under the sensitivity bound,
 * and the chain's sensitivity goes into the doc string and the layer's note, as in conv-cp).
 * With well-determined calibration patch statistics the
 * last factor is refitted on them (anchored statistics: fitted to the original model's
 * outputs given the partly compressed model's patches) and the mean error moved into the
 * bias; the first three factors stay weight-only (no whitening yet).
 */
import { intAttr, intsAttr } from '../src/graph/attrs.js';
import type { LayerInfo } from '../src/graph/layers.js';
import { isRank, notARank } from '../src/linalg/checks.js';
import { cp4Conv, cp4Error, cp4Kernel, cp4Prefix, cp4Sensitivity, type Cp4Conv } from '../src/linalg/cp4-conv.js';
import { fitLastFactor } from '../src/linalg/last-factor.js';
import type { SyncGemm } from '../src/linalg/engine.js';
import { cpEnergyRank, cpRanks } from '../src/rewrite/cp-rank.js';
import type { NodeProto } from '../src/onnx/schema.js';
import { makeFloatTensor } from '../src/onnx/tensor.js';
import {
  chainConvAttrs, convCost, convNode, groupKernels, type ConvGeometry, type GroupKernel,
} from '../src/rewrite/conv-geometry.js';
import { ANCHOR_PATCH_DAMP } from '../src/rewrite/conv-stats.js';
import { acceptsUnless, chainMismatch, matchSplitConv, splitDeclines, type SplitConvMatch } from '../src/rewrite/conv-split.js';
import { docString } from '../src/rewrite/emit.js';
import {
  derivedName, isSkip, skip, type Applied, type ChainFactor, type Cost, type FactoredLayer, type LayerPass, type PassContext, type Skip,
} from '../src/rewrite/pass.js';
import type { RankPolicy } from '../src/rewrite/rank-policy.js';
import type { Rng } from '../src/util/rng.js';
import { MIN_ROWS_PER_DIM } from '../src/rewrite/conv-stats.js';
import { splitPlacement } from './conv-spatial-svd.js';
import { correctedBias, tucker2RawRanks, type ConvTucker2Match } from './conv-tucker2.js';
import { sensitivityNote } from './conv-cp.js';
import { challengeAtEqualCost } from '../src/rewrite/challenge.js';

export interface ConvCp4Match extends SplitConvMatch {
  /** One group (group 1): for the Tucker-2 channel ranks that bound the CP rank from below. */
  groups: GroupKernel[];
  spectra?: ConvTucker2Match['spectra'];
  /** The last factorization, reused by apply when the rank matches. */
  fitted?: Cp4Factors;
  /** Weight-only fits by rank, made by the energy search. */
  weightFits?: Map<number, Cp4Factors>;
  /** Relative error² of every weight-only fit the energy search made (failed fits: NaN), by rank. */
  weightErr2?: Map<number, number>;
  /** Where chooseRanks's weight-only fits (the energy search) draw and multiply. */
  search: { rng: Rng; gemm?: SyncGemm };
}

/** A fit (last factor possibly fitted on patch statistics) and the rank it was asked for. */
interface Cp4Factors extends Cp4Conv {
  requested: number;
  dataError?: number;
  biasDelta?: Float64Array;
  anchored?: boolean;
}

/** Rank × weight size past which auto does not fit this chain to compare it (as conv-cp's MAX_CP_COMPARE_WORK). */
const MAX_COMPARE_WORK = 5e7;

/**
 * Why CP-4 does not compete under auto when the run saves latency. Measured in ORT-node
 * 1.x, 1 thread, graph optimisation 'all' (as the latency screen times layers), 60
 * round-robin runs of each chain on random weights, twice: against Tucker-2 [r, r]
 * (r = C/8, C/4, C/2) at equal params and MACs on 3x3 convs of 64–256 channels at
 * 14²–56², CP-4 took 0.95–1.68x Tucker-2's time (median 1.17x; 1.3–1.4x at r = C/2, where
 * its depthwise convs run on ~3C channels). So equal MACs is not equal time.
 */
export const CP4_SLOW_PATH = 'measured 0.95–1.68x (median 1.17x) the time of Tucker-2 at equal params and MACs in ORT; compared under --save params or macs';

/** Iteration budget and tolerance of the ALS fit (as conv-cp). */
const ALS = { maxIter: 50, tol: 1e-5 };

/** Why a conv is not for this pass, from attributes and shapes only (no weight read). */
const declines = splitDeclines('conv-cp handles it', 'one depthwise conv is enough, conv-cp handles it', true);

/** A CP of a T×S×kh×kw tensor is exact at rank T·S·kh·kw / max(T, S, kh, kw). */
const cpLimit = (geo: ConvGeometry): number => (geo.T * geo.S * geo.kernelSize) / Math.max(geo.T, geo.S, ...geo.kernel);

export const convCp4: LayerPass<ConvCp4Match, 'cp4'> = {
  name: 'conv-cp4',
  method: 'cp4',
  ops: ['Conv'],
  // Below every other conv pass: routed last; under auto it challenges the choice so far at equal cost (`challenge`).
  benefit: -3,
  slowPath: CP4_SLOW_PATH,

  accepts: acceptsUnless(declines),

  compose(chain: readonly NodeProto[], factors: readonly ChainFactor[], f: FactoredLayer, ext): Float32Array | string {
    const bad = chainMismatch(chain, factors, f.weightDims, ([T, S, kh, kw], [R]) => [[R!, S, 1, 1], [R!, 1, kh, 1], [R!, 1, 1, kw], [T, R!, 1, 1]]);
    if (bad) return bad;
    const [T, S, kh, kw] = f.weightDims as [number, number, number, number];
    const [a, b, c, d] = factors as [ChainFactor, ChainFactor, ChainFactor, ChainFactor];
    return cp4Kernel(a.read(ext), b.read(ext), c.read(ext), d.read(ext), T, S, kh, kw, a.dims[0]!);
  },

  match(layer: LayerInfo, cx: PassContext): ConvCp4Match | Skip {
    const m = matchSplitConv(layer, cx, declines, '4-way CP');
    return isSkip(m) ? m : { ...m, groups: groupKernels(m.w, m.geo), search: { rng: cx.rng, gemm: cx.gemm } };
  },

  rankLimits: (m) => [cpLimit(m.geo)],

  /**
   * fixed r → R = r; ratio ρ → ⌊ρ·T·S·kh·kw / (S + T + kh + kw)⌋ (params R(S + T + kh + kw));
   * energy e → the smallest R (to within 1/16) whose weight-only CP has relative
   * error² ≤ 1 − e, searched over ALS fits from max(R1, R2) (the Tucker-2 energy ranks of the channel unfoldings: a
   * lower bound) up to break-even, declined when none meets e; vbmf → max(R1, R2) of the
   * EVBMF Tucker-2 ranks. Clamped to the exact rank, aligned.
   */
  chooseRanks(m: ConvCp4Match, policy: RankPolicy): number[] | Skip {
    const { T, S, kernelSize: K } = m.geo;
    return cpRanks(policy, { T, S, K, perRank: S + T + m.kh + m.kw, limit: cpLimit(m.geo), tucker2: (p) => tucker2RawRanks(m, p), energyRank: (e, lo) => energyRank(m, e, lo) });
  },

  cost: (m, ranks) => ({ before: convCost(m.geo), after: cp4Cost(m.geo, ranks[0]!) }),

  // Under auto: at the largest rank no larger and no costlier than the choice so far, by
  // error, when the run saves params or MACs (CP4_SLOW_PATH: not when latency counts).
  challenge(layer, preferred, ranks, cx, policy?: RankPolicy) {
    const m = convCp4.match(layer, cx);
    if (isSkip(m)) return undefined;
    const spec = {
      pass: convCp4, match: m, limit: cpLimit(m.geo), patchDim: m.geo.S * m.kh * m.kw, maxWork: MAX_COMPARE_WORK, fixedRank: true, slowPath: CP4_SLOW_PATH,
      rough: (ranks: number[]) => factorize(m, ranks[0]!, cx, false),
    };
    return challengeAtEqualCost(layer, spec, preferred, ranks, cx, policy);
  },

  estimate(m: ConvCp4Match, ranks: readonly number[], cx: PassContext): { relError: number; dataError?: number } | Skip {
    const f = factorize(m, ranks[0]!, cx);
    return isSkip(f) ? f : { relError: f.relError, dataError: f.dataError };
  },

  apply(m: ConvCp4Match, ranks: readonly number[], cx: PassContext): Applied | Skip {
    const { node: n, graph: g, geo, kh, kw } = m;
    const f = factorize(m, ranks[0]!, cx, !cx.quickFits);
    if (isSkip(f)) return f;
    const bias = correctedBias(cx, m, f.biasDelta);
    if (isSkip(bias)) return bias;
    const R = f.rank;
    const names = ['lr_cp4_s', 'lr_cp4_y', 'lr_cp4_x', 'lr_cp4_t'].map((s) => derivedName(cx, n, s)) as [string, string, string, string];
    g.addInitializer(makeFloatTensor(names[0], [R, geo.S, 1, 1], f.first, m.dataType));
    g.addInitializer(makeFloatTensor(names[1], [R, 1, kh, 1], f.rows, m.dataType));
    g.addInitializer(makeFloatTensor(names[2], [R, 1, 1, kw], f.cols, m.dataType));
    g.addInitializer(makeFloatTensor(names[3], [geo.T, R, 1, 1], f.last, m.dataType));
    const [z1, z2, z3] = ['lr_z1', 'lr_z2', 'lr_z3'].map((s) => derivedName(cx, n, s)) as [string, string, string];
    const fitNote = (f.converged ? '' : `, ALS stopped at ${f.iterations} iterations before converging`)
      + (f.dataError === undefined ? '' : f.anchored ? ', last factor fitted to the original outputs (anchored)' : ', last factor refitted on calibration patches');
    const note = sensitivityNote(f);
    const doc = docString('conv-cp4', `rank ${R} of ${geo.T}x${geo.S}x${kh}x${kw} (weight rel. error ${f.relError.toExponential(2)}${fitNote}; ${note})`);
    const [first, second] = splitPlacement(n);
    const depthwise = (kernel: number[]) => [intsAttr('kernel_shape', kernel), intAttr('group', R)];
    const nodes = [
      convNode(derivedName(cx, n, 'lr_a'), n.input[0]!, names[0], z1, chainConvAttrs([1, 1], 1), undefined, doc),
      convNode(derivedName(cx, n, 'lr_b'), z1, names[1], z2, [...first, ...depthwise([kh, 1])], undefined, doc),
      convNode(derivedName(cx, n, 'lr_c'), z2, names[2], z3, [...second, ...depthwise([1, kw])], undefined, doc),
      convNode(derivedName(cx, n, 'lr_d'), z3, names[3], n.output[0]!, chainConvAttrs([1, 1], 1), bias, doc),
    ];
    g.replaceNode(n, nodes);
    return { relError: f.relError, dataError: f.dataError, nodes: nodes.map((x) => x.name!), note };
  },
};

/**
 * Params R·(S + kh + kw + T). MACs per output position: the first 1x1 at the input
 * resolution (∏strides), the kh×1 depthwise conv at every input column of the output rows
 * (sw), the rest at the output.
 */
export function cp4Cost(geo: ConvGeometry, r: number): Cost {
  const [kh, kw] = geo.kernel as [number, number];
  return {
    params: r * (geo.S + kh + kw + geo.T),
    macsPerPosition: r * geo.S * geo.strideFactor + r * kh * geo.strides[1]! + r * kw + geo.T * r,
  };
}

/** The smallest rank in [lo, break-even] (to within a tolerance: rewrite/cp-rank.ts) whose weight-only fit keeps `energy` of ‖W‖², or why none does. */
function energyRank(m: ConvCp4Match, energy: number, lo: number): number | Skip {
  const limit = cpLimit(m.geo);
  const dense = convCost(m.geo).params;
  const per = m.geo.S + m.kh + m.kw + m.geo.T;
  const even = Math.min(limit, Math.ceil(dense / per) - 1);
  const fits = (m.weightFits ??= new Map());
  const fit = (r: number): Cp4Factors => ({ ...fitCp4(m, r, m.search.rng, m.search.gemm), requested: r });
  const r = cpEnergyRank({ limit, even, fit, fits, err2: (m.weightErr2 ??= new Map()), words: ['4-way CP rank', 'rank'] }, energy, lo);
  if (!isSkip(r) && !m.anchor && !wellDetermined(m)) m.fitted = fits.get(r);
  return r;
}

/** Patch statistics well determined (about two rows per dimension at least): else a refit overfits them. */
function wellDetermined(m: ConvCp4Match): { gram: Float64Array; mean?: Float64Array } | undefined {
  return m.patches && m.samples >= MIN_ROWS_PER_DIM * m.geo.S * m.geo.kernelSize ? { gram: m.patches.gram[0]!, mean: m.patches.mean?.[0] } : undefined;
}

function fitCp4(m: ConvCp4Match, rank: number, rng: Rng, gemm: SyncGemm | undefined, stable = true): Cp4Conv {
  return cp4Conv({ data: m.w, shape: [m.geo.T, m.geo.S, m.kh, m.kw] }, rank, { rng, gemm, maxIter: ALS.maxIter, tol: ALS.tol, stable });
}

/** The CP at `rank` (linalg/cp4-conv.ts), refitted on well-determined patch statistics; cached on the match. */
function factorize(m: ConvCp4Match, rank: number, cx: PassContext, stable = true): Cp4Factors | Skip {
  if (!isRank(rank)) return skip(notARank(rank));
  if (stable && m.fitted?.requested === rank) return m.fitted;
  let f: Cp4Factors;
  try {
    f = { ...fitCp4(m, rank, cx.rng, cx.gemm, stable), requested: rank };
  } catch (e) {
    return skip(`4-way CP failed: ${(e as Error).message}`);
  }
  if (!Number.isFinite(f.alsError)) return skip('CP-ALS produced a non-finite fit');
  if (!Number.isFinite(f.relError)) return skip('4-way CP produced non-finite values');
  const { T, S } = m.geo;
  const { kh, kw } = m;
  const patches = wellDetermined(m);
  if (m.anchor || patches) {
    const h = cp4Prefix(f.first, f.rows, f.cols, S, kh, kw, f.rank);
    const lf = fitLastFactor({ rows: T, cols: S * kh * kw, data: Float64Array.from(m.w) }, h, { anchor: m.anchor && { patch: m.anchor, damp: ANCHOR_PATCH_DAMP }, patches }, cx.gemm)!;
    const last = Float32Array.from(lf.last);
    f = {
      ...f, last, relError: cp4Error(m.w, f.first, f.rows, f.cols, last, T, S, kh, kw, f.rank), dataError: lf.dataError, biasDelta: lf.biasDelta, anchored: lf.anchored,
      sensitivity: cp4Sensitivity(f.first, f.rows, f.cols, last, T, S, kh, kw, f.rank),
    };
    if (!Number.isFinite(f.relError) || !Number.isFinite(lf.dataError)) return skip('4-way CP last-factor fit on calibration patches produced non-finite values');
  }
  // A rough fit (no refit under the sensitivity bound: the shrink search) is never shipped.
  if (stable) m.fitted = f;
  return f;
}
