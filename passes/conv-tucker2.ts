/**
 * conv-tucker2 — a Conv becomes a chain of three convs through a Tucker-2 decomposition of
 * its channel modes (Kim et al. 2015): W ≈ G ×_T U_T ×_S U_S.
 *
 * Before: Y = Conv(X, W [T, S/g, k…], b; strides, pads, dilations, auto_pad, group g)
 * After:  Z1 = Conv(X,  A [g·r1, S/g, 1…]; group g)                        A = U_Sᵀ per group
 *         Z2 = Conv(Z1, G [g·r2, r1, k…]; strides, pads, dilations, auto_pad, group g)
 *         Y  = Conv(Z2, B [T, r2, 1…], b; group g)                        B = U_T per group
 * Per group j (W_j [T/g, S/g, k…]): U_S [S/g, r1], U_T [T/g, r2], core G_j [r2, r1, k…].
 * Ranks are per group: [r1, r2], so the chain has g·r1 and g·r2 channels. The window
 * (stride, pads, dilation, auto_pad) lives on the core only: the 1x1 convs are pointwise,
 * so padding X with zeros and then mixing channels equals mixing and then padding.
 * Depthwise convs (S/g = 1) and plain 1x1 convs (conv1x1-svd's job) are declined.
 *
 * Anchored (statistics with an `anchor`, src/optimize/anchored.ts; x the layer's input in the
 * original model, x̂ in the partly compressed one): per group, the first 1x1 comes from the
 * anchored whitened SVD of the mode-S unfolding on the channel covariances; then, with the
 * first factor A fixed, core and last factor together are the rank-r2 reduced-rank
 * regression of the original output W·p onto Ã·p̂ (Ã = A ⊗ I_K acting on the patch p̂):
 * with Z = Ã·(Ĉ + δI)·Ãᵀ and R = W·(X + δI)ᵀ·Ãᵀ on the patch covariances, B·G =
 * [R·L⁻ᵀ]_r2·L⁻¹ (Z = L·Lᵀ; linalg/anchored.ts), the optimum over core and last factor
 * jointly. The output mean error W·E[p] − Ŵ·E[p̂] goes into the bias.
 */
import { resolveConstant } from '../src/graph/constants.js';
import type { Graph } from '../src/graph/graph.js';
import type { LayerInfo } from '../src/graph/layers.js';
import type { NodeProto } from '../src/onnx/schema.js';
import {
  anchoredChannelWhitenings, anchoredPatches, ANCHOR_PATCH_DAMP, channelBlocks, patchBlocks, type AnchoredPatch, type PatchBlocks,
} from '../src/rewrite/conv-stats.js';
import { anchoredError, dampingOf, meanEnergy, meanError, plusDiagonal, reducedRankFromMoments } from '../src/linalg/anchored.js';
import { refitLastFactor } from '../src/rewrite/refit.js';
import { product, runSync, type SyncGemm } from '../src/linalg/engine.js';
import type { Matrix } from '../src/linalg/matrix.js';
import { leftVectorsByGram, svd } from '../src/linalg/svd.js';
import { tucker2 } from '../src/linalg/tucker.js';
import { SvdCache, svdPairFactors, WHITEN_DAMP, type Whitening } from '../src/rewrite/svd-pair.js';
import { makeFloatTensor, readTensorFloat } from '../src/onnx/tensor.js';
import {
  allFinite, convLayerGeometry, finiteWeight, chainConvAttrs, convCost, convNode, groupKernels, isDepthwise, isPointwise, placementAttrs,
  tucker2Cost, unfoldingSpectrum, unfoldS, unfoldT, type ConvGeometry, type GroupKernel,
} from '../src/rewrite/conv-geometry.js';
import { composeConv } from '../src/rewrite/conv-compose.js';
import { docString } from '../src/rewrite/emit.js';
import { derivedName, isSkip, skip, type Applied, type LayerPass, type MatchBase, type PassContext, type Skip } from '../src/rewrite/pass.js';
import { alignRank, partialEnergyRank } from '../src/linalg/rank.js';
import { vbmfRank, type RankPolicy } from '../src/rewrite/rank-policy.js';

