/**
 * conv-tt — a 2-D Conv becomes 1x1 → kh×1 → 1×kw → 1x1 through a Tensor-Train
 * decomposition of its kernel in the order (s, y, x, t), by TT-SVD (Oseledets 2011):
 * W[t, s, y, x] ≈ Σ C[s, r1]·Y[r1, y, r2]·X[r2, x, r3]·Tf[r3, t].
 *
 * Before: Y = Conv(X, W [T, S, kh, kw], b; strides [sh, sw], pads [ph0, pw0, ph1, pw1],
 *                  dilations [dh, dw], auto_pad)
 * After:  Z1 = Conv(X,  Cᵀ [R1, S, 1, 1])
 *         Z2 = Conv(Z1, Y  [R2, R1, kh, 1]; strides [sh, 1], pads [ph0, 0, ph1, 0], dilations [dh, 1], auto_pad)
 *         Z3 = Conv(Z2, X  [R3, R2, 1, kw]; strides [1, sw], pads [0, pw0, 0, pw1], dilations [1, dw], auto_pad)
 *         Y  = Conv(Z3, Tfᵀ [T, R3, 1, 1], b)
 * Exact at full ranks: the kh×1 conv runs axis 0's window at every column, the 1×kw conv
 * axis 1's. No conv but the last has a bias, so a zero-padded input stays zero through the
 * chain and padding Z1 or Z2 equals padding X. Under auto_pad SAME_* each axis is padded
 * by its own kernel, stride and dilation; an axis with kernel 1, stride 1 and dilation 1
 * gets no padding, so the original auto_pad on both spatial convs gives the original
 * per-axis pads (as for conv-spatial-svd, whose split this reuses).
 * 2-D, group-1 convs with kh, kw > 1 only: 1-D/3-D, 1xk/kx1, 1x1, depthwise and grouped
 * convs are declined with the reason.
 *
 * The factorization is linalg/tt.ts (three sequential truncated SVDs; the weight error is
 * exactly the energy they discard). With calibration patch statistics (well determined:
 * at least MIN_ROWS_PER_DIM rows per patch dimension) the last factor is refitted on them
 * by least squares (anchored statistics: fitted to the original model's outputs given the
 * partly compressed model's patches) and the mean error moved into the bias; the first
 * three factors stay weight-only (no whitened TT-SVD yet).
 */
import type { LayerInfo } from '../src/graph/layers.js';
import { isRank, notARank } from '../src/linalg/checks.js';
import { alignRank, partialEnergyRank } from '../src/linalg/rank.js';
import { fitLastFactor } from '../src/linalg/last-factor.js';
import { ttKernel, ttPrefix, ttSpectra, ttSvd, type TtConv } from '../src/linalg/tt.js';
import type { NodeProto } from '../src/onnx/schema.js';
import { intsAttr } from '../src/graph/attrs.js';
import { makeFloatTensor } from '../src/onnx/tensor.js';
import {
  chainConvAttrs, convCost, convNode, type ConvGeometry,
} from '../src/rewrite/conv-geometry.js';
import { ANCHOR_PATCH_DAMP } from '../src/rewrite/conv-stats.js';
import { acceptsUnless, chainMismatch, matchSplitConv, splitDeclines, type SplitConvMatch } from '../src/rewrite/conv-split.js';
import { docString } from '../src/rewrite/emit.js';
import {
  derivedName, isSkip, skip, type Applied, type ChainFactor, type Cost, type FactoredLayer, type LayerPass, type PassContext, type Skip,
} from '../src/rewrite/pass.js';
import { vbmfRank, type RankPolicy } from '../src/rewrite/rank-policy.js';
import { MIN_ROWS_PER_DIM } from '../src/rewrite/conv-stats.js';
import { splitPlacement } from './conv-spatial-svd.js';
import { correctedBias } from './conv-tucker2.js';
import { challengeAtEqualCost } from '../src/rewrite/challenge.js';

/** Largest rank k × weight size auto fits this chain at to compare it (as conv-cp's MAX_CP_COMPARE_WORK). */
const MAX_COMPARE_WORK = 5e7;

/**
 * Why TT does not compete under auto when the run saves latency. Measured as conv-cp4's
 * CP4_SLOW_PATH (ORT-node, 1 thread, 3x3 convs of 64–256 channels at 14²–56², equal params
 * and MACs as Tucker-2 [r, r], r = C/8 … C/2): TT [k, k, k] took 0.90–1.75x Tucker-2's time
 * (median 1.11x): four convs where Tucker-2 has three, at the same MACs.
 */
export const TT_SLOW_PATH = 'measured 0.90–1.75x (median 1.11x) the time of Tucker-2 at equal params and MACs in ORT; compared under --save params or macs';

type Ranks3 = [number, number, number];

