/**
 * gemm-svd — a Gemm with a constant weight becomes two products through rank r.
 *
 * Before: Y = Gemm(A, B, C; α, β, transA, transB)          op(B) = W [K, N] constant
 * After:  Z = op(A)·L            (MatMul, or Gemm keeping transA)   L = U_r Σ_r^½ [K, r]
 *         Y = Gemm(Z, α·R, C; β)  (MatMul when there is no C)       R = Σ_r^½ V_rᵀ [r, N]
 * Mirror case, constant A: op(A) = W [M, K] ≈ L·R, Z = Gemm(R, B; transB), Y = Gemm(α·L, Z, C; β).
 * α is folded into the constant factor so the second node needs no scaling of its own.
 * Anchored statistics (src/optimize/anchored.ts): fitted on covariances when C can take
 * the output mean error (a constant C broadcast along the output axis, β ≠ 0, or no C: one
 * is added), and C becomes C + (α/β)·(W·E[x] − W'·E[x̂]); else on second moments.
 */
import { attrFloat, attrInt, floatAttr } from '../src/graph/attrs.js';
import type { LayerInfo } from '../src/graph/layers.js';
import { fromArray, transpose } from '../src/linalg/matrix.js';
import { newNode } from '../src/onnx/schema.js';
import { makeFloatTensor, readTensorFloat } from '../src/onnx/tensor.js';
import { castAware } from '../src/rewrite/cast-weights.js';
import { dataNote, docString, emitProduct, FLOAT_TYPES } from '../src/rewrite/emit.js';
import { derivedName, skip, type Applied, type LayerPass, type MatchBase, type PassContext, type Skip } from '../src/rewrite/pass.js';
import { constantBias, outputScaleOf, pairProduct, SvdCache, svdPairCost, svdPairFactors, svdPairRank, whiteningFor } from '../src/rewrite/svd-pair.js';

export interface GemmMatch extends MatchBase {
  /** true: B is the constant (Y = X·W); false: A is (Y = W·X). */
  weightRight: boolean;
  svd: SvdCache;
  alpha: number;
  beta: number;
  transA: boolean;
  transB: boolean;
  /** Anchored fits: C as it can take a correction (values along the output axis), or 'none' when there is no C. */
  bias?: { values: Float32Array; dataType: number } | 'none';
}