export interface ConvTucker2Match extends MatchBase {
  geo: ConvGeometry;
  /** The weight, fp32 as stored: [T, S/g, k…]. */
  w: Float32Array;
  groups: GroupKernel[];
  /** Spectra of the mode-S and mode-T unfoldings of each group, computed on first use. */
  spectra?: { s: { sigma: Float64Array; total: number }; t: { sigma: Float64Array; total: number } }[];
  /** The last factorization, reused by apply when the ranks match. */
  fitted?: Tucker2Factors;
  /** Per-group input-channel Gram blocks [g][s·s] from calibration data (data-aware). */
  channelGram?: Float64Array[];
  /** Per-group patch Gram blocks [g][D·D] and means [g][D], D = s·K (least-squares refit). */
  patches?: PatchBlocks;
  /** Anchored statistics: per-group channel whitening and, when collected, patch covariances. */
  anchor?: { channel: Whitening[]; patch?: AnchoredPatch[] };
}

interface Tucker2Factors {
  key: string; r1: number; r2: number; first: Float32Array; core: Float32Array; last: Float32Array; relError: number;
  /** With patch statistics: output error on them, and the bias correction [T]. */
  dataError?: number;
  biasDelta?: Float64Array;
}

/** Spectra of each group's channel unfoldings (cached on the match). */
export function channelSpectra(m: { groups: GroupKernel[]; spectra?: ConvTucker2Match['spectra'] }): NonNullable<ConvTucker2Match['spectra']> {
  m.spectra ??= m.groups.map((gk) => ({ s: unfoldingSpectrum(unfoldS(gk)), t: unfoldingSpectrum(unfoldT(gk)) }));
  return m.spectra;
}

/**
 * Per-group Tucker-2 ranks [r1 (input side), r2 (output side)] under a policy, before
 * alignment. Over several groups the largest per-group rank is taken (one rank serves all).
 *  - fixed r:  [r, r], clamped to [S/g, T/g].
 *  - energy e: the energy rank of the mode-S and mode-T unfolding spectra.
 *  - ratio ρ:  r1 = α·S/g, r2 = α·T/g with α solving params(α) = ρ·T·(S/g)·K, i.e.
 *              α²·s·t·K + α·(s² + t²) − ρ·s·t·K = 0 with s = S/g, t = T/g (g cancels).
 *  - vbmf:     EVBMF on the two unfoldings.
 */
export function tucker2RawRanks(m: { geo: ConvGeometry; groups: GroupKernel[]; spectra?: ConvTucker2Match['spectra'] }, policy: RankPolicy): [number, number] | Skip {
  const { geo } = m;
  const s = geo.S / geo.group;
  const t = geo.T / geo.group;
  const K = geo.kernelSize;
  switch (policy.kind) {
    case 'fixed':
      if (!Number.isInteger(policy.rank) || policy.rank < 1) return skip(`rank ${policy.rank} is not a positive integer`);
      return [Math.min(policy.rank, s), Math.min(policy.rank, t)];
    case 'ratio': {
      const a = s * t * K;
      const b = s * s + t * t;
      const alpha = (-b + Math.sqrt(b * b + 4 * a * policy.ratio * a)) / (2 * a);
      return [Math.min(s, Math.max(1, Math.floor(alpha * s))), Math.min(t, Math.max(1, Math.floor(alpha * t)))];
    }
    case 'energy': {
      let r1 = 0;
      let r2 = 0;
      for (const sp of channelSpectra(m)) {
        r1 = Math.max(r1, partialEnergyRank(sp.s.sigma, sp.s.total, policy.energy) ?? s);
        r2 = Math.max(r2, partialEnergyRank(sp.t.sigma, sp.t.total, policy.energy) ?? t);
      }
      return [r1, r2];
    }
    case 'vbmf': {
      let r1 = 0;
      let r2 = 0;
      for (const sp of channelSpectra(m)) {
        r1 = Math.max(r1, vbmfRank(sp.s.sigma, sp.s.total, s, t * K));
        r2 = Math.max(r2, vbmfRank(sp.t.sigma, sp.t.total, t, s * K));
      }
      return [r1, r2];
    }
  }
}

