/**
 * convtranspose-tucker2 — a ConvTranspose becomes a 1x1 Conv, a smaller ConvTranspose and
 * a 1x1 Conv through a Tucker-2 decomposition of its channel modes (Kim et al. 2015, on
 * the transposed layout).
 *
 * Before: Y = ConvTranspose(X, W [S, T/g, k…], b; strides, pads, dilations, output_padding,
 *                           output_shape, auto_pad, group g)
 * After:  Z1 = Conv(X,  A [g·r1, S/g, 1…]; group g)                          A = U_Sᵀ per group
 *         Z2 = ConvTranspose(Z1, C [g·r1, r2, k…]; strides, pads, dilations, output_padding,
 *                            output_shape, auto_pad, group g)               C = core per group
 *         Y  = Conv(Z2, B [T, r2, 1…], b; group g)                          B = U_T per group
 * Modes: axis 0 of W is S (the input channels, mode 1), axis 1 is T/g (the output channels
 * of the group, mode 2), the taps k… are left whole. Per group j, with s = S/g, t = T/g:
 *   W_j[σ, τ, κ] ≈ Σ_{a<r1, b<r2} U_S[σ, a]·C_j[a, b, κ]·U_T[τ, b].
 * A ConvTranspose is, per pair of input and output position, one tap κ of W applied as a
 * channel map: Y[τ](p) = Σ_{q, κ: q scatters to p through κ} Σ_σ W[σ, τ, κ]·X[σ](q) + b[τ],
 * where which (q, κ) reach p depends only on the spatial attributes, never on channels.
 * Substituting the factorization, the sum over σ is the 1x1 conv A at q, the sum over
 * (a, κ) the ConvTranspose C with the same scatter, the sum over b the 1x1 conv B at p:
 * exact at the true multilinear ranks. The 1x1 convs keep every spatial extent, so the core
 * sees X's extent and produces Y's, and output_shape, output_padding, pads and auto_pad
 * (all computed from the input extent and the kernel, which the core shares) survive
 * verbatim on the core. Positions no input reaches are 0 in Z2 and b in Y, as before.
 *
 * The numerics are the Conv Tucker-2 (linalg/tucker2-conv.ts, HOSVD + HOOI) on the Conv
 * layout of the same map, Wc [T, S/g, k…] with Wc[j·t + τ, σ, κ] = W[j·s + σ, τ, κ]: its
 * first factor is A, its last B, and its core [g·r2, r1, k…] becomes C by swapping the
 * channel roles per group. Ranks follow conv-tucker2's policies on the same unfoldings.
 * Data-aware: the first factor A mixes X's channels at each input position, exactly as the
 * first 1x1 of a Conv Tucker-2 does, so with the input-channel Gram of X (statistics of
 * kind 'conv' over X's positions, per group: what a 1x1 conv on X would collect) it is the
 * whitened one (tucker2-conv.ts `channel`), and with anchored channel statistics the
 * anchored one. The output side: per group the output at one position is Wc_j times a
 * "scatter patch" of X (convtranspose-patches.ts: X at the input positions each tap writes
 * there from), so with the moments of those patches in the statistics (patchGram [g, D, D],
 * D = (S/g)·∏k, in the Conv layout's order σ·∏k + κ) the last 1x1 is refitted by least
 * squares on them and the mean error moved into the bias, and with anchored patch moments
 * core and last factor are fitted to the original outputs — exactly as conv-tucker2 does
 * on im2col patches (the same tucker2-conv.ts options). The collector gathers them for
 * kernels > 1 within maxPatchDim (src/calib/stats-plan.ts); without them (a larger patch
 * vector, or channel-only statistics) the output side stays the truncated SVD.
 * A 1x1 group-1 ConvTranspose is convtranspose-svd's, and S/g = 1 (one input channel per
 * group) has nothing to factor.
 */
import type { LayerInfo } from '../src/graph/layers.js';
import { createTucker2Shared, tucker2Conv, type Tucker2Conv, type Tucker2Shared } from '../src/linalg/tucker2-conv.js';
import { makeFloatTensor } from '../src/onnx/tensor.js';
import { chainConvAttrs, convNode, finiteWeight, groupKernels, isDepthwise, type GroupKernel } from '../src/rewrite/conv-geometry.js';
import { composeConvTranspose } from '../src/rewrite/convtranspose-compose.js';
import {
  convTransposeCost, convTransposeLayerGeometry, convTransposeNode, swapChannelRoles, transposePlacementAttrs, transposeTucker2Cost,
  type ConvTransposeGeometry,
} from '../src/rewrite/convtranspose-geometry.js';
import { docString } from '../src/rewrite/emit.js';
import {
  anchoredChannelWhitenings, anchoredPatches, ANCHOR_PATCH_DAMP, channelBlocks, patchBlocks, type AnchoredPatch, type PatchBlocks,
} from '../src/rewrite/conv-stats.js';
import { cachedFit } from '../src/rewrite/fit-cache.js';
import { WHITEN_DAMP, type Whitening } from '../src/rewrite/svd-pair.js';
import { derivedName, isSkip, skip, type Applied, type LayerPass, type MatchBase, type PassContext, type Skip } from '../src/rewrite/pass.js';
import { attrInt } from '../src/graph/attrs.js';
import { correctedBias, tucker2Limits, tucker2RankCheck, tucker2Ranks, type ConvTucker2Match } from './conv-tucker2.js';

