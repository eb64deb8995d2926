/**
 * conv1x1-svd — a pointwise Conv (every kernel extent 1, group 1) is a matrix W [T, S]
 * applied at each pixel (y = W·x); an SVD pair of 1x1 convs replaces it.
 *
 * Before: Y = Conv(X, W [T, S, 1…], b; strides, pads, auto_pad, dilations)
 * After:  Z = Conv(X, R [r, S, 1…]; strides, pads, auto_pad, dilations)   R = Σ_r^½ V_rᵀ
 *         Y = Conv(Z, L [T, r, 1…], b)                                    L = U_r Σ_r^½
 * A 1x1 window's stride and pads act only on which pixels are read (pads add zero pixels),
 * so they move to the first conv; the second runs with stride 1 and no pads. Padded pixels
 * give Z = 0 there, hence Y = b, exactly as before. Dilations have no effect on a 1x1
 * window and are carried along unchanged.
 * Anchored statistics (src/optimize/anchored.ts): the pair is fitted to the original conv's
 * output given the partly compressed model's input, on covariances, and the output mean
 * error goes into the second conv's bias (added when the conv had none).
 */
import { attrInt } from '../src/graph/attrs.js';
import type { LayerInfo } from '../src/graph/layers.js';
import { fromArray } from '../src/linalg/matrix.js';
import { makeFloatTensor } from '../src/onnx/tensor.js';
import {
  convLayerGeometry, finiteWeight, chainConvAttrs, convCost, convNode, isPointwise, placementAttrs, pointwiseSvdCost, type ConvGeometry,
} from '../src/rewrite/conv-geometry.js';
import { castAware } from '../src/rewrite/cast-weights.js';
import { composeConv } from '../src/rewrite/conv-compose.js';
import { dataNote, docString } from '../src/rewrite/emit.js';
import { derivedName, isSkip, skip, type Applied, type LayerPass, type MatchBase, type PassContext, type Skip } from '../src/rewrite/pass.js';
import { outputScaleOf, SvdCache, svdPairFactors, svdPairRank, whiteningFor } from '../src/rewrite/svd-pair.js';
import { correctedBias } from './conv-tucker2.js';

export interface Conv1x1Match extends MatchBase {
  geo: ConvGeometry;
  /** W as the matrix [T, S]. */
  svd: SvdCache;
}

export const conv1x1Svd: LayerPass<Conv1x1Match, 'svd'> = castAware({
  name: 'conv1x1-svd',
  method: 'svd',
  ops: ['Conv'],
  // Preferred where it applies: the SVD pair is the exact optimum of a matrix.
  benefit: 2,

  accepts: (layer) => (layer.weightShape.slice(2).every((k) => k === 1) && attrInt(layer.node, 'group', 1) === 1 ? true : skip('applies to 1x1 convs only')),

  compose: composeConv,

  match(layer: LayerInfo, cx: PassContext): Conv1x1Match | Skip {
    const n = layer.node;
    const c = convLayerGeometry(layer);
    if (isSkip(c)) return c;
    const { geo, dataType } = c;
    if (!isPointwise(geo)) return skip(`kernel [${geo.kernel.join(', ')}] is not 1x1 (conv-tucker2 / conv-cp handle it)`);
    if (geo.group !== 1) return skip(`grouped 1x1 conv (group ${geo.group}) is not decomposed by conv1x1-svd`);
    const data = finiteWeight(layer, cx);
    if (isSkip(data)) return data;
    const w = fromArray(geo.T, geo.S, data);
    // Per pixel y = W·x: the input channels are W's columns.
    const whiten = whiteningFor(cx.stats?.get(layer.name), 'cols', geo.S, { center: true, outputScale: outputScaleOf(cx, layer.name, geo.T) });
    return { layer, node: n, graph: layer.graph, dataType, geo, svd: new SvdCache(w, 0, whiten, cx.gemm) };
  },

  chooseRanks: (m, policy) => svdPairRank(m.svd, policy),

  rankLimits: (m) => [Math.min(m.svd.w.rows, m.svd.w.cols)],

  cost: (m, ranks) => ({ before: convCost(m.geo), after: pointwiseSvdCost(m.geo, ranks[0]) }),

  apply(m: Conv1x1Match, ranks: readonly number[], cx: PassContext): Applied | Skip {
    const r = ranks[0];
    const { node: n, graph: g, geo } = m;
    if (!Number.isInteger(r) || r < 1 || r > Math.min(geo.T, geo.S)) return skip(`rank ${r} is out of range for a ${geo.T}x${geo.S} 1x1 conv`);
    const f = svdPairFactors(m.svd, r);
    if (!Number.isFinite(f.relError)) return skip('factorization produced non-finite values');
    const bias = correctedBias(cx, m, f.biasDelta);
    if (isSkip(bias)) return bias;
    const ones = new Array<number>(geo.spatial).fill(1);
    const nameR = derivedName(cx, n, 'lr_r');
    const nameL = derivedName(cx, n, 'lr_l');
    g.addInitializer(makeFloatTensor(nameR, [r, geo.S, ...ones], f.right, m.dataType));
    g.addInitializer(makeFloatTensor(nameL, [geo.T, r, ...ones], f.left, m.dataType));
    const z = derivedName(cx, n, 'lr_z');
    const doc = docString('conv1x1-svd', `rank ${r} of ${geo.T}x${geo.S} (weight rel. error ${f.relError.toExponential(2)}${dataNote(f.dataError)}${m.svd.whiten?.cross ? ', anchored' : ''})`);
    const nodes = [
      convNode(derivedName(cx, n, 'lr_a'), n.input[0], nameR, z, chainConvAttrs(ones, 1, placementAttrs(n)), undefined, doc),
      convNode(derivedName(cx, n, 'lr_b'), z, nameL, n.output[0], chainConvAttrs(ones, 1), bias, doc),
    ];
    g.replaceNode(n, nodes);
    return { relError: f.relError, dataError: f.dataError, nodes: nodes.map((x) => x.name!) };
  },
});