export const convTucker2: LayerPass<ConvTucker2Match, 'tucker2'> = {
  name: 'conv-tucker2',
  method: 'tucker2',
  ops: ['Conv'],
  // The default for a kxk conv (after conv1x1-svd on 1x1 convs); conv-cp challenges it under auto.
  benefit: 1,
  rankNames: ['r1 (input side)', 'r2 (output side)'],

  compose: composeConv,

  match(layer: LayerInfo, cx: PassContext): ConvTucker2Match | Skip {
    const n = layer.node;
    const c = convLayerGeometry(layer);
    if (isSkip(c)) return c;
    const { geo, dataType } = c;
    if (isDepthwise(geo)) return skip(`depthwise: nothing to gain (one input channel per group, group ${geo.group})`);
    if (geo.group === 1 && isPointwise(geo)) return skip('1x1 kernel: a matrix, conv1x1-svd handles it');
    const w = finiteWeight(layer, cx);
    if (isSkip(w)) return w;
    const channel = anchoredChannelWhitenings(cx, layer.name, geo);
    return {
      layer, node: n, graph: layer.graph, dataType, geo, w, groups: groupKernels(w, geo), channelGram: channelBlocks(cx, layer.name, geo), patches: patchBlocks(cx, layer.name, geo),
      anchor: channel && { channel, patch: anchoredPatches(cx, layer.name, geo) },
    };
  },

  rankLimits(m: ConvTucker2Match): number[] {
    const { S, T, group, kernelSize: k } = m.geo;
    // Multilinear ranks of each group: r1 ≤ r2·K and r2 ≤ r1·K (the numerics clamp past them).
    return [Math.min(S / group, (T / group) * k), Math.min(T / group, (S / group) * k)];
  },

  checkRanks(m: ConvTucker2Match, ranks: readonly number[]): string | undefined {
    const k = m.geo.kernelSize;
    if (ranks[0]! > ranks[1]! * k || ranks[1]! > ranks[0]! * k) return `ranks [${ranks.join(', ')}] need r1 ≤ r2·${k} and r2 ≤ r1·${k} (the kernel has ${k} taps)`;
    return undefined;
  },

  chooseRanks(m: ConvTucker2Match, policy: RankPolicy): number[] | Skip {
    const raw = tucker2RawRanks(m, policy);
    if (isSkip(raw)) return raw;
    const K = m.geo.kernelSize;
    let r1 = alignRank(raw[0], policy.align, m.geo.S / m.geo.group);
    let r2 = alignRank(raw[1], policy.align, m.geo.T / m.geo.group);
    // Multilinear ranks satisfy r1 ≤ r2·K and r2 ≤ r1·K: more cannot lower the error.
    r1 = Math.min(r1, r2 * K);
    r2 = Math.min(r2, r1 * K);
    if (r1 <= 0 || r2 <= 0) return skip(`rank 0 (r1 ${r1}, r2 ${r2}): the kernel has no low-rank structure worth keeping`);
    return [r1, r2];
  },

  cost: (m, ranks) => ({ before: convCost(m.geo), after: tucker2Cost(m.geo, ranks[0], ranks[1]) }),

  estimate(m: ConvTucker2Match, ranks: readonly number[], cx: PassContext): { relError: number; dataError?: number } | Skip {
    const f = factorizeTucker2(m, ranks, cx);
    return isSkip(f) ? f : { relError: f.relError, dataError: f.dataError };
  },

  apply(m: ConvTucker2Match, ranks: readonly number[], cx: PassContext): Applied | Skip {
    const { node: n, graph: g, geo } = m;
    const s = geo.S / geo.group;
    const G = geo.group;
    const f = factorizeTucker2(m, ranks, cx);
    if (isSkip(f)) return f;
    const { r1, r2, first, core, last, relError } = f;
    const bias = correctedBias(cx, m, f.biasDelta);
    if (isSkip(bias)) return bias;
    const ones = new Array<number>(geo.spatial).fill(1);
    const nameA = derivedName(cx, n, 'lr_s');
    const nameG = derivedName(cx, n, 'lr_core');
    const nameB = derivedName(cx, n, 'lr_t');
    g.addInitializer(makeFloatTensor(nameA, [G * r1, s, ...ones], first, m.dataType));
    g.addInitializer(makeFloatTensor(nameG, [G * r2, r1, ...geo.kernel], core, m.dataType));
    g.addInitializer(makeFloatTensor(nameB, [geo.T, r2, ...ones], last, m.dataType));
    const z1 = derivedName(cx, n, 'lr_z1');
    const z2 = derivedName(cx, n, 'lr_z2');
    const per = G > 1 ? ` per group (${G} groups)` : '';
    const aware = m.anchor
      ? `, anchored input factor${m.anchor.patch ? ', core and last factor fitted to the original outputs on calibration patches' : ''}`
      : (m.channelGram ? ', data-aware input factor' : '') + (m.patches ? ', last factor refitted on calibration patches' : '');
    const doc = docString('conv-tucker2', `ranks [${r1}, ${r2}]${per} of ${geo.T}x${geo.S}x${geo.kernel.join('x')} (weight rel. error ${relError.toExponential(2)}${aware})`);
    const nodes = [
      convNode(derivedName(cx, n, 'lr_a'), n.input[0], nameA, z1, chainConvAttrs(ones, G), undefined, doc),
      convNode(derivedName(cx, n, 'lr_b'), z1, nameG, z2, chainConvAttrs(geo.kernel, G, placementAttrs(n)), undefined, doc),
      convNode(derivedName(cx, n, 'lr_c'), z2, nameB, n.output[0], chainConvAttrs(ones, G), bias, doc),
    ];
    g.replaceNode(n, nodes);
    return { relError, dataError: f.dataError, nodes: nodes.map((x) => x.name!) };
  },
};