export interface ConvTransposeTucker2Match extends MatchBase {
  geo: ConvTransposeGeometry;
  /** The weight in the Conv layout [T, S/g, k…], fp32. */
  wc: Float32Array;
  /** Group kernels of `wc` (what conv-tucker2's rank policies read). */
  groups: GroupKernel[];
  spectra?: ConvTucker2Match['spectra'];
  fitted?: Tucker2Conv & { key: string };
  /** Per-group input-channel Gram blocks [g][s·s] of X from calibration data (data-aware). */
  channelGram?: Float64Array[];
  /** Anchored per-group channel whitening of X (the partly compressed model's input vs the original's). */
  anchor?: Whitening[];
  /** Per-group scatter-patch moments (convtranspose-patches.ts), when the statistics carry them: the last 1x1's refit. */
  patches?: PatchBlocks;
  /** Anchored scatter-patch moments per group (with `anchor`): core and last factor fitted to the original outputs. */
  anchorPatch?: AnchoredPatch[];
  /** The data-aware fits' rank-independent work, shared by the fits at other ranks on this match (as conv-tucker2's). */
  shared?: Tucker2Shared;
}

const isOnes = (xs: readonly number[]): boolean => xs.every((k) => k === 1);

export const convTransposeTucker2: LayerPass<ConvTransposeTucker2Match, 'tucker2'> = {
  name: 'convtranspose-tucker2',
  method: 'tucker2',
  ops: ['ConvTranspose'],
  benefit: 1,
  rankNames: ['r1 (input side)', 'r2 (output side)'],

  // A group-1 1x1 is a matrix: under auto it goes to convtranspose-svd, not here.
  accepts: (layer) => (isOnes(layer.weightShape.slice(2)) && attrInt(layer.node, 'group', 1) === 1
    ? skip('applies to ConvTranspose kernels larger than 1x1 or grouped (a 1x1 is convtranspose-svd\'s)') : true),

  compose: composeConvTranspose,

  match(layer: LayerInfo, cx: PassContext): ConvTransposeTucker2Match | Skip {
    const c = convTransposeLayerGeometry(layer);
    if (isSkip(c)) return c;
    const { geo, dataType } = c;
    if (isDepthwise(geo)) return skip(`one input channel per group (group ${geo.group}): nothing to factor`);
    if (geo.group === 1 && isOnes(geo.kernel)) return skip('1x1 kernel: a matrix, convtranspose-svd handles it');
    const w = finiteWeight(layer, cx);
    if (isSkip(w)) return w;
    const wc = swapChannelRoles(w, geo.S, geo.T / geo.group, geo.kernelSize, geo.group);
    const anchor = anchoredChannelWhitenings(cx, layer.name, geo);
    const channelGram = anchor ? undefined : channelBlocks(cx, layer.name, geo);
    const patches = anchor ? undefined : patchBlocks(cx, layer.name, geo);
    const anchorPatch = anchor ? anchoredPatches(cx, layer.name, geo) : undefined;
    return {
      layer, node: layer.node, graph: layer.graph, dataType, geo, wc, groups: groupKernels(wc, geo), ...(channelGram && { channelGram }), ...(anchor && { anchor }),
      ...(patches && { patches }), ...(anchorPatch && { anchorPatch }),
    };
  },

  rankLimits: (m) => tucker2Limits(m.geo),

  checkRanks: (m, ranks) => tucker2RankCheck(m.geo, ranks),

  // The same policies as conv-tucker2, on the same unfoldings of the same map.
  chooseRanks: (m, policy) => tucker2Ranks(m, policy),

  cost: (m, ranks) => ({ before: convTransposeCost(m.geo), after: transposeTucker2Cost(m.geo, ranks[0]!, ranks[1]!) }),

  estimate(m: ConvTransposeTucker2Match, ranks: readonly number[], cx: PassContext): { relError: number; dataError?: number } | Skip {
    const f = factorize(m, ranks, cx);
    return isSkip(f) ? f : { relError: f.relError, dataError: f.dataError };
  },

  apply(m: ConvTransposeTucker2Match, ranks: readonly number[], cx: PassContext): Applied | Skip {
    const { node: n, graph: g, geo } = m;
    const G = geo.group;
    const s = geo.S / G;
    const f = factorize(m, ranks, cx);
    if (isSkip(f)) return f;
    const { r1, r2, relError } = f;
    const bias = correctedBias(cx, m, f.biasDelta);
    if (isSkip(bias)) return bias;
    const K = geo.kernelSize;
    // The Conv-layout core [g·r2, r1, K] as a ConvTranspose weight [g·r1, r2, K].
    const core = swapChannelRoles(f.core, G * r2, r1, K, G);
    const ones = new Array<number>(geo.spatial).fill(1);
    const nameA = derivedName(cx, n, 'lr_s');
    const nameC = derivedName(cx, n, 'lr_core');
    const nameB = derivedName(cx, n, 'lr_t');
    g.addInitializer(makeFloatTensor(nameA, [G * r1, s, ...ones], f.first, m.dataType));
    g.addInitializer(makeFloatTensor(nameC, [G * r1, r2, ...geo.kernel], core, m.dataType));
    g.addInitializer(makeFloatTensor(nameB, [geo.T, r2, ...ones], f.last, m.dataType));
    const z1 = derivedName(cx, n, 'lr_z1');
    const z2 = derivedName(cx, n, 'lr_z2');
    const per = G > 1 ? ` per group (${G} groups)` : '';
    const aware = m.anchor
      ? `, anchored input factor${m.anchorPatch ? ', core and last factor fitted to the original outputs on calibration patches' : ''}`
      : (m.channelGram ? ', data-aware input factor' : '') + (m.patches ? ', last factor refitted on calibration patches' : '');
    const doc = docString('convtranspose-tucker2', `ranks [${r1}, ${r2}]${per} of ${geo.S}x${geo.T / G}x${geo.kernel.join('x')} (weight rel. error ${relError.toExponential(2)}${aware})`);
    const nodes = [
      convNode(derivedName(cx, n, 'lr_a'), n.input[0]!, nameA, z1, chainConvAttrs(ones, G), undefined, doc),
      convTransposeNode(derivedName(cx, n, 'lr_b'), z1, nameC, z2, chainConvAttrs(geo.kernel, G, transposePlacementAttrs(n)), undefined, doc),
      convNode(derivedName(cx, n, 'lr_c'), z2, nameB, n.output[0]!, chainConvAttrs(ones, G), bias, doc),
    ];
    g.replaceNode(n, nodes);
    return { relError, dataError: f.dataError, nodes: nodes.map((x) => x.name!) };
  },
};

