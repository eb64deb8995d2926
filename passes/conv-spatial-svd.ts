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
 * Grouped convs (group g): each group's kernel [T/g, S/g, kh, kw] is split on its own at
 * the same rank R (conv-split-groups.ts); H [g·R, S/g, kh, 1] and V [T, R, 1, kw] stack the
 * groups' factors and both convs take group g.
 * 2-D convs with kh, kw > 1 only (1-D convs have one axis: nothing to split; 3-D, 1xk/kx1
 * and depthwise convs are declined with the reason).
 *
 * The factorization is linalg/spatial-svd.ts. With calibration statistics the start is
 * the truncated SVD of the kernel whitened by a Kronecker approximation of the patch
 * covariance (rows (s, y), columns x; from the partly compressed model's patches when
 * anchored, from the channel Gram when the patch covariance is not well determined), then
 * alternating least squares on the full patch moments (anchored: fitted to the original
 * model's outputs), the mean error moved into the bias.
 */
import { attrInt, intAttr, intsAttr } from '../src/graph/attrs.js';
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
import { acceptsUnless, chainMismatch } from '../src/rewrite/conv-split.js';
import { axisPlacement, composeGroups, groupedSplitDeclines, matchGroupedSplit, type GroupedSplitMatch } from '../src/rewrite/conv-split-groups.js';
import { combineGroupErrors, energyOf, groupSlice, outputEnergy, stackGroups } from '../src/linalg/conv-groups.js';
import { challengeAtEqualCost } from '../src/rewrite/challenge.js';
import { docString } from '../src/rewrite/emit.js';
import {
  derivedName, isSkip, skip, type Applied, type ChainFactor, type Cost, type FactoredLayer, type LayerPass, type PassContext, type Skip,
} from '../src/rewrite/pass.js';
import { chooseSvdRank, type RankPolicy, type SvdSpectrum } from '../src/rewrite/rank-policy.js';
import { WHITEN_DAMP } from '../src/rewrite/svd-pair.js';
import { MIN_ROWS_PER_DIM } from '../src/rewrite/conv-stats.js';
import { correctedBias } from './conv-tucker2.js';

export interface ConvSpatialSvdMatch extends GroupedSplitMatch {
  /** Spectrum of each group's [s·kh, t·kw] reshape, computed on first use. */
  spectra?: SvdSpectrum[];
  /** The last factorization, reused by apply when the rank matches. */
  fitted?: SpatialSvd & { requested: number };
  /** Input-channel Gram per group. */
  channelGram?: Float64Array[];
  patchCount?: number;
  /** Cholesky factors of each group's Kronecker whitening of the start, computed on first use (null: none). */
  whitening?: ({ rows: Matrix; cols?: Matrix } | undefined)[] | null;
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

/** Why spatial SVD does not compete on a grouped conv under auto when latency counts (challenge). */
export const GROUPED_SPATIAL_SVD_UNTIMED = 'not timed against Tucker-2 in ORT on grouped convs yet; on grouped convs compared under --save params or macs';

/** Why a conv is not for this pass, from attributes and shapes only (no weight read). */
const declines = groupedSplitDeclines('nothing to split between two axes', 'nothing to split', false);

export const convSpatialSvd: LayerPass<ConvSpatialSvdMatch, 'spatial-svd'> = {
  name: 'conv-spatial-svd',
  method: 'spatial-svd',
  ops: ['Conv'],
  // Below conv-tucker2 and conv-cp: --method auto's choices stay as they were; reached by --method spatial-svd.
  benefit: -1,

  accepts: acceptsUnless(declines),

  compose(chain: readonly NodeProto[], factors: readonly ChainFactor[], f: FactoredLayer, ext): Float32Array | string {
    // Grouped: H [g·R, s, kh, 1], V [T, R, 1, kw].
    const G = attrInt(f.original, 'group', 1);
    const bad = chainMismatch(chain, factors, f.weightDims, ([T, s, kh, kw], [gR]) => [[gR!, s, kh, 1], [T, gR! / G, 1, kw]]);
    if (bad) return bad;
    const [T, s, kh, kw] = f.weightDims as [number, number, number, number];
    const R = factors[0]!.dims[0]! / G;
    return composeGroups(factors.map((x) => x.read(ext)), G, ([a, b]) => spatialKernel(a!, b!, T / G, s, kh, kw, R));
  },

  match(layer: LayerInfo, cx: PassContext): ConvSpatialSvdMatch | Skip {
    const m = matchGroupedSplit(layer, cx, declines, 'spatial SVD');
    return isSkip(m) ? m : { ...m, channelGram: channelBlocks(cx, layer.name, m.geo), patchCount: cx.stats?.get(layer.name)?.patchCount };
  },

  /** R ≤ min(s·kh, t·kw) (per group: s = S/g, t = T/g): the rank of the reshaped kernel. */
  rankLimits: (m) => [Math.min(m.s * m.kh, m.t * m.kw)],

  /**
   * From the spectrum of each group's [s·kh, t·kw] reshape as for an SVD pair of that
   * matrix: fixed r, energy e (weight energy), ratio ρ → ⌊ρ·t·s·kh·kw / (s·kh + t·kw)⌋
   * (params g·R·(s·kh + t·kw)), EVBMF; aligned, never past full rank; the largest of the
   * groups' ranks (as conv-tucker2 reads its groups).
   */
  chooseRanks(m: ConvSpatialSvdMatch, policy: RankPolicy): number[] | Skip {
    m.spectra ??= Array.from({ length: m.geo.group }, (_, j) => ({ ...spatialSpectrum(spatialKernelOf(m, j)), complete: true }));
    let r = 0;
    for (const sp of m.spectra) {
      const rj = chooseSvdRank(policy, sp, m.s * m.kh, m.t * m.kw);
      if (isSkip(rj)) return rj;
      r = Math.max(r, rj);
    }
    if (r <= 0) return skip('rank 0: the kernel has no low-rank structure worth keeping');
    return [r];
  },

  cost: (m, ranks) => ({ before: convCost(m.geo), after: spatialSvdCost(m.geo, ranks[0]!) }),

  // Under auto: at the largest rank no larger and no costlier than the choice so far, by error.
  challenge(layer, preferred, ranks, cx, policy?: RankPolicy) {
    const m = convSpatialSvd.match(layer, cx);
    if (isSkip(m)) return undefined;
    // Per group the chain is new and not timed against Tucker-2 in ORT yet: on grouped convs
    // it competes when the run saves params or MACs, as grouped CP does (auto unchanged there).
    const slowPath = m.geo.group > 1 ? GROUPED_SPATIAL_SVD_UNTIMED : undefined;
    const spec = { pass: convSpatialSvd, match: m, limit: convSpatialSvd.rankLimits(m)[0]!, patchDim: m.s * m.kh * m.kw, maxWork: MAX_COMPARE_WORK, byPolicy: true, slowPath };
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
    const G = geo.group;
    const nameH = derivedName(cx, n, 'lr_sv_h');
    const nameV = derivedName(cx, n, 'lr_sv_w');
    g.addInitializer(makeFloatTensor(nameH, [G * R, m.s, kh, 1], f.first, m.dataType));
    g.addInitializer(makeFloatTensor(nameV, [geo.T, R, 1, kw], f.second, m.dataType));
    const z = derivedName(cx, n, 'lr_z1');
    const aware = m.anchors ? ', fitted to the original outputs (anchored)' : m.patches ? `, fitted on calibration patches (${f.sweeps} ALS sweeps)` : '';
    const per = G > 1 ? ` per group (${G} groups)` : '';
    const doc = docString('conv-spatial-svd', `rank ${R}${per} of ${geo.T}x${geo.S}x${kh}x${kw} (weight rel. error ${f.relError.toExponential(2)}${m.whitening ? ', whitened start' : ''}${aware})`);
    const [first, second] = splitPlacement(n).map((a) => (G > 1 ? [...a, intAttr('group', G)] : a)) as [AttributeProto[], AttributeProto[]];
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
  return axisPlacement(n, 2) as [AttributeProto[], AttributeProto[]];
}

/** Group j's kernel [t, s, kh, kw]. */
function spatialKernelOf(m: ConvSpatialSvdMatch, j: number): { data: Float32Array; shape: [number, number, number, number] } {
  return { data: groupSlice(m.w, m.geo.group, j), shape: [m.t, m.s, m.kh, m.kw] };
}

/** The spatial SVD at `rank` (linalg/spatial-svd.ts; per group on grouped convs) with the match's statistics; cached on the match. */
function factorize(m: ConvSpatialSvdMatch, rank: number, cx: PassContext): SpatialSvd | Skip {
  if (!isRank(rank)) return skip(notARank(rank));
  if (m.fitted?.requested === rank) return m.fitted;
  const { s, t, kh, kw } = m;
  const G = m.geo.group;
  const D = s * kh * kw;
  // As conv-cp: a covariance from fewer than about two rows per dimension is rank-deficient
  // and a fit to it overfits the calibration set; then whiten by what is well determined.
  const patchOk = !!m.patches && m.samples >= MIN_ROWS_PER_DIM * D;
  if (m.whitening === undefined) {
    const per = Array.from({ length: G }, (_, j) => {
      const patch = patchOk ? m.anchors?.[j]?.gramHat ?? m.patches!.gram[j] : undefined;
      const channel = !patch && m.channelGram && m.samples >= MIN_ROWS_PER_DIM * s ? m.channelGram[j] : undefined;
      const wh = patch ? kroneckerWhitening(s * kh, kw, patch) : channel ? kroneckerWhitening(s, 1, undefined, channel) : undefined;
      return wh ? { rows: wh.ls, cols: wh.lk } : undefined;
    });
    m.whitening = per.some((x) => x) ? per : null;
  }
  const R = Math.min(rank, s * kh, t * kw);
  const perSweep = (ALS.cgIters + 2) * (R * D * D + R * R * kw * kw * D);
  // The ALS budget is the layer's, shared by its groups.
  const sweeps = patchOk ? Math.min(ALS.sweeps, Math.floor(ALS_WORK / (G * perSweep))) : 0;
  const p = m.patches;
  const parts: SpatialSvd[] = [];
  try {
    for (let j = 0; j < G; j++) {
      parts.push(spatialSvd(spatialKernelOf(m, j), rank, {
        gemm: cx.gemm, whitening: m.whitening?.[j], sweeps, cgIters: ALS.cgIters,
        anchor: m.anchors?.[j], damp: m.anchors ? ANCHOR_PATCH_DAMP : WHITEN_DAMP,
        patches: p && { gram: p.gram[j]!, mean: p.mean?.[j], count: m.patchCount },
      }));
    }
  } catch (e) {
    return skip(`spatial SVD failed: ${(e as Error).message}`);
  }
  const f = G === 1 ? parts[0]! : stackSpatial(m, parts);
  if (!Number.isFinite(f.relError) || (f.dataError !== undefined && !Number.isFinite(f.dataError))) return skip('spatial SVD produced non-finite values');
  m.fitted = { ...f, requested: rank };
  return m.fitted;
}

/** The groups' fits as one: factors stacked, errors combined (linalg/conv-groups.ts). */
function stackSpatial(m: ConvSpatialSvdMatch, parts: SpatialSvd[]): SpatialSvd {
  const { s, t, kh, kw } = m;
  const errors = combineGroupErrors(parts.map((f, j) => {
    const w = groupSlice(m.w, m.geo.group, j);
    const dataDen = f.dataError === undefined ? undefined
      : outputEnergy({ rows: t, cols: s * kh * kw, data: Float64Array.from(w) }, { anchor: m.anchors?.[j], gram: m.patches?.gram[j] });
    return { relError: f.relError, energy: energyOf(w), dataError: f.dataError, dataDen };
  }));
  const biasDelta = parts.every((f) => f.biasDelta) ? Float64Array.from(parts.flatMap((f) => [...f.biasDelta!])) : undefined;
  return {
    rank: parts[0]!.rank, first: stackGroups(parts.map((f) => f.first)), second: stackGroups(parts.map((f) => f.second)),
    relError: errors.relError, dataError: errors.dataError, biasDelta, sweeps: Math.max(...parts.map((f) => f.sweeps)),
  };
}