export interface ConvTtMatch extends SplitConvMatch {
  /** Spectra of the three TT unfoldings [S, kh·kw·T], [S·kh, kw·T], [S·kh·kw, T], computed on first use. */
  spectra?: { sigma: Float64Array; total: number }[];
  /** The last factorization, reused by apply when the ranks match. */
  fitted?: TtFit;
}

/** A TT (last factor possibly fitted on patch statistics) and the ranks it was asked for. */
interface TtFit extends TtConv {
  key: string;
  dataError?: number;
  biasDelta?: Float64Array;
  anchored?: boolean;
}

/** Why a conv is not for this pass, from attributes and shapes only (no weight read). */
const declines = splitDeclines('the train splits the two axes of a 2-D kernel', 'one spatial conv is enough, conv-tucker2 handles it', true);

/** Largest useful rank of each step: [min(S, kh·kw·T), min(S·kh, kw·T), min(S·kh·kw, T)]. */
function limits(m: { geo: ConvGeometry; kh: number; kw: number }): Ranks3 {
  const { S, T } = m.geo;
  const { kh, kw } = m;
  return [Math.min(S, kh * kw * T), Math.min(S * kh, kw * T), Math.min(S * kh * kw, T)];
}

/**
 * Neighbouring TT ranks bound each other: R2 ≤ R1·kh, R1 ≤ R2·kh, R3 ≤ R2·kw, R2 ≤ R3·kw
 * (an unfolding's rank is at most its neighbour's times the mode between). Past these a
 * rank cannot lower the error, so they are lowered to fit.
 */
function consistent(r: Ranks3, kh: number, kw: number): Ranks3 {
  let [r1, r2, r3] = r;
  r2 = Math.min(r2, r1 * kh);
  r3 = Math.min(r3, r2 * kw);
  r2 = Math.min(r2, r3 * kw);
  r1 = Math.min(r1, r2 * kh);
  return [r1, r2, r3];
}