/** The Tucker-2 at ranks [r1, r2] of the Conv-layout kernel, with the match's channel statistics; cached on the match. */
function factorize(m: ConvTransposeTucker2Match, ranks: readonly number[], cx: PassContext): (Tucker2Conv & { key: string }) | Skip {
  const { geo } = m;
  const s = geo.S / geo.group;
  const t = geo.T / geo.group;
  const [r1, r2] = ranks as [number, number];
  if (!Number.isInteger(r1) || !Number.isInteger(r2) || r1 < 1 || r2 < 1 || r1 > s || r2 > t) {
    return skip(`ranks [${r1}, ${r2}] are out of range for ${s}x${t} channels per group`);
  }
  const key = ranks.join(',');
  if (m.fitted?.key === key) return m.fitted;
  // A data-aware fit draws nothing from the rng: the run keeps it for a later fit at these ranks.
  const aware = m.channelGram !== undefined || m.anchor !== undefined || m.patches !== undefined;
  const f = cachedFit(cx.fits, aware ? cx.stats?.get(m.layer.name) : undefined, `convtranspose-tucker2|${m.layer.name}|${key}`, () => tucker2Conv(
    { data: m.wc, shape: [geo.T, s, geo.kernelSize], groups: geo.group }, [r1, r2], {
      rng: cx.rng, gemm: cx.gemm, shared: aware ? (m.shared ??= createTucker2Shared()) : undefined,
      channel: m.channelGram?.map((gram) => ({ gram, damp: WHITEN_DAMP })),
      patches: m.patches,
      anchor: m.anchor && { channel: m.anchor, patch: m.anchorPatch, patchDamp: ANCHOR_PATCH_DAMP },
    }));
  if (!Number.isFinite(f.relError)) return skip('factorization produced non-finite values');
  m.fitted = { key, ...f };
  return m.fitted;
}
