/**
 * matmul-svd — a MatMul with a constant 2-D operand becomes two MatMuls through rank r.
 *
 * Before: Y = MatMul(X, W)             W [K, N] constant, X [..., K] (any batch dims)
 * After:  Y = MatMul(MatMul(X, L), R)  L = U_r Σ_r^½ [K, r], R = Σ_r^½ V_rᵀ [r, N]
 * Constant on the left, Y = W·X with W [M, K]: Y = MatMul(L, MatMul(R, X)) (order reversed).
 * A weight shared by several MatMuls is factorized once; the factors are shared too.
 *
 * Anchored (statistics with an `anchor`, src/optimize/anchored.ts): a MatMul has no bias of
 * its own, so the output mean error is corrected only where a bias already exists: when
 * the product's one consumer is an Add of a constant bias along N (Linear exported as
 * MatMul + Add), the fit uses covariances and that Add gets a new bias (old + correction).
 * Otherwise the fit uses second moments (the mean is part of what the factors must carry)
 * and no node is added.
 */
import type { Graph } from '../src/graph/graph.js';
import type { LayerInfo } from '../src/graph/layers.js';
import { fromArray } from '../src/linalg/matrix.js';
import { newNode } from '../src/onnx/schema.js';
import { makeFloatTensor, readTensorFloat } from '../src/onnx/tensor.js';
import { castAware } from '../src/rewrite/cast-weights.js';
import { dataNote, docString, FLOAT_TYPES } from '../src/rewrite/emit.js';
import { derivedName, skip, type Applied, type LayerPass, type MatchBase, type PassContext, type Skip } from '../src/rewrite/pass.js';
import { constantBias, outputScaleOf, pairProduct, SvdCache, svdPairCost, svdPairFactors, svdPairRank, whiteningFor } from '../src/rewrite/svd-pair.js';
import type { NodeProto } from '../src/onnx/schema.js';

export interface MatMulMatch extends MatchBase {
  weightRight: boolean;
  svd: SvdCache;
  /** The Add that adds a constant bias to the product (anchored fits correct it). */
  biasAdd?: BiasAdd;
}

interface BiasAdd { add: NodeProto; index: number; values: Float32Array; dims: number[]; dataType: number }

/** Y = X·W followed only by Add(Y, b) with a constant b along N: the Add and b. */
function biasAddOf(layer: LayerInfo, g: Graph, n: number, cx: PassContext): BiasAdd | undefined {
  const y = layer.node.output[0];
  if (!y || g.isGraphOutput(y)) return undefined;
  const cons = g.consumers(y);
  if (cons.length !== 1) return undefined;
  const add = cons[0]!;
  if (add.opType !== 'Add' || (add.domain ?? '') !== '' || add.input.length !== 2) return undefined;
  const index = add.input[0] === y ? 1 : 0;
  if (add.input[1 - index] !== y || add.input[index] === y) return undefined;
  const b = constantBias(g, add.input[index]!, n, cx.external);
  return b && { add, index, ...b };
}

export const matmulSvd: LayerPass<MatMulMatch, 'svd'> = castAware({
  name: 'matmul-svd',
  method: 'svd',
  ops: ['MatMul'],
  benefit: 2,

  match(layer: LayerInfo, cx: PassContext): MatMulMatch | Skip {
    const dataType = layer.weight.tensor.dataType ?? 0;
    if (!FLOAT_TYPES.has(dataType)) return skip(`weight type ${dataType} is not floating point`);
    if (layer.weightShape.length !== 2) return skip('weight is not 2-D (batched constant weights are not decomposed)');
    const [rows, cols] = layer.weightShape;
    const w = fromArray(rows, cols, readTensorFloat(layer.weight.tensor, cx.external));
    const weightRight = layer.weightInput === 1;
    const stats = cx.stats?.get(layer.name);
    // Only anchored fits correct a bias, and only along N (weight on the right).
    const biasAdd = stats?.anchor && weightRight ? biasAddOf(layer, layer.graph, cols, cx) : undefined;
    const whiten = whiteningFor(stats, weightRight ? 'rows' : 'cols', weightRight ? rows : cols, { center: biasAdd !== undefined, outputScale: outputScaleOf(cx, layer.name, weightRight ? cols : rows) });
    return { layer, node: layer.node, graph: layer.graph, dataType, weightRight, svd: new SvdCache(w, 0, whiten, cx.gemm), biasAdd };
  },

  chooseRanks: (m, policy) => svdPairRank(m.svd, policy),

  rankLimits: (m) => [Math.min(m.svd.w.rows, m.svd.w.cols)],

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
      if (f.biasDelta && m.biasAdd) {
        const b = m.biasAdd;
        const values = b.values.map((v, i) => v + f.biasDelta![i]!);
        if (!values.every(Number.isFinite)) return skip('bias correction produced non-finite values');
        const name = derivedName(cx, n, 'lr_bias');
        g.addInitializer(makeFloatTensor(name, b.dims, values, b.dataType));
        const input = [...b.add.input];
        input[b.index] = name;
        g.replaceNode(b.add, [{ ...b.add, input }]);
      }
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

  compose(_chain, factors, f, ext): Float32Array | string {
    const p = pairProduct(factors, f.weightInput, ext);
    return typeof p === 'string' ? p : p.w;
  },
});

/** Shared factors are reusable only where the graph can see them (same graph or an enclosing one). */
function visible(g: Graph, names: readonly string[]): boolean {
  return names.every((nm) => {
    for (let s: typeof g | undefined = g; s; s = s.parent) if (s.initializer(nm)) return true;
    return false;
  });
}
