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
 * The factorization is linalg/tucker2-conv.ts: HOSVD + HOOI on the weight alone; with
 * calibration statistics a whitened first factor and a least-squares last factor; anchored
 * (statistics with an `anchor`, src/optimize/anchored.ts) core and last factor fitted to the
 * original model's outputs given the partly compressed model's inputs. The output mean
 * error goes into the bias.
 */
import type { Graph } from '../src/graph/graph.js';
import { constantOrCastFed, type LayerInfo } from '../src/graph/layers.js';
import type { NodeProto } from '../src/onnx/schema.js';
import {
  anchoredChannelWhitenings, anchoredPatches, ANCHOR_PATCH_DAMP, channelBlocks, patchBlocks, type AnchoredPatch, type PatchBlocks,
} from '../src/rewrite/conv-stats.js';
import { isRank, notARank } from '../src/linalg/checks.js';
import { createTucker2Shared, tucker2Conv, type Tucker2Conv, type Tucker2Shared } from '../src/linalg/tucker2-conv.js';
import { castAware } from '../src/rewrite/cast-weights.js';
import { WHITEN_DAMP, type Whitening } from '../src/rewrite/svd-pair.js';
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
import { cachedFit } from '../src/rewrite/fit-cache.js';

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
  /**
   * The data-aware fits' rank-independent work, shared by the fits at other ranks on this
   * match (sensitivity's rungs of the layer): it lives as long as the match does.
   */
  shared?: Tucker2Shared;
}

/** A fit and the ranks it was asked for (key "r1,r2"). */
interface Tucker2Factors extends Tucker2Conv { key: string }

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
      if (!isRank(policy.rank)) return skip(notARank(policy.rank));
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

/** Largest useful per-group ranks: multilinear ranks of each group satisfy r1 ≤ r2·K and r2 ≤ r1·K (the numerics clamp past them). */
export function tucker2Limits(geo: ConvGeometry): number[] {
  const { S, T, group, kernelSize: k } = geo;
  return [Math.min(S / group, (T / group) * k), Math.min(T / group, (S / group) * k)];
}

/** Why ranks (r1, r2) break the multilinear bounds of a kernel with K taps, if they do. */
export function tucker2RankCheck(geo: ConvGeometry, ranks: readonly number[]): string | undefined {
  const k = geo.kernelSize;
  if (ranks[0]! > ranks[1]! * k || ranks[1]! > ranks[0]! * k) return `ranks [${ranks.join(', ')}] need r1 ≤ r2·${k} and r2 ≤ r1·${k} (the kernel has ${k} taps)`;
  return undefined;
}

/** The policy's Tucker-2 ranks (tucker2RawRanks), aligned and lowered to the multilinear bounds (conv-tucker2 and convtranspose-tucker2). */
export function tucker2Ranks(m: Parameters<typeof tucker2RawRanks>[0], policy: RankPolicy): number[] | Skip {
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
}

export const convTucker2: LayerPass<ConvTucker2Match, 'tucker2'> = castAware({
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

  rankLimits: (m) => tucker2Limits(m.geo),

  checkRanks: (m, ranks) => tucker2RankCheck(m.geo, ranks),

  chooseRanks: (m, policy) => tucker2Ranks(m, policy),

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
});

/** The Tucker-2 at ranks [r1, r2] (linalg/tucker2-conv.ts) with the match's statistics; cached on the match. */
function factorizeTucker2(m: ConvTucker2Match, ranks: readonly number[], cx: PassContext): Tucker2Factors | Skip {
  const { geo } = m;
  const s = geo.S / geo.group;
  const t = geo.T / geo.group;
  const [r1, r2] = ranks as [number, number];
  if (!Number.isInteger(r1) || !Number.isInteger(r2) || r1 < 1 || r2 < 1 || r1 > s || r2 > t) {
    return skip(`ranks [${r1}, ${r2}] are out of range for ${t}x${s} channels per group`);
  }
  const key = ranks.join(',');
  if (m.fitted?.key === key) return m.fitted;
  // A data-aware fit draws nothing from the rng: the run keeps it for a later fit at these ranks.
  const aware = m.channelGram !== undefined || m.anchor !== undefined;
  const f = cachedFit(cx.fits, aware ? cx.stats?.get(m.layer.name) : undefined, `conv-tucker2|${m.layer.name}|${key}`, () => tucker2Conv({ data: m.w, shape: [geo.T, s, geo.kernelSize], groups: geo.group }, [r1, r2], {
    rng: cx.rng, gemm: cx.gemm, shared: aware ? (m.shared ??= createTucker2Shared()) : undefined,
    channel: m.channelGram?.map((gram) => ({ gram, damp: WHITEN_DAMP })),
    patches: m.patches,
    anchor: m.anchor && { ...m.anchor, patchDamp: ANCHOR_PATCH_DAMP },
  }));
  if (!Number.isFinite(f.relError)) return skip('factorization produced non-finite values');
  m.fitted = { key, ...f };
  return m.fitted;
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
    // A bias stored behind a Cast (fp16) is read through it; one computed at run time
    // cannot absorb the correction: keep it as it is.
    const c = constantOrCastFed(m.graph, n.input[2]);
    if (!c) return n.input[2];
    b.set(readTensorFloat(c.tensor, cx.external));
  }
  for (let t = 0; t < b.length; t++) b[t] += delta[t];
  if (!allFinite(b)) return skip('bias correction produced non-finite values');
  const name = derivedName(cx, n, 'lr_bias');
  m.graph.addInitializer(makeFloatTensor(name, [m.geo.T], b, m.dataType));
  return name;
}