/** HOSVD + HOOI per group at ranks [r1, r2], as chain weights; cached on the match. */
function factorizeTucker2(m: ConvTucker2Match, ranks: readonly number[], cx: PassContext): Tucker2Factors | Skip {
  const { geo } = m;
  const s = geo.S / geo.group;
  const t = geo.T / geo.group;
  const K = geo.kernelSize;
  const G = geo.group;
  if (!Number.isInteger(ranks[0]) || !Number.isInteger(ranks[1]) || ranks[0] < 1 || ranks[1] < 1 || ranks[0] > s || ranks[1] > t) {
    return skip(`ranks [${ranks[0]}, ${ranks[1]}] are out of range for ${t}x${s} channels per group`);
  }
  const key = ranks.join(',');
  if (m.fitted?.key === key) return m.fitted;
  if (m.anchor) return (m.fitted = anchoredTucker2(m, key, ranks[0], ranks[1], m.anchor, cx));
  if (m.channelGram) {
    const white = m.channelGram.map((gram): Whitening => ({ side: 'rows', gram, damp: WHITEN_DAMP }));
    return (m.fitted = refitted(m, { key, ...whitenedTucker2(m, ranks[0], ranks[1], white, cx.gemm) }, cx.gemm));
  }
  // linalg/tucker wants [R2, R1] (output, input) and returns U_T [t, r2], U_S [s, r1], core [r2, r1, K].
  const parts = m.groups.map((gk) => tucker2({ rows: t, cols: s * K, data: gk.data }, [t, s, K], [ranks[1], ranks[0]], { rng: cx.rng, gemm: cx.gemm }));
  // Ranks beyond r2·K (or r1·K) cannot lower the error, and the numerics clamp them: use what came back.
  const r1 = parts[0].factors[1].cols;
  const r2 = parts[0].factors[0].cols;
  if (parts.some((d) => d.factors[1].cols !== r1 || d.factors[0].cols !== r2)) throw new Error('conv-tucker2: groups came back with different ranks');
  const first = new Float32Array(G * r1 * s); // [g·r1, s]
  const core = new Float32Array(G * r2 * r1 * K); // [g·r2, r1, K]
  const last = new Float32Array(geo.T * r2); // [T, r2]
  parts.forEach((d, j) => {
    const [uT, uS] = d.factors;
    for (let b = 0; b < r1; b++) for (let c = 0; c < s; c++) first[(j * r1 + b) * s + c] = uS.data[c * r1 + b];
    for (let i = 0; i < r2 * r1 * K; i++) core[j * r2 * r1 * K + i] = d.core.data[i];
    for (let a = 0; a < t; a++) for (let b = 0; b < r2; b++) last[(j * t + a) * r2 + b] = uT.data[a * r2 + b];
  });
  const relError = tucker2Error(m.w, geo, first, core, last, r1, r2, cx.gemm);
  if (!Number.isFinite(relError)) return skip('factorization produced non-finite values');
  m.fitted = refitted(m, { key, r1, r2, first, core, last, relError }, cx.gemm);
  return m.fitted;
}

/**
 * With patch statistics, the last 1x1 of each group is refitted by least squares on them
 * (refit.ts) and the mean error moved into the bias.
 */
