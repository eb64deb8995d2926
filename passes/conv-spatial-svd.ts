/**
 * conv-spatial-svd — a 2-D Conv becomes a kh×1 conv then a 1×kw conv through a truncated
 * SVD of its kernel reshaped to [S·kh, T·kw] (Jaderberg et al. 2014, scheme 2; AIMET's
 * "spatial SVD"): W[t, s, y, x] ≈ Σ_r V[t, r, x]·H[r, s, y].
 *
 * Before: Y = Conv(X, W [T, S, kh, kw], b; strides [sh, sw], pads [ph0, pw0, ph1, pw1],
 *                  dilations [dh, dw], auto_pad)
 * After:  Z = Conv(X, H [R, S, kh, 1]; strides [sh, 1], pads [ph0, 0, ph1, 0], dilations [dh, 1], auto_pad)
 *         Y = Conv(Z, V [T, R, 1, kw], b; strides [1, sw], pads [0, pw0, 0, pw1], dilations [1, dw], auto_pad)
 * Exact at full rank: the first conv runs the kernel's rows, window and padding of axis 0
 * only, at every input column; the second runs axis 1's. Z at a padded column is a
 * combination of zero inputs (no bias on the first conv), so padding Z with zeros equals
 * padding X. auto_pad is computed per axis, and an axis with kernel 1, stride 1 and
 * dilation 1 gets no padding under SAME_*, so the original auto_pad goes on both convs.
 * 2-D, group-1 convs with kh, kw > 1 only (1-D/3-D, 1xk/kx1, depthwise and grouped convs
 * are declined with the reason).
 *
 * The factorization is linalg/spatial-svd.ts. With calibration statistics the start is
 * the truncated SVD of the kernel whitened by a Kronecker approximation of the patch
 * covariance (rows (s, y), columns x; from the partly compressed model's patches when
 * anchored, from the channel Gram when the patch covariance is not well determined), then
 * alternating least squares on the full patch moments (anchored: fitted to the original
 * model's outputs), the mean error moved into the bias.
 */
import { attrInts, attrString, intsAttr, stringAttr } from '../src/graph/attrs.js';
import type { LayerInfo } from '../src/graph/layers.js';
import { isRank, notARank } from '../src/linalg/checks.js';
import type { Matrix } from '../src/linalg/matrix.js';
import { spatialKernel, spatialSpectrum, spatialSvd, type SpatialSvd } from '../src/linalg/spatial-svd.js';
import type { AttributeProto, NodeProto } from '../src/onnx/schema.js';
import { makeFloatTensor } from '../src/onnx/tensor.js';
import {
  convCost, convNode, type ConvGeometry,
} from '../src/rewrite/conv-geometry.js';
import {
  ANCHOR_PATCH_DAMP, channelBlocks, kroneckerWhitening,
} from '../src/rewrite/conv-stats.js';
import { acceptsUnless, chainMismatch, matchSplitConv, splitDeclines, type SplitConvMatch } from '../src/rewrite/conv-split.js';
import { challengeAtEqualCost } from '../src/rewrite/challenge.js';
import { docString } from '../src/rewrite/emit.js';
import {
  derivedName, isSkip, skip, type Applied, type ChainFactor, type Cost, type FactoredLayer, type LayerPass, type PassContext, type Skip,
} from '../src/rewrite/pass.js';
import { chooseSvdRank, type RankPolicy, type SvdSpectrum } from '../src/rewrite/rank-policy.js';
import { WHITEN_DAMP } from '../src/rewrite/svd-pair.js';
import { MIN_ROWS_PER_DIM } from '../src/rewrite/conv-stats.js';
import { correctedBias } from './conv-tucker2.js';

export interface ConvSpatialSvdMatch extends SplitConvMatch {
  /** Spectrum of the [S·kh, T·kw] reshape, computed on first use. */
  spectrum?: SvdSpectrum;
  /** The last factorization, reused by apply when the rank matches. */
  fitted?: SpatialSvd & { requested: number };
  channelGram?: Float64Array;
  patchCount?: number;
  /** Cholesky factors of the Kronecker whitening of the start, computed on first use (null: none). */
  whitening?: { rows: Matrix; cols?: Matrix } | null;
}

/**
 * Multiply-adds the ALS may spend on one layer (≈ (CG iterations + 2)·(R·D² + R²·kw²·D) per
 * sweep, D = S·kh·kw): a few seconds in JS. Past it fewer sweeps run, down to the
 * closed-form refit of the second factor alone.
 */
const ALS_WORK = 4e9;
/** Rank × weight size past which auto does not fit this chain to compare it (as conv-cp's MAX_CP_COMPARE_WORK). */
const MAX_COMPARE_WORK = 5e7;
const ALS = { sweeps: 4, cgIters: 12 };

