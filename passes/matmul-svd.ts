/**
 * matmul-svd — a MatMul with a constant 2-D operand becomes two MatMuls through rank r.
 *
 * Before: Y = MatMul(X, W)             W [K, N] constant, X [..., K] (any batch dims)
 * After:  Y = MatMul(MatMul(X, L), R)  L = U_r Σ_r^½ [K, r], R = Σ_r^½ V_rᵀ [r, N]
 * Constant on the left, Y = W·X with W [M, K]: Y = MatMul(L, MatMul(R, X)) (order reversed).
 * A weight shared by several MatMuls is factorized once; the factors are shared too.
 */
import type { Graph } from '../src/graph/graph.js';
import type { LayerInfo } from '../src/graph/layers.js';
import { fromArray } from '../src/linalg/matrix.js';
import { newNode } from '../src/onnx/schema.js';
import { makeFloatTensor, readTensorFloat } from '../src/onnx/tensor.js';
import { dataNote, docString, FLOAT_TYPES } from '../src/rewrite/emit.js';
import { derivedName, skip, type Applied, type LayerPass, type MatchBase, type PassContext, type Skip } from '../src/rewrite/pass.js';
import { SvdCache, svdPairCost, svdPairFactors, svdPairRank, whiteningFor } from '../src/rewrite/svd-pair.js';

export interface MatMulMatch extends MatchBase {
  weightRight: boolean;
  svd: SvdCache;
}

export const matmulSvd: LayerPass<MatMulMatch> = {
  name: 'matmul-svd',
  method: 'svd',
  ops: ['MatMul'],

  match(layer: LayerInfo, cx: PassContext): MatMulMatch | Skip {
    const dataType = layer.weight.tensor.dataType ?? 0;
    if (!FLOAT_TYPES.has(dataType)) return skip(`weight type ${dataType} is not floating point`);
    if (layer.weightShape.length !== 2) return skip('weight is not 2-D (batched constant weights are not decomposed)');
    const [rows, cols] = layer.weightShape;
    const w = fromArray(rows, cols, readTensorFloat(layer.weight.tensor, cx.external));
    const weightRight = layer.weightInput === 1;
    const whiten = whiteningFor(cx.stats?.get(layer.name), weightRight ? 'rows' : 'cols', weightRight ? rows : cols);
    return { layer, node: layer.node, graph: layer.graph, dataType, weightRight, svd: new SvdCache(w, 0, whiten, cx.gemm) };
  },

  chooseRanks: (m, policy) => svdPairRank(m.svd, policy),

  cost: (m, ranks) => svdPairCost(m.svd.w.rows, m.svd.w.cols, ranks[0]),

  apply(m: MatMulMatch, ranks: readonly number[], cx: PassContext): Applied | Skip {
    const r = ranks[0];
    const { node: n, graph: g } = m;
    const { rows, cols } = m.svd.w;
    // Whitened factors depend on the layer's own inputs: share them only when not whitened.
    const key = `${m.layer.weight.graph.proto.name}|${m.layer.weightName}|matmul-svd|${r}${m.svd.whiten ? `|${m.layer.name}` : ''}`;
    let entry = cx.shared.get(key);
    if (!entry || !visible(g, entry.names)) {
      const f = svdPairFactors(m.svd, r);
      if (!Number.isFinite(f.relError)) return skip('factorization produced non-finite values');
      entry = { names: [derivedName(cx, n, 'lr_l'), derivedName(cx, n, 'lr_r')], relError: f.relError, dataError: f.dataError };
      g.addInitializer(makeFloatTensor(entry.names[0], [rows, r], f.left, m.dataType));
      g.addInitializer(makeFloatTensor(entry.names[1], [r, cols], f.right, m.dataType));
      cx.shared.set(key, entry);
    }
    const { names, relError, dataError } = entry;
    const [lName, rName] = names;
    const z = derivedName(cx, n, 'lr_z');
    const x = n.input[m.weightRight ? 0 : 1];
    const nameA = derivedName(cx, n, 'lr_a');
    const nameB = derivedName(cx, n, 'lr_b');
    const nodes = m.weightRight
      ? [newNode({ opType: 'MatMul', name: nameA, input: [x, lName], output: [z] }),
         newNode({ opType: 'MatMul', name: nameB, input: [z, rName], output: [n.output[0]] })]
      : [newNode({ opType: 'MatMul', name: nameA, input: [rName, x], output: [z] }),
         newNode({ opType: 'MatMul', name: nameB, input: [lName, z], output: [n.output[0]] })];
    const doc = docString('matmul-svd', `rank ${r} of ${rows}x${cols} (weight rel. error ${relError.toExponential(2)}${dataNote(dataError)})`);
    for (const x2 of nodes) x2.docString = doc;
    g.replaceNode(n, nodes);
    return { relError, dataError, nodes: nodes.map((x2) => x2.name!) };
  },
};

/** Shared factors are reusable only where the graph can see them (same graph or an enclosing one). */
function visible(g: Graph, names: readonly string[]): boolean {
  return names.every((nm) => {
    for (let s: typeof g | undefined = g; s; s = s.parent) if (s.initializer(nm)) return true;
    return false;
  });
}