export const gemmSvd: LayerPass<GemmMatch, 'svd'> = castAware({
  name: 'gemm-svd',
  method: 'svd',
  ops: ['Gemm'],
  benefit: 2,

  match(layer: LayerInfo, cx: PassContext): GemmMatch | Skip {
    const n = layer.node;
    const dataType = layer.weight.tensor.dataType ?? 0;
    if (!FLOAT_TYPES.has(dataType)) return skip(`weight type ${dataType} is not floating point`);
    if (layer.weightShape.length !== 2) return skip('weight is not 2-D');
    const transA = attrInt(n, 'transA', 0) !== 0;
    const transB = attrInt(n, 'transB', 0) !== 0;
    const weightRight = layer.weightInput === 1;
    const [r0, c0] = layer.weightShape;
    const raw = fromArray(r0, c0, readTensorFloat(layer.weight.tensor, cx.external));
    // The matrix as it enters the product: op(B) [K, N] or op(A) [M, K].
    const trans = weightRight ? transB : transA;
    const w = trans ? transpose(raw) : raw;
    // Inputs enter op(B) = W [K, N] from the rows side (Y = X·W), op(A) = W [M, K] from the columns side.
    const stats = cx.stats?.get(layer.name);
    const alpha = attrFloat(n, 'alpha', 1);
    const beta = attrFloat(n, 'beta', 1);
    // The output axis a bias correction runs along: N (columns) when W is on the right, M (rows) when on the left.
    const outDim = weightRight ? w.cols : w.rows;
    const hasC = n.input.length > 2 && n.input[2] !== '';
    let bias: GemmMatch['bias'];
    if (stats?.anchor && alpha !== 0) {
      if (!hasC) bias = 'none';
      else if (beta !== 0) {
        const c = constantBias(layer.graph, n.input[2]!, outDim, cx.external);
        // Along M the correction is a column [M, 1]; a C of n values must already be one.
        if (c && (weightRight ? c.dims[c.dims.length - 1] === outDim : c.dims.length === 2 && c.dims[1] === 1)) bias = c;
      }
    }
    const whiten = whiteningFor(stats, weightRight ? 'rows' : 'cols', weightRight ? w.rows : w.cols, { center: bias !== undefined, outputScale: outputScaleOf(cx, layer.name, outDim) });
    return {
      layer, node: n, graph: layer.graph, dataType,
      weightRight, svd: new SvdCache(w, 0, whiten, cx.gemm), transA, transB, alpha, beta, bias,
    };
  },

  chooseRanks: (m, policy) => svdPairRank(m.svd, policy),

  rankLimits: (m) => [Math.min(m.svd.w.rows, m.svd.w.cols)],

  cost: (m, ranks) => svdPairCost(m.svd.w.rows, m.svd.w.cols, ranks[0]),

  apply(m: GemmMatch, ranks: readonly number[], cx: PassContext): Applied | Skip {
    const r = ranks[0];
    const { node: n, graph: g } = m;
    const { rows, cols } = m.svd.w;
    const f = svdPairFactors(m.svd, r);
    if (!Number.isFinite(f.relError)) return skip('factorization produced non-finite values');
    let hasC = n.input.length > 2 && n.input[2] !== '';
    let cName = hasC ? n.input[2]! : '';
    let beta = m.beta;
    if (f.biasDelta && m.bias) {
      // β·C' = β·C + α·δ; without a C, C' = α·δ with β = 1.
      const k = m.bias === 'none' ? m.alpha : m.alpha / m.beta;
      const base = m.bias === 'none' ? new Float32Array(f.biasDelta.length) : m.bias.values;
      const values = base.map((v, i) => v + k * f.biasDelta![i]!);
      if (!values.every(Number.isFinite)) return skip('bias correction produced non-finite values');
      if (m.bias === 'none') beta = 1;
      cName = derivedName(cx, n, 'lr_bias');
      g.addInitializer(makeFloatTensor(cName, m.weightRight ? [values.length] : [values.length, 1], values, m.bias === 'none' ? m.dataType : m.bias.dataType));
      hasC = true;
    }
    const z = derivedName(cx, n, 'lr_z');
    const nameA = derivedName(cx, n, 'lr_a');
    const nameB = derivedName(cx, n, 'lr_b');
    const lName = derivedName(cx, n, 'lr_l');
    const rName = derivedName(cx, n, 'lr_r');
    const scaled = (x: Float32Array): Float32Array => (m.alpha === 1 ? x : x.map((v) => v * m.alpha));
    let first, second;
    const doc = docString('gemm-svd', `rank ${r} of ${rows}x${cols} (weight rel. error ${f.relError.toExponential(2)}${dataNote(f.dataError)}${m.svd.whiten?.cross ? ', anchored' : ''})`);
    const passAttrs = n.attribute.filter((a) => !['alpha', 'beta', 'transA', 'transB'].includes(a.name ?? ''));
    if (m.weightRight) {
      g.addInitializer(makeFloatTensor(lName, [rows, r], f.left, m.dataType));
      g.addInitializer(makeFloatTensor(rName, [r, cols], scaled(f.right), m.dataType));
      first = emitProduct(cx, g, nameA, n.input[0], lName, z, { transA: m.transA, dataType: m.dataType });
      second = hasC
        ? [newNode({ opType: 'Gemm', name: nameB, input: [z, rName, cName], output: [n.output[0]], attribute: [...passAttrs, floatAttr('beta', beta)] })]
        : [newNode({ opType: 'MatMul', name: nameB, input: [z, rName], output: [n.output[0]] })];
    } else {
      g.addInitializer(makeFloatTensor(lName, [rows, r], scaled(f.left), m.dataType));
      g.addInitializer(makeFloatTensor(rName, [r, cols], f.right, m.dataType));
      first = emitProduct(cx, g, nameA, rName, n.input[1], z, { transB: m.transB, dataType: m.dataType });
      second = hasC
        ? [newNode({ opType: 'Gemm', name: nameB, input: [lName, z, cName], output: [n.output[0]], attribute: [...passAttrs, floatAttr('beta', beta)] })]
        : [newNode({ opType: 'MatMul', name: nameB, input: [lName, z], output: [n.output[0]] })];
    }
    const nodes = [...first, ...second];
    for (const x of nodes) x.docString = doc;
    g.replaceNode(n, nodes);
    return { relError: f.relError, dataError: f.dataError, nodes: nodes.map((x) => x.name!) };
  },

  /** L·R, with α taken back out of the factor it was folded into, stored as op(W) was (transposed back). */
  compose(_chain, factors, f, ext): Float32Array | string {
    const p = pairProduct(factors, f.weightInput, ext);
    if (typeof p === 'string') return p;
    const { w, rows: m, cols: n } = p;
    const alpha = attrFloat(f.original, 'alpha', 1);
    if (alpha === 0) return 'Gemm with alpha 0';
    const trans = attrInt(f.original, f.weightInput === 1 ? 'transB' : 'transA', 0) !== 0;
    const out = new Float32Array(m * n);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) out[trans ? j * m + i : i * n + j] = w[i * n + j]! / alpha;
    return out;
  },
});