export const convTt: LayerPass<ConvTtMatch, 'tt'> = {
  name: 'conv-tt',
  method: 'tt',
  ops: ['Conv'],
  // Below conv-tucker2, conv-cp and conv-spatial-svd: routed to last but one; under auto it
  // challenges the choice so far at equal cost (`challenge`).
  benefit: -2,
  slowPath: TT_SLOW_PATH,
  rankNames: ['r1 (input side)', 'r2 (after the kh×1 conv)', 'r3 (output side)'],

  accepts: acceptsUnless(declines),

  compose(chain: readonly NodeProto[], factors: readonly ChainFactor[], f: FactoredLayer, ext): Float32Array | string {
    const bad = chainMismatch(chain, factors, f.weightDims, ([T, S, kh, kw], [R1, R2, R3]) => [[R1!, S, 1, 1], [R2!, R1!, kh, 1], [R3!, R2!, 1, kw], [T, R3!, 1, 1]]);
    if (bad) return bad;
    const [T, S, kh, kw] = f.weightDims as [number, number, number, number];
    const [a, b, c, d] = factors as [ChainFactor, ChainFactor, ChainFactor, ChainFactor];
    return ttKernel(a.read(ext), b.read(ext), c.read(ext), d.read(ext), T, S, kh, kw, [a.dims[0]!, b.dims[0]!, c.dims[0]!]);
  },

  match: (layer: LayerInfo, cx: PassContext): ConvTtMatch | Skip => matchSplitConv(layer, cx, declines, 'tensor-train'),

  rankLimits: (m) => limits(m),

  checkRanks(m: ConvTtMatch, ranks: readonly number[]): string | undefined {
    const [r1, r2, r3] = ranks as Ranks3;
    const { kh, kw } = m;
    if (r2 > r1 * kh || r1 > r2 * kh) return `ranks [${ranks.join(', ')}] need r2 ≤ r1·${kh} and r1 ≤ r2·${kh} (the kernel has ${kh} rows)`;
    if (r3 > r2 * kw || r2 > r3 * kw) return `ranks [${ranks.join(', ')}] need r3 ≤ r2·${kw} and r2 ≤ r3·${kw} (the kernel has ${kw} columns)`;
    return undefined;
  },

  /**
   * Ranks of the three TT unfoldings ([S, kh·kw·T], [S·kh, kw·T], [S·kh·kw, T]), each as
   * for an SVD pair of that matrix: fixed r → [r, r, r]; energy e → each unfolding's energy
   * rank (as conv-tucker2 reads its unfoldings; the TT-SVD error² is then at most
   * 3·(1 − e)·‖W‖², Oseledets 2011); vbmf → EVBMF of each; ratio ρ → the largest common
   * fraction α of the limits with params ≤ ρ·T·S·kh·kw. Clamped to the limits, aligned,
   * then lowered to consistent neighbours (checkRanks).
   */
  chooseRanks(m: ConvTtMatch, policy: RankPolicy): number[] | Skip {
    const lim = limits(m);
    let raw: Ranks3;
    switch (policy.kind) {
      case 'fixed':
        if (!isRank(policy.rank)) return skip(notARank(policy.rank));
        raw = [policy.rank, policy.rank, policy.rank];
        break;
      case 'energy': {
        const sp = spectraOf(m);
        raw = sp.map((s, i) => partialEnergyRank(s.sigma, s.total, policy.energy) ?? lim[i]!) as Ranks3;
        break;
      }
      case 'vbmf': {
        const { S, T } = m.geo;
        const { kh, kw } = m;
        const dims: [number, number][] = [[S, kh * kw * T], [S * kh, kw * T], [S * kh * kw, T]];
        raw = spectraOf(m).map((s, i) => vbmfRank(s.sigma, s.total, dims[i]![0], dims[i]![1])) as Ranks3;
        break;
      }
      case 'ratio':
        raw = ratioRanks(m, policy.ratio);
        break;
    }
    const aligned = raw.map((r, i) => alignRank(Math.min(r, lim[i]!), policy.align, lim[i]!)) as Ranks3;
    const r = consistent(aligned, m.kh, m.kw);
    if (r.some((x) => x <= 0)) return skip(`rank 0 (ranks ${r.join(', ')}): the kernel has no low-rank structure worth keeping`);
    return r;
  },

  cost: (m, ranks) => ({ before: convCost(m.geo), after: ttCost(m.geo, ranks as Ranks3) }),

  // Under auto: along ranks [k, k, k] (clamped, lowered to consistent neighbours, as --rank k
  // writes them) at the largest k no larger and no costlier than the choice so far, by
  // error, when the run saves params or MACs (TT_SLOW_PATH: not when latency counts).
  challenge(layer, preferred, ranks, cx, policy?: RankPolicy) {
    const m = convTt.match(layer, cx);
    if (isSkip(m)) return undefined;
    const lim = limits(m);
    const ranksOf = (k: number): number[] => consistent(lim.map((l) => Math.min(k, l)) as Ranks3, m.kh, m.kw);
    const spec = { pass: convTt, match: m, limit: Math.max(...lim), patchDim: m.geo.S * m.kh * m.kw, maxWork: MAX_COMPARE_WORK, fixedRank: true, ranksOf, slowPath: TT_SLOW_PATH };
    return challengeAtEqualCost(layer, spec, preferred, ranks, cx, policy);
  },

  estimate(m: ConvTtMatch, ranks: readonly number[], cx: PassContext): { relError: number; dataError?: number } | Skip {
    const f = factorize(m, ranks, cx);
    return isSkip(f) ? f : { relError: f.relError, dataError: f.dataError };
  },

  apply(m: ConvTtMatch, ranks: readonly number[], cx: PassContext): Applied | Skip {
    const { node: n, graph: g, geo, kh, kw } = m;
    const f = factorize(m, ranks, cx);
    if (isSkip(f)) return f;
    const bias = correctedBias(cx, m, f.biasDelta);
    if (isSkip(bias)) return bias;
    const [R1, R2, R3] = f.ranks;
    const names = ['lr_tt_s', 'lr_tt_y', 'lr_tt_x', 'lr_tt_t'].map((s) => derivedName(cx, n, s));
    g.addInitializer(makeFloatTensor(names[0]!, [R1, geo.S, 1, 1], f.first, m.dataType));
    g.addInitializer(makeFloatTensor(names[1]!, [R2, R1, kh, 1], f.rows, m.dataType));
    g.addInitializer(makeFloatTensor(names[2]!, [R3, R2, 1, kw], f.cols, m.dataType));
    g.addInitializer(makeFloatTensor(names[3]!, [geo.T, R3, 1, 1], f.last, m.dataType));
    const [z1, z2, z3] = ['lr_z1', 'lr_z2', 'lr_z3'].map((s) => derivedName(cx, n, s)) as [string, string, string];
    const aware = f.dataError === undefined ? '' : f.anchored ? ', last factor fitted to the original outputs (anchored)' : ', last factor refitted on calibration patches';
    const doc = docString('conv-tt', `ranks [${R1}, ${R2}, ${R3}] of ${geo.T}x${geo.S}x${kh}x${kw} (weight rel. error ${f.relError.toExponential(2)}${aware})`);
    const [first, second] = splitPlacement(n);
    const nodes = [
      convNode(derivedName(cx, n, 'lr_a'), n.input[0]!, names[0]!, z1, chainConvAttrs([1, 1], 1), undefined, doc),
      convNode(derivedName(cx, n, 'lr_b'), z1, names[1]!, z2, [...first, intsAttr('kernel_shape', [kh, 1])], undefined, doc),
      convNode(derivedName(cx, n, 'lr_c'), z2, names[2]!, z3, [...second, intsAttr('kernel_shape', [1, kw])], undefined, doc),
      convNode(derivedName(cx, n, 'lr_d'), z3, names[3]!, n.output[0]!, chainConvAttrs([1, 1], 1), bias, doc),
    ];
    g.replaceNode(n, nodes);
    return { relError: f.relError, dataError: f.dataError, nodes: nodes.map((x) => x.name!) };
  },
};

