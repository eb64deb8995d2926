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
 * 3-D convs (kernel kd×kh×kw): one conv per axis, two ranks (linalg/spatial-svd-3d.ts:
 * the 2-D split applied twice, from the last axis in; a TT of the kernel in the order
 * (s·z, y, x·t), i.e. conv-tt's chain without its two 1x1 convs):
 *   Z1 = Conv(X,  C1 [R1, S, kd, 1, 1]; axis 0's stride, dilation, pads)
 *   Z2 = Conv(Z1, C2 [R2, R1, 1, kh, 1]; axis 1's)
 *   Y  = Conv(Z2, B  [T, R2, 1, 1, kw], b; axis 2's)
 * exact for the same reasons (each conv runs its axis's window at every position of the
 * others; no bias before the last). Grouped: C1 [g·R1, S/g, kd, 1, 1], C2 [g·R2, R1, 1, kh, 1],
 * B [T, R2, 1, 1, kw], every conv group g.
 * 2-D and 3-D convs with every kernel extent > 1 only (1-D convs have one axis: nothing to
 * split; 1xk/kx1 and depthwise convs, and convs of 4 or more axes, are declined with the reason).
 *
 * The factorization is linalg/spatial-svd.ts. With calibration statistics the start is
 * the truncated SVD of the kernel whitened by a Kronecker approximation of the patch
 * covariance (rows (s, y), columns x; from the partly compressed model's patches when
 * anchored, from the channel Gram when the patch covariance is not well determined), then
 * alternating least squares on the full patch moments (anchored: fitted to the original
 * model's outputs), the mean error moved into the bias. 3-D: the outer split (kd×kh×1 then
 * 1×1×kw) is that same fit; the inner split of the kd×kh×1 conv is fitted on the moments
 * of its own input window, weighted by the last conv; the last conv is then refitted on
 * the full patch moments (linalg/spatial-svd-3d.ts).
 *
 * Why a 3-D spatial SVD besides 3-D TT: TT adds a 1x1 on each side and its channel ranks
 * R1 ≤ S, R4 ≤ T; here the first conv reads all S channels and the last writes all T, so
 * at the ranks where the window's structure, not the channels, is low-rank (e.g. a
 * separable or (2+1)-D-like kernel) it is two convs fewer and exact where TT needs R1 = S.
 */
import { attrInt, intAttr, intsAttr } from '../src/graph/attrs.js';
import type { LayerInfo } from '../src/graph/layers.js';
import { isRank, notARank } from '../src/linalg/checks.js';
import type { Matrix } from '../src/linalg/matrix.js';
import { spatialKernel, spatialSpectrum, spatialSvd, type SpatialSvd } from '../src/linalg/spatial-svd.js';
import { spatialKernel3d, spatialSplitSpectra, spatialSvd3d, type SpatialSvd3d } from '../src/linalg/spatial-svd-3d.js';
import { alignRank } from '../src/linalg/rank.js';
import { truncatedSvdFlops } from '../src/linalg/rsvd.js';
import type { AttributeProto, NodeProto } from '../src/onnx/schema.js';
import { makeFloatTensor } from '../src/onnx/tensor.js';
import {
  convCost, convNode, type ConvGeometry,
} from '../src/rewrite/conv-geometry.js';
import {
  ANCHOR_PATCH_DAMP, channelBlocks, kroneckerWhitening,
} from '../src/rewrite/conv-stats.js';
import { acceptsUnless, chainMismatch, type Declines } from '../src/rewrite/conv-split.js';
import {
  axisKernel, axisLetters, axisPlacement, chainMismatchNd, composeGroups, groupedSplitDeclines, matchGroupedSplit, type GroupedSplitMatch,
} from '../src/rewrite/conv-split-groups.js';
import { combineGroupErrors, energyOf, groupSlice, outputEnergy, stackGroups } from '../src/linalg/conv-groups.js';
import { challengeAtEqualCost } from '../src/rewrite/challenge.js';
import { docString } from '../src/rewrite/emit.js';
import {
  derivedName, isSkip, skip, type Applied, type ChainFactor, type Cost, type FactoredLayer, type LayerPass, type PassContext, type Skip,
} from '../src/rewrite/pass.js';
import { chooseSvdRank, type RankPolicy, type SvdSpectrum } from '../src/rewrite/rank-policy.js';
import { chainConvAttrs } from '../src/rewrite/conv-geometry.js';
import { WHITEN_DAMP } from '../src/rewrite/svd-pair.js';
import { MIN_ROWS_PER_DIM } from '../src/rewrite/conv-stats.js';
import { cachedFit } from '../src/rewrite/fit-cache.js';
import { correctedBias } from './conv-tucker2.js';

export interface ConvSpatialSvdMatch extends GroupedSplitMatch {
  /** Spectrum of each group's [s·kh, t·kw] reshape, computed on first use. */
  spectra?: SvdSpectrum[];
  /** The last factorization, reused by apply when the rank matches. */
  fitted?: SpatialSvd & Whitened & { requested: number };
  /** 3-D: spectra of each group's two splits ([s·kd, kh·kw·t], [s·kd·kh, kw·t]), computed on first use. */
  spectra3d?: { sigma: Float64Array; total: number }[][];
  /** 3-D: the last factorization and the ranks it was asked for. */
  fitted3d?: SpatialSvd3d & Whitened & { key: string };
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
const ALS = { sweeps: 4, cgIters: 12 };

const perAxis = groupedSplitDeclines('', 'nothing to split', false, true);

/** Why a conv is not for this pass, from attributes and shapes only (no weight read). */
const declines: Declines = (geo) => {
  if (geo.spatial !== 2 && geo.spatial !== 3) {
    const why = geo.spatial === 1 ? '1 spatial axis: nothing to split between two axes' : `${geo.spatial} spatial axes: not fitted past 3`;
    return skip(`applies to 2-D and 3-D convs only (this one has ${why})`);
  }
  return perAxis(geo);
};

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
    if (f.weightDims.length === 5) return compose3d(chain, factors, f, ext, G);
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

  /**
   * R ≤ min(s·kh, t·kw) (per group: s = S/g, t = T/g): the rank of the reshaped kernel.
   * 3-D: the two splits' unfoldings, R1 ≤ min(s·kd, kh·kw·t), R2 ≤ min(s·kd·kh, kw·t).
   */
  rankLimits: (m) => (m.geo.spatial === 3 ? limits3d(m) : [Math.min(m.s * m.kh, m.t * m.kw)]),

  checkRanks(m: ConvSpatialSvdMatch, ranks: readonly number[]): string | undefined {
    if (m.geo.spatial !== 3) return undefined;
    const kh = m.geo.kernel[1]!;
    const [r1, r2] = ranks as [number, number];
    if (r2 > r1 * kh || r1 > r2 * kh) return `ranks [${r1}, ${r2}] need r2 ≤ r1·${kh} and r1 ≤ r2·${kh} (the kernel has ${kh} rows between the two splits)`;
    return undefined;
  },

  /**
   * From the spectrum of each group's [s·kh, t·kw] reshape as for an SVD pair of that
   * matrix: fixed r, energy e (weight energy), ratio ρ → ⌊ρ·t·s·kh·kw / (s·kh + t·kw)⌋
   * (params g·R·(s·kh + t·kw)), EVBMF; aligned, never past full rank; the largest of the
   * groups' ranks (as conv-tucker2 reads its groups).
   */
  chooseRanks(m: ConvSpatialSvdMatch, policy: RankPolicy): number[] | Skip {
    if (m.geo.spatial === 3) return chooseRanks3d(m, policy);
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

  cost: (m, ranks) => ({ before: convCost(m.geo), after: m.geo.spatial === 3 ? spatialSvd3dCost(m.geo, ranks) : spatialSvdCost(m.geo, ranks[0]!) }),

  // Under auto: at the largest rank no larger and no costlier than the choice so far, by error.
  challenge(layer, preferred, ranks, cx, policy?: RankPolicy) {
    const m = convSpatialSvd.match(layer, cx);
    if (isSkip(m)) return undefined;
    if (m.geo.spatial === 3) {
      // Along [k, k] (clamped, lowered to consistent neighbours, as --rank k writes them), as
      // conv-tt. When latency counts, the default run's screen times it against Tucker-2 in ORT.
      const lim = limits3d(m);
      const ranksOf = (k: number): number[] => consistent3d(lim.map((l) => Math.min(k, l)), m.geo.kernel[1]!);
      const spec3 = { pass: convSpatialSvd, match: m, limit: Math.max(...lim), patchDim: m.s * m.geo.kernelSize, fixedRank: true, ranksOf };
      return challengeAtEqualCost(layer, spec3, preferred, ranks, cx, policy);
    }
    // Grouped convs too: when latency counts, the default run's screen times the grouped
    // chain against the preferred Tucker-2 in ORT and keeps the faster (method-latency.ts).
    // Under --rank N it competes at rank N, as --method spatial-svd writes it (not shrunk: the help's mapping).
    const spec = { pass: convSpatialSvd, match: m, limit: convSpatialSvd.rankLimits(m)[0]!, patchDim: m.s * m.kh * m.kw, byPolicy: true, fixedRank: true };
    return challengeAtEqualCost(layer, spec, preferred, ranks, cx, policy);
  },

  // Per group the truncated SVD of each split (3-D: both unfoldings), and with statistics the ALS (at most ALS_WORK a layer).
  fitWork(m: ConvSpatialSvdMatch, ranks: readonly number[]): number {
    const dims: [number, number][] = m.geo.spatial === 3 ? unfoldings3d(m) : [[m.s * m.kh, m.t * m.kw]];
    const svds = dims.reduce((w, [r, c], i) => w + truncatedSvdFlops(r, c, ranks[i] ?? ranks[0]!), 0);
    return m.geo.group * svds + (m.patches || m.anchors ? ALS_WORK : 0);
  },

  estimate(m: ConvSpatialSvdMatch, ranks: readonly number[], cx: PassContext): { relError: number; dataError?: number } | Skip {
    const f = m.geo.spatial === 3 ? factorize3d(m, ranks, cx) : factorize(m, ranks[0]!, cx);
    return isSkip(f) ? f : { relError: f.relError, dataError: f.dataError };
  },

  apply(m: ConvSpatialSvdMatch, ranks: readonly number[], cx: PassContext): Applied | Skip {
    if (m.geo.spatial === 3) return apply3d(m, ranks, cx);
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
    const doc = docString('conv-spatial-svd', `rank ${R}${per} of ${geo.T}x${geo.S}x${kh}x${kw} (weight rel. error ${f.relError.toExponential(2)}${f.whitened ? ', whitened start' : ''}${aware})`);
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
function factorize(m: ConvSpatialSvdMatch, rank: number, cx: PassContext): (SpatialSvd & Whitened) | Skip {
  if (!isRank(rank)) return skip(notARank(rank));
  if (m.fitted?.requested === rank) return m.fitted;
  // Deterministic (no random draws): the run keeps a data-aware fit for a later fit at this
  // rank on the same statistics (a budget's allocations refit its sensitivity's rungs).
  const f = cachedFit(cx.fits, cx.stats?.get(m.layer.name), `conv-spatial-svd|${m.layer.name}|${rank}`, () => fit2d(m, rank, cx));
  if (isSkip(f)) return f;
  m.fitted = { ...f, requested: rank };
  return m.fitted;
}

/** Whether the fit started from the whitened kernel (the report's doc string says so). */
interface Whitened { whitened: boolean }

function fit2d(m: ConvSpatialSvdMatch, rank: number, cx: PassContext): (SpatialSvd & Whitened) | Skip {
  const { s, t, kh, kw } = m;
  const G = m.geo.group;
  const D = s * kh * kw;
  // As conv-cp: a covariance from fewer than about two rows per dimension is rank-deficient
  // and a fit to it overfits the calibration set; then whiten by what is well determined.
  const patchOk = !!m.patches && m.samples >= MIN_ROWS_PER_DIM * D;
  whiten(m, patchOk, kh, kw);
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
  return { ...f, whitened: !!m.whitening };
}

/**
 * The start's whitening per group, once per match: the Kronecker approximation of the patch
 * covariance with rows (s, window rows) and columns x (the last axis), `rows` = the
 * kernel's extent over the axes before the last, `cols` = the last's; else the channel Gram.
 */
function whiten(m: ConvSpatialSvdMatch, patchOk: boolean, rows: number, cols: number): void {
  if (m.whitening !== undefined) return;
  const per = Array.from({ length: m.geo.group }, (_, j) => {
    const patch = patchOk ? m.anchors?.[j]?.gramHat ?? m.patches!.gram[j] : undefined;
    const channel = !patch && m.channelGram && m.samples >= MIN_ROWS_PER_DIM * m.s ? m.channelGram[j] : undefined;
    const wh = patch ? kroneckerWhitening(m.s * rows, cols, patch) : channel ? kroneckerWhitening(m.s, 1, undefined, channel) : undefined;
    return wh ? { rows: wh.ls, cols: wh.lk } : undefined;
  });
  m.whitening = per.some((x) => x) ? per : null;
}

// ---- 3-D: kd×1×1 → 1×kh×1 → 1×1×kw ---------------------------------------------------------

/** Each split's unfolding per group: [s·kd, kh·kw·t] and [s·kd·kh, kw·t]. */
function unfoldings3d(m: ConvSpatialSvdMatch): [number, number][] {
  const [kd, kh, kw] = m.geo.kernel as [number, number, number];
  return [[m.s * kd, kh * kw * m.t], [m.s * kd * kh, kw * m.t]];
}

const limits3d = (m: ConvSpatialSvdMatch): number[] => unfoldings3d(m).map(([r, c]) => Math.min(r, c));

/** R2 ≤ R1·kh and R1 ≤ R2·kh (A [R2, s·kd·kh] = C2·C1 has rank ≤ R1·kh; the inner split ≤ R2·kh): past these a rank cannot lower the error. */
function consistent3d(r: readonly number[], kh: number): number[] {
  const r2 = Math.min(r[1]!, r[0]! * kh);
  return [Math.min(r[0]!, r2 * kh), r2];
}

/**
 * 3-D ranks from each split's unfolding as for an SVD pair of that matrix (as conv-tt reads
 * its unfoldings): fixed r → [r, r]; energy e → each unfolding's energy rank; vbmf → EVBMF
 * of each; the largest over the groups; ratio ρ → the largest common fraction of the limits
 * with params ≤ ρ × the dense conv's. Clamped, aligned, lowered to consistent neighbours.
 */
function chooseRanks3d(m: ConvSpatialSvdMatch, policy: RankPolicy): number[] | Skip {
  const lim = limits3d(m);
  const dims = unfoldings3d(m);
  let raw: number[];
  if (policy.kind === 'ratio') {
    const budget = policy.ratio * convCost(m.geo).params;
    const at = (a: number): number[] => lim.map((l) => Math.max(1, Math.floor(a * l)));
    let lo = 0;
    let hi = 1;
    if (spatialSvd3dCost(m.geo, at(1)).params <= budget) lo = 1;
    else for (let i = 0; i < 50; i++) {
      const mid = (lo + hi) / 2;
      if (spatialSvd3dCost(m.geo, at(mid)).params <= budget) lo = mid; else hi = mid;
    }
    raw = at(lo);
  } else {
    m.spectra3d ??= Array.from({ length: m.geo.group }, (_, j) => spatialSplitSpectra({ data: groupSlice(m.w, m.geo.group, j), shape: [m.t, m.s, ...m.geo.kernel] }));
    raw = [0, 0];
    for (const sp of m.spectra3d) {
      for (let i = 0; i < 2; i++) {
        const r = chooseSvdRank({ ...policy, align: undefined }, { ...sp[i]!, complete: true }, dims[i]![0], dims[i]![1]);
        if (isSkip(r)) return r;
        raw[i] = Math.max(raw[i]!, r);
      }
    }
  }
  const aligned = raw.map((r, i) => alignRank(Math.min(r, lim[i]!), policy.align, lim[i]!));
  const r = consistent3d(aligned, m.geo.kernel[1]!);
  if (r.some((x) => x <= 0)) return skip(`rank 0 (ranks ${r.join(', ')}): the kernel has no low-rank structure worth keeping`);
  return r;
}

/**
 * 3-D params g·R1·s·kd + g·R2·R1·kh + T·R2·kw (ranks per group). MACs per output position:
 * the kd×1×1 conv runs at the input positions of axes 1 and 2 (× sh·sw), the 1×kh×1 conv
 * at those of axis 2 (× sw), the last at the output.
 */
export function spatialSvd3dCost(geo: ConvGeometry, ranks: readonly number[]): Cost {
  const [kd, kh, kw] = geo.kernel as [number, number, number];
  const [r1, r2] = ranks as [number, number];
  const first = r1 * geo.S * kd;
  const middle = geo.group * r2 * r1 * kh;
  const last = geo.T * r2 * kw;
  return { params: first + middle + last, macsPerPosition: first * geo.strides[1]! * geo.strides[2]! + middle * geo.strides[2]! + last };
}

/** The 3-D fit at `ranks` (linalg/spatial-svd-3d.ts; per group), with the match's statistics; cached on the match. */
function factorize3d(m: ConvSpatialSvdMatch, ranks: readonly number[], cx: PassContext): (SpatialSvd3d & Whitened) | Skip {
  if (ranks.length !== 2 || !ranks.every(isRank)) return skip(`ranks [${ranks.join(', ')}] are not 2 positive integers (a 3-D spatial SVD has two)`);
  const key = ranks.join(',');
  if (m.fitted3d?.key === key) return m.fitted3d;
  const f = cachedFit(cx.fits, cx.stats?.get(m.layer.name), `conv-spatial-svd|${m.layer.name}|${key}`, () => fit3d(m, ranks, cx));
  if (isSkip(f)) return f;
  m.fitted3d = { ...f, key };
  return m.fitted3d;
}

function fit3d(m: ConvSpatialSvdMatch, ranks: readonly number[], cx: PassContext): (SpatialSvd3d & Whitened) | Skip {
  const { s, t } = m;
  const [kd, kh, kw] = m.geo.kernel as [number, number, number];
  const G = m.geo.group;
  const D = s * kd * kh * kw;
  const patchOk = !!m.patches && m.samples >= MIN_ROWS_PER_DIM * D;
  whiten(m, patchOk, kd * kh, kw);
  // The outer split's ALS dominates (the 2-D one at kh' = kd·kh); the budget as 2-D's.
  const R = Math.min(ranks[1]!, s * kd * kh, t * kw);
  const perSweep = (ALS.cgIters + 2) * (R * D * D + R * R * kw * kw * D);
  const sweeps = patchOk ? Math.min(ALS.sweeps, Math.floor(ALS_WORK / (G * perSweep))) : 0;
  const p = patchOk ? m.patches : undefined;
  const parts: SpatialSvd3d[] = [];
  try {
    for (let j = 0; j < G; j++) {
      parts.push(spatialSvd3d({ data: groupSlice(m.w, G, j), shape: [t, s, kd, kh, kw] }, ranks as [number, number], {
        gemm: cx.gemm, whitening: m.whitening?.[j], sweeps, cgIters: ALS.cgIters,
        anchor: m.anchors?.[j], damp: m.anchors ? ANCHOR_PATCH_DAMP : WHITEN_DAMP,
        patches: p && { gram: p.gram[j]!, mean: p.mean?.[j], count: m.patchCount },
      }));
    }
  } catch (e) {
    return skip(`spatial SVD failed: ${(e as Error).message}`);
  }
  let f: SpatialSvd3d = parts[0]!;
  if (G > 1) {
    const errors = combineGroupErrors(parts.map((x, j) => {
      const w = groupSlice(m.w, G, j);
      const dataDen = x.dataError === undefined ? undefined
        : outputEnergy({ rows: t, cols: D, data: Float64Array.from(w) }, { anchor: m.anchors?.[j], gram: p?.gram[j] });
      return { relError: x.relError, energy: energyOf(w), dataError: x.dataError, dataDen };
    }));
    const biasDelta = parts.every((x) => x.biasDelta) ? Float64Array.from(parts.flatMap((x) => [...x.biasDelta!])) : undefined;
    f = {
      ranks: parts[0]!.ranks, first: stackGroups(parts.map((x) => x.first)), middle: stackGroups(parts.map((x) => x.middle)),
      last: stackGroups(parts.map((x) => x.last)), relError: errors.relError, dataError: errors.dataError, biasDelta, sweeps: Math.max(...parts.map((x) => x.sweeps)),
    };
  }
  if (!Number.isFinite(f.relError) || (f.dataError !== undefined && !Number.isFinite(f.dataError))) return skip('spatial SVD produced non-finite values');
  return { ...f, whitened: !!m.whitening };
}

function apply3d(m: ConvSpatialSvdMatch, ranks: readonly number[], cx: PassContext): Applied | Skip {
  const { node: n, graph: g, geo } = m;
  const f = factorize3d(m, ranks, cx);
  if (isSkip(f)) return f;
  const bias = correctedBias(cx, m, f.biasDelta);
  if (isSkip(bias)) return bias;
  const [R1, R2] = f.ranks;
  const G = geo.group;
  const k = geo.kernel;
  const names = axisLetters(3).map((x) => derivedName(cx, n, `lr_sv_${x}`));
  g.addInitializer(makeFloatTensor(names[0]!, [G * R1, m.s, ...axisKernel(k, 0)], f.first, m.dataType));
  g.addInitializer(makeFloatTensor(names[1]!, [G * R2, R1, ...axisKernel(k, 1)], f.middle, m.dataType));
  g.addInitializer(makeFloatTensor(names[2]!, [geo.T, R2, ...axisKernel(k, 2)], f.last, m.dataType));
  const z = [derivedName(cx, n, 'lr_z1'), derivedName(cx, n, 'lr_z2')];
  const aware = m.anchors ? ', fitted to the original outputs (anchored)' : f.dataError !== undefined ? `, fitted on calibration patches (${f.sweeps} ALS sweeps)` : '';
  const per = G > 1 ? ` per group (${G} groups)` : '';
  const doc = docString('conv-spatial-svd', `ranks [${R1}, ${R2}]${per} of ${geo.T}x${geo.S}x${k.join('x')} (weight rel. error ${f.relError.toExponential(2)}${f.whitened ? ', whitened start' : ''}${aware})`);
  const placement = axisPlacement(n, 3);
  const ins = [n.input[0]!, z[0]!, z[1]!];
  const outs = [z[0]!, z[1]!, n.output[0]!];
  const nodes = [0, 1, 2].map((a) => convNode(
    derivedName(cx, n, `lr_${String.fromCharCode(97 + a)}`), ins[a]!, names[a]!, outs[a]!,
    chainConvAttrs(axisKernel(k, a), G, placement[a]), a === 2 ? bias : undefined, doc,
  ));
  g.replaceNode(n, nodes);
  return { relError: f.relError, dataError: f.dataError, nodes: nodes.map((x) => x.name!) };
}

/** compose (--stages) of a 3-D chain: C1 [g·R1, s, kd, 1, 1], C2 [g·R2, R1, 1, kh, 1], B [T, R2, 1, 1, kw]. */
function compose3d(chain: readonly NodeProto[], factors: readonly ChainFactor[], f: FactoredLayer, ext: Parameters<LayerPass<ConvSpatialSvdMatch>['compose']>[3], G: number): Float32Array | string {
  const bad = chainMismatchNd(chain, factors, f.weightDims, ([T, s, ...k], lead) => [
    [lead[0]!, s!, ...axisKernel(k, 0)], [lead[1]!, (lead[0] ?? 0) / G, ...axisKernel(k, 1)], [T!, (lead[1] ?? 0) / G, ...axisKernel(k, 2)],
  ]);
  if (bad) return bad;
  const [T, s, ...k] = f.weightDims as number[];
  const ranks = [factors[0]!.dims[0]! / G, factors[1]!.dims[0]! / G];
  return composeGroups(factors.map((x) => x.read(ext)), G, ([a, b, c]) => spatialKernel3d(a!, b!, c!, T! / G, s!, k, ranks));
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