/** Why a conv is not for this pass, from attributes and shapes only (no weight read). */
const declines = splitDeclines('nothing to split between two axes', 'nothing to split', false);

export const convSpatialSvd: LayerPass<ConvSpatialSvdMatch, 'spatial-svd'> = {
  name: 'conv-spatial-svd',
  method: 'spatial-svd',
  ops: ['Conv'],
  // Below conv-tucker2 and conv-cp: --method auto's choices stay as they were; reached by --method spatial-svd.
  benefit: -1,

  accepts: acceptsUnless(declines),

  compose(chain: readonly NodeProto[], factors: readonly ChainFactor[], f: FactoredLayer, ext): Float32Array | string {
    const bad = chainMismatch(chain, factors, f.weightDims, ([T, S, kh, kw], [R]) => [[R!, S, kh, 1], [T, R!, 1, kw]]);
    if (bad) return bad;
    const [T, S, kh, kw] = f.weightDims as [number, number, number, number];
    const [a, b] = factors as [ChainFactor, ChainFactor];
    return spatialKernel(a.read(ext), b.read(ext), T, S, kh, kw, a.dims[0]!);
  },

  match(layer: LayerInfo, cx: PassContext): ConvSpatialSvdMatch | Skip {
    const m = matchSplitConv(layer, cx, declines, 'spatial SVD');
    return isSkip(m) ? m : { ...m, channelGram: channelBlocks(cx, layer.name, m.geo)?.[0], patchCount: cx.stats?.get(layer.name)?.patchCount };
  },

  /** R ≤ min(S·kh, T·kw): the rank of the reshaped kernel. */
  rankLimits: (m) => [Math.min(m.geo.S * m.kh, m.geo.T * m.kw)],

  /**
   * From the spectrum of the [S·kh, T·kw] reshape as for an SVD pair of that matrix: fixed r,
   * energy e (weight energy), ratio ρ → ⌊ρ·T·S·kh·kw / (S·kh + T·kw)⌋ (params R·(S·kh + T·kw)),
   * EVBMF; aligned, never past full rank.
   */
  chooseRanks(m: ConvSpatialSvdMatch, policy: RankPolicy): number[] | Skip {
    m.spectrum ??= { ...spatialSpectrum(spatialKernelOf(m)), complete: true };
    const r = chooseSvdRank(policy, m.spectrum, m.geo.S * m.kh, m.geo.T * m.kw);
    if (isSkip(r)) return r;
    if (r <= 0) return skip('rank 0: the kernel has no low-rank structure worth keeping');
    return [r];
  },

  cost: (m, ranks) => ({ before: convCost(m.geo), after: spatialSvdCost(m.geo, ranks[0]!) }),

  // Under auto: at the largest rank no larger and no costlier than the choice so far, by error.
  challenge(layer, preferred, ranks, cx, policy?: RankPolicy) {
    const m = convSpatialSvd.match(layer, cx);
    if (isSkip(m)) return undefined;
    const spec = { pass: convSpatialSvd, match: m, limit: convSpatialSvd.rankLimits(m)[0]!, patchDim: m.geo.S * m.kh * m.kw, maxWork: MAX_COMPARE_WORK, byPolicy: true };
    return challengeAtEqualCost(layer, spec, preferred, ranks, cx, policy);
  },

  estimate(m: ConvSpatialSvdMatch, ranks: readonly number[], cx: PassContext): { relError: number; dataError?: number } | Skip {
    const f = factorize(m, ranks[0]!, cx);
    return isSkip(f) ? f : { relError: f.relError, dataError: f.dataError };
  },

  apply(m: ConvSpatialSvdMatch, ranks: readonly number[], cx: PassContext): Applied | Skip {
    const { node: n, graph: g, geo, kh, kw } = m;
    const f = factorize(m, ranks[0]!, cx);
    if (isSkip(f)) return f;
    const bias = correctedBias(cx, m, f.biasDelta);
    if (isSkip(bias)) return bias;
    const R = f.rank;
    const nameH = derivedName(cx, n, 'lr_sv_h');
    const nameV = derivedName(cx, n, 'lr_sv_w');
    g.addInitializer(makeFloatTensor(nameH, [R, geo.S, kh, 1], f.first, m.dataType));
    g.addInitializer(makeFloatTensor(nameV, [geo.T, R, 1, kw], f.second, m.dataType));
    const z = derivedName(cx, n, 'lr_z1');
    const aware = m.anchor ? ', fitted to the original outputs (anchored)' : m.patches ? `, fitted on calibration patches (${f.sweeps} ALS sweeps)` : '';
    const doc = docString('conv-spatial-svd', `rank ${R} of ${geo.T}x${geo.S}x${kh}x${kw} (weight rel. error ${f.relError.toExponential(2)}${m.whitening ? ', whitened start' : ''}${aware})`);
    const [first, second] = splitPlacement(n);
    const nodes = [
      convNode(derivedName(cx, n, 'lr_a'), n.input[0]!, nameH, z, [...first, intsAttr('kernel_shape', [kh, 1])], undefined, doc),
      convNode(derivedName(cx, n, 'lr_b'), z, nameV, n.output[0]!, [...second, intsAttr('kernel_shape', [1, kw])], bias, doc),
    ];
    g.replaceNode(n, nodes);
    return { relError: f.relError, dataError: f.dataError, nodes: nodes.map((x) => x.name!) };
  },
};