/**
 * Params S·R1 + R1·R2·kh + R2·R3·kw + R3·T. MACs per output position: the first 1x1 runs
 * at the input resolution (∏strides input positions per output position), the kh×1 conv
 * at every input column of the output rows (sw per output position), the rest at the output.
 */
export function ttCost(geo: ConvGeometry, ranks: readonly [number, number, number]): Cost {
  const [kh, kw] = geo.kernel as [number, number];
  const [r1, r2, r3] = ranks;
  const first = geo.S * r1;
  const rows = r1 * r2 * kh;
  const cols = r2 * r3 * kw;
  const last = r3 * geo.T;
  return { params: first + rows + cols + last, macsPerPosition: first * geo.strideFactor + rows * geo.strides[1]! + cols + last };
}

function spectraOf(m: ConvTtMatch): { sigma: Float64Array; total: number }[] {
  m.spectra ??= ttSpectra({ data: m.w, shape: [m.geo.T, m.geo.S, m.kh, m.kw] });
  return m.spectra;
}

/** Ranks α·limits (each ≥ 1) for the largest α ∈ (0, 1] whose params stay within ρ·T·S·kh·kw (bisection on α). */
function ratioRanks(m: ConvTtMatch, ratio: number): Ranks3 {
  const lim = limits(m);
  const budget = ratio * convCost(m.geo).params;
  const at = (a: number): Ranks3 => lim.map((l) => Math.max(1, Math.floor(a * l))) as Ranks3;
  let lo = 0;
  let hi = 1;
  if (ttCost(m.geo, at(1)).params <= budget) return at(1);
  for (let i = 0; i < 50; i++) {
    const mid = (lo + hi) / 2;
    if (ttCost(m.geo, at(mid)).params <= budget) lo = mid; else hi = mid;
  }
  return at(lo);
}

/** The TT at `ranks` (linalg/tt.ts), the last factor refitted on well-determined patch statistics; cached on the match. */
function factorize(m: ConvTtMatch, ranks: readonly number[], cx: PassContext): TtFit | Skip {
  if (ranks.length !== 3 || !ranks.every(isRank)) return skip(`ranks [${ranks.join(', ')}] are not three positive integers`);
  const key = ranks.join(',');
  if (m.fitted?.key === key) return m.fitted;
  const { S, T } = m.geo;
  const { kh, kw } = m;
  let f: TtConv;
  try {
    f = ttSvd({ data: m.w, shape: [T, S, kh, kw] }, ranks as Ranks3, { gemm: cx.gemm });
  } catch (e) {
    return skip(`TT-SVD failed: ${(e as Error).message}`);
  }
  if (!Number.isFinite(f.relError)) return skip('TT-SVD produced non-finite values');
  const D = S * kh * kw;
  let fit: TtFit = { ...f, key };
  // As conv-cp: anchored moments when collected; else a patch covariance from fewer than
  // about two rows per dimension is rank-deficient and a refit on it overfits the calibration set.
  const patches = m.patches && m.samples >= MIN_ROWS_PER_DIM * D ? { gram: m.patches.gram[0]!, mean: m.patches.mean?.[0] } : undefined;
  if (m.anchor || patches) {
    const h = ttPrefix(f.first, f.rows, f.cols, S, kh, kw, f.ranks, cx.gemm);
    const lf = fitLastFactor({ rows: T, cols: D, data: Float64Array.from(m.w) }, h, { anchor: m.anchor && { patch: m.anchor, damp: ANCHOR_PATCH_DAMP }, patches }, cx.gemm)!;
    const last = Float32Array.from(lf.last);
    const w = ttKernel(f.first, f.rows, f.cols, last, T, S, kh, kw, f.ranks, cx.gemm);
    let num = 0;
    let den = 0;
    for (let i = 0; i < w.length; i++) { num += (m.w[i]! - w[i]!) ** 2; den += m.w[i]! ** 2; }
    fit = { ...fit, last, relError: den === 0 ? 0 : Math.sqrt(num / den), dataError: lf.dataError, biasDelta: lf.biasDelta, anchored: lf.anchored };
    if (!Number.isFinite(fit.relError) || !Number.isFinite(lf.dataError)) return skip('TT last-factor fit on calibration patches produced non-finite values');
  }
  m.fitted = fit;
  return fit;
}