function refitted(m: ConvTucker2Match, f: Tucker2Factors, sync: SyncGemm | undefined): Tucker2Factors {
  if (!m.patches) return f;
  const { geo } = m;
  const s = geo.S / geo.group;
  const t = geo.T / geo.group;
  const K = geo.kernelSize;
  const D = s * K;
  const { r1, r2 } = f;
  const last = Float32Array.from(f.last);
  const biasDelta = new Float64Array(geo.T);
  let num = 0;
  let den = 0;
  m.groups.forEach((gk, j) => {
    const h = coreTimesFirst(geo, f.core, f.first, j, r1, r2, sync);
    const r = refitLastFactor({ rows: t, cols: D, data: gk.data }, { rows: r2, cols: D, data: h }, m.patches!.gram[j], m.patches!.mean?.[j], sync);
    for (let a = 0; a < t; a++) for (let c = 0; c < r2; c++) last[(j * t + a) * r2 + c] = r.b[a * r2 + c];
    if (r.biasDelta) for (let a = 0; a < t; a++) biasDelta[j * t + a] = r.biasDelta[a];
    num += r.num;
    den += r.den;
  });
  const relError = tucker2Error(m.w, geo, f.first, f.core, last, r1, r2, sync);
  return { ...f, last, relError, dataError: den > 0 ? Math.sqrt(Math.max(num, 0) / den) : 0, biasDelta: m.patches.mean ? biasDelta : undefined };
}

/**
 * The bias input of the last conv: the original one, or, with a bias correction, a new
 * initializer holding original + correction (a missing bias counts as zeros).
 */
export function correctedBias(cx: PassContext, m: { node: NodeProto; graph: Graph; geo: ConvGeometry; dataType: number }, delta: Float64Array | undefined): string | undefined | Skip {
  const n = m.node;
  if (!delta) return m.geo.hasBias ? n.input[2] : undefined;
  const b = new Float32Array(m.geo.T);
  if (m.geo.hasBias) {
    const c = resolveConstant(m.graph, n.input[2]);
    // A bias computed at run time cannot absorb the correction: keep it as it is.
    if (!c) return n.input[2];
    b.set(readTensorFloat(c.tensor, cx.external));
  }
  for (let t = 0; t < b.length; t++) b[t] += delta[t];
  if (!allFinite(b)) return skip('bias correction produced non-finite values');
  const name = derivedName(cx, n, 'lr_bias');
  m.graph.addInitializer(makeFloatTensor(name, [m.geo.T], b, m.dataType));
  return name;
}

/**
 * Data-aware Tucker-2 (per group): the input-side factor comes from the whitened SVD of
 * the mode-S unfolding, W_(S) ≈ P·Q with P = L⁻ᵀU_rΣ^½ minimising ‖L_xᵀ(W_(S) − P·Q)‖ for
 * the input-channel covariance L_x·L_xᵀ (so the first 1x1 keeps what the data excites);
 * the output side is the plain truncated SVD of Q's mode-T unfolding.
 */
function whitenedTucker2(m: ConvTucker2Match, r1In: number, r2In: number, whiten: Whitening[], sync: SyncGemm | undefined): Omit<Tucker2Factors, 'key'> {
  const { geo } = m;
  const s = geo.S / geo.group;
  const t = geo.T / geo.group;
  const K = geo.kernelSize;
  const G = geo.group;
  const r1 = Math.min(r1In, s, t * K);
  const r2 = Math.min(r2In, t, r1 * K);
  const first = new Float32Array(G * r1 * s);
  const core = new Float32Array(G * r2 * r1 * K);
  const last = new Float32Array(geo.T * r2);
  m.groups.forEach((gk, j) => {
    const sv = svdPairFactors(new SvdCache(unfoldS(gk), 0, whiten[j], sync), r1);
    for (let b = 0; b < r1; b++) for (let c = 0; c < s; c++) first[(j * r1 + b) * s + c] = sv.left[c * r1 + b];
    // Q [r1, t·K] as the mode-T unfolding [t, r1·K]: (a, b·K + k) = Q[b, a·K + k].
    const qt = new Float64Array(t * r1 * K);
    for (let b = 0; b < r1; b++) for (let a = 0; a < t; a++) for (let k = 0; k < K; k++) qt[(a * r1 + b) * K + k] = sv.right[b * t * K + a * K + k];
    // U_T [t, ≥ r2]: the wide Q_(T)'s left singular vectors, from its small Gram matrix (as HOOI does).
    const q: Matrix = { rows: t, cols: r1 * K, data: qt };
    const ut = t <= r1 * K ? runSync(leftVectorsByGram(q), sync) : svd(q, sync).u;
    for (let a = 0; a < t; a++) for (let c = 0; c < r2; c++) last[(j * t + a) * r2 + c] = ut.data[a * ut.cols + c];
    // core = U_Tᵀ·Q_(T) [r2, r1·K]
    for (let c = 0; c < r2; c++) {
      for (let a = 0; a < t; a++) {
        const u = ut.data[a * ut.cols + c];
        if (u === 0) continue;
        const src = a * r1 * K;
        const dst = (j * r2 + c) * r1 * K;
        for (let i = 0; i < r1 * K; i++) core[dst + i] += u * qt[src + i];
      }
    }
  });
  return { r1, r2, first, core, last, relError: tucker2Error(m.w, geo, first, core, last, r1, r2, sync) };
}