/**
 * Params R·(S·kh + T·kw). MACs per output position: the kh×1 conv runs at every input
 * column of the output rows (sw columns per output position), the 1×kw conv at the output.
 */
export function spatialSvdCost(geo: ConvGeometry, r: number): Cost {
  const [kh, kw] = geo.kernel as [number, number];
  const first = r * geo.S * kh;
  const second = geo.T * r * kw;
  return { params: first + second, macsPerPosition: first * geo.strides[1]! + second };
}

/** The original's strides/pads/dilations/auto_pad split by axis: axis 0's on the first conv, axis 1's on the second. */
export function splitPlacement(n: NodeProto): [AttributeProto[], AttributeProto[]] {
  const first: AttributeProto[] = [];
  const second: AttributeProto[] = [];
  for (const name of ['strides', 'dilations'] as const) {
    const v = attrInts(n, name);
    if (!v) continue;
    first.push(intsAttr(name, [v[0]!, 1]));
    second.push(intsAttr(name, [1, v[1]!]));
  }
  const pads = attrInts(n, 'pads');
  if (pads) {
    first.push(intsAttr('pads', [pads[0]!, 0, pads[2]!, 0]));
    second.push(intsAttr('pads', [0, pads[1]!, 0, pads[3]!]));
  }
  const autoPad = attrString(n, 'auto_pad');
  if (autoPad !== undefined) {
    first.push(stringAttr('auto_pad', autoPad));
    second.push(stringAttr('auto_pad', autoPad));
  }
  return [first, second];
}

function spatialKernelOf(m: ConvSpatialSvdMatch): { data: Float32Array; shape: [number, number, number, number] } {
  return { data: m.w, shape: [m.geo.T, m.geo.S, m.kh, m.kw] };
}

/** The spatial SVD at `rank` (linalg/spatial-svd.ts) with the match's statistics; cached on the match. */
function factorize(m: ConvSpatialSvdMatch, rank: number, cx: PassContext): SpatialSvd | Skip {
  if (!isRank(rank)) return skip(notARank(rank));
  if (m.fitted?.requested === rank) return m.fitted;
  const { S, T } = m.geo;
  const { kh, kw } = m;
  const D = S * kh * kw;
  // As conv-cp: a covariance from fewer than about two rows per dimension is rank-deficient
  // and a fit to it overfits the calibration set; then whiten by what is well determined.
  const patchOk = !!m.patches && m.samples >= MIN_ROWS_PER_DIM * D;
  if (m.whitening === undefined) {
    const patch = patchOk ? m.anchor?.gramHat ?? m.patches!.gram[0] : undefined;
    const channel = !patch && m.channelGram && m.samples >= MIN_ROWS_PER_DIM * S ? m.channelGram : undefined;
    const wh = patch ? kroneckerWhitening(S * kh, kw, patch) : channel ? kroneckerWhitening(S, 1, undefined, channel) : undefined;
    m.whitening = wh ? { rows: wh.ls, cols: wh.lk } : null;
  }
  const R = Math.min(rank, S * kh, T * kw);
  const perSweep = (ALS.cgIters + 2) * (R * D * D + R * R * kw * kw * D);
  const sweeps = patchOk ? Math.min(ALS.sweeps, Math.floor(ALS_WORK / perSweep)) : 0;
  const p = m.patches;
  let f: SpatialSvd;
  try {
    f = spatialSvd(spatialKernelOf(m), rank, {
      gemm: cx.gemm, whitening: m.whitening ?? undefined, sweeps, cgIters: ALS.cgIters,
      anchor: m.anchor, damp: m.anchor ? ANCHOR_PATCH_DAMP : WHITEN_DAMP,
      patches: p && { gram: p.gram[0]!, mean: p.mean?.[0], count: m.patchCount },
    });
  } catch (e) {
    return skip(`spatial SVD failed: ${(e as Error).message}`);
  }
  if (!Number.isFinite(f.relError) || (f.dataError !== undefined && !Number.isFinite(f.dataError))) return skip('spatial SVD produced non-finite values');
  m.fitted = { ...f, requested: rank };
  return m.fitted;
}