/**
 * Anchored Tucker-2 (see the header): the first factor from the anchored channel fit, then
 * core and last factor by reduced-rank regression on the anchored patch covariances (when
 * collected; else the output side as in whitenedTucker2), and the bias correction.
 */
function anchoredTucker2(
  m: ConvTucker2Match, key: string, r1In: number, r2In: number, an: NonNullable<ConvTucker2Match['anchor']>, cx: PassContext,
): Tucker2Factors {
  const sync = cx.gemm;
  const base = whitenedTucker2(m, r1In, r2In, an.channel, sync);
  if (!an.patch) return { key, ...base };
  const { geo } = m;
  const s = geo.S / geo.group;
  const t = geo.T / geo.group;
  const K = geo.kernelSize;
  const D = s * K;
  const { r1, r2, first } = base;
  const core = new Float32Array(geo.group * r2 * r1 * K);
  const last = new Float32Array(geo.T * r2);
  const biasDelta = new Float64Array(geo.T);
  let num = 0;
  let den = 0;
  m.groups.forEach((gk, j) => {
    const p = an.patch![j]!;
    const a: Matrix = { rows: r1, cols: s, data: Float64Array.from(first.subarray(j * r1 * s, (j + 1) * r1 * s)) };
    const w: Matrix = { rows: t, cols: D, data: Float64Array.from(gk.data) };
    const delta = dampingOf(p.gramHat, D, ANCHOR_PATCH_DAMP);
    const cHat: Matrix = { rows: D, cols: D, data: plusDiagonal(p.gramHat, D, delta) };
    // Z = Ã·Ĉ·Ãᵀ (Ĉ symmetric: Ĉ·Ãᵀ = (Ã·Ĉ)ᵀ), R = W·Xᵀ·Ãᵀ.
    const z = applyFirst(a, transposeM(applyFirst(a, cHat, K, sync)), K, sync);
    const wx = product(w, { rows: D, cols: D, data: plusDiagonal(p.cross, D, delta) }, { transB: true }, sync);
    const r = applyFirst(a, wx, K, sync);
    const fit = reducedRankFromMoments(z, r, r2, 0, sync);
    const rr = fit.b.cols;
    for (let i = 0; i < t; i++) for (let c = 0; c < r2; c++) last[(j * t + i) * r2 + c] = c < rr ? fit.b.data[i * rr + c]! : 0;
    for (let c = 0; c < rr; c++) core.set(Float32Array.from(fit.g.data.subarray(c * r1 * K, (c + 1) * r1 * K)), (j * r2 + c) * r1 * K);
    // The chain as fitted (fp32), against the original on the statistics.
    const h = coreTimesFirst(geo, core, first, j, r1, r2, sync);
    const wHat = product({ rows: t, cols: r2, data: Float64Array.from(last.subarray(j * t * r2, (j + 1) * t * r2)) }, { rows: r2, cols: D, data: h }, {}, sync);
    const e = anchoredError(w, wHat, p, sync);
    num += e.num;
    den += e.den + meanEnergy(w, p.mean);
    biasDelta.set(meanError(w, wHat, p.mean, p.meanHat), j * t);
  });
  const relError = tucker2Error(m.w, geo, first, core, last, r1, r2, sync);
  return { key, r1, r2, first, core, last, relError, dataError: den > 0 ? Math.sqrt(num / den) : 0, biasDelta };
}

const transposeM = (a: Matrix): Matrix => {
  const out = new Float64Array(a.rows * a.cols);
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < a.cols; j++) out[j * a.rows + i] = a.data[i * a.cols + j]!;
  return { rows: a.cols, cols: a.rows, data: out };
};

/**
 * M·Ãᵀ for M [n, s·K] and Ã = A ⊗ I_K (A [r, s]): out [n, r·K] with
 * out[i, b·K + k] = Σ_c A[b, c]·M[i, c·K + k] (the first 1x1 applied to patch-indexed rows).
 */
function applyFirst(a: Matrix, m: Matrix, K: number, sync: SyncGemm | undefined): Matrix {
  const { rows: r, cols: s } = a;
  const n = m.rows;
  const perm = new Float64Array(n * K * s); // [(i, k), c]
  for (let i = 0; i < n; i++) for (let c = 0; c < s; c++) for (let k = 0; k < K; k++) perm[(i * K + k) * s + c] = m.data[i * s * K + c * K + k]!;
  const p = product({ rows: n * K, cols: s, data: perm }, a, { transB: true }, sync).data; // [(i, k), b]
  const out = new Float64Array(n * r * K);
  for (let i = 0; i < n; i++) for (let k = 0; k < K; k++) for (let b = 0; b < r; b++) out[i * r * K + b * K + k] = p[(i * K + k) * r + b]!;
  return { rows: n, cols: r * K, data: out };
}

/**
 * Group j's core times its first factor, P [r2, s·K] with P[a, c·K + k] = Σ_b G[a, b, k]·A[b, c]:
 * the chain's first two convs as one kernel (the reconstruction's and the refit's H).
 * One product: G as [(a, k), b] times A [b, s], then regrouped to [a, (s, k)].
 */
function coreTimesFirst(geo: ConvGeometry, core: Float32Array, first: Float32Array, j: number, r1: number, r2: number, sync: SyncGemm | undefined): Float64Array {
  const s = geo.S / geo.group;
  const K = geo.kernelSize;
  const gk = new Float64Array(r2 * K * r1);
  for (let a = 0; a < r2; a++) for (let b = 0; b < r1; b++) for (let k = 0; k < K; k++) gk[(a * K + k) * r1 + b] = core[((j * r2 + a) * r1 + b) * K + k]!;
  const p1 = product({ rows: r2 * K, cols: r1, data: gk }, { rows: r1, cols: s, data: Float64Array.from(first.subarray(j * r1 * s, (j + 1) * r1 * s)) }, {}, sync).data;
  const p = new Float64Array(r2 * s * K);
  for (let a = 0; a < r2; a++) for (let k = 0; k < K; k++) for (let c = 0; c < s; c++) p[(a * s + c) * K + k] = p1[(a * K + k) * s + c]!;
  return p;
}

/**
 * ‖W − Ŵ‖_F / ‖W‖_F from the stored (fp32) chain weights, so wiring bugs show:
 * Ŵ_j[t, s, k] = Σ_a B[j·T/g + t, a] Σ_b G[j·r2 + a, b, k] A[j·r1 + b, s].
 */
export function tucker2Error(
  w: Float32Array, geo: ConvGeometry, first: Float32Array, core: Float32Array, last: Float32Array, r1: number, r2: number, sync?: SyncGemm,
): number {
  const s = geo.S / geo.group;
  const t = geo.T / geo.group;
  const K = geo.kernelSize;
  let num = 0;
  let den = 0;
  for (let j = 0; j < geo.group; j++) {
    const p = coreTimesFirst(geo, core, first, j, r1, r2, sync);
    const wh = product({ rows: t, cols: r2, data: Float64Array.from(last.subarray(j * t * r2, (j + 1) * t * r2)) }, { rows: r2, cols: s * K, data: p }, {}, sync).data;
    const wOff = j * t * s * K;
    for (let i = 0; i < t * s * K; i++) {
      const x = w[wOff + i]!;
      const dd = x - wh[i]!;
      num += dd * dd;
      den += x * x;
    }
  }
  return den === 0 ? 0 : Math.sqrt(num / den);
}
