/**
 * matmul-batched-svd — a MatMul with a constant batched operand (3-D or more) becomes two
 * batched MatMuls through rank r, one SVD pair per slice.
 *
 * Before: Y = MatMul(X, W)             W [B…, K, N] constant, X [..., M, K] (broadcast over B…)
 * After:  Y = MatMul(MatMul(X, L), R)  L [B…, K, r], R [B…, r, N], W_b ≈ L_b·R_b per slice b
 * Constant on the left, Y = W·X with W [B…, M, K]: Y = MatMul(L, MatMul(R, X)), L [B…, M, r],
 * R [B…, r, K]. L and R keep W's batch dims, so they broadcast against X exactly as W did.
 *
 * Each slice is its own truncated SVD (L_b = U_r Σ_r^½, R_b = Σ_r^½ V_rᵀ); a batched MatMul
 * needs one r for every slice, so the rank is the largest any slice asks for under the
 * policy (every slice then keeps at least its energy). All slices have the same shape, so
 * the pays rule per slice (r < K·N/(K + N)) is the pays rule of the whole layer.
 *
 * A 1-D X would break the chain (MatMul drops the prepended axis after the first product,
 * and the second then reads the batch axis as rows): an X declared 1-D is declined; X of
 * unknown rank is taken (ONNX Runtime's verification catches a shape change).
 *
 * Data-aware (--calib): slice b only ever meets the rows of X that broadcasting pairs with
 * it, so the statistics hold one Gram G_b = Σ X[b]ᵀX[b] per slice (src/calib/
 * accumulate-slices.ts; on the left Σ X[b]·X[b]ᵀ), and each slice is fitted whitened by
 * its own, as matmul-svd fits a 2-D weight: min ‖X_b(W_b − L_b·R_b)‖ (the SVD of L_xᵀ·W_b
 * with G_b = L_x·L_xᵀ). The rank is then the largest any slice's whitened spectrum asks
 * for. Anchored runs have no paired per-slice statistics: these layers take this
 * independent fit (anchored.ts's fallback says so).
 */
import type { Graph } from '../src/graph/graph.js';
import type { LayerInfo } from '../src/graph/layers.js';
import { fromArray, type Matrix } from '../src/linalg/matrix.js';
import { newNode } from '../src/onnx/schema.js';
import { makeFloatTensor, readTensorFloat } from '../src/onnx/tensor.js';
import { castAware } from '../src/rewrite/cast-weights.js';
import { dataNote, docString, FLOAT_TYPES } from '../src/rewrite/emit.js';
import {
  derivedName, isSkip, skip, type Applied, type LayerInputStats, type LayerPass, type MatchBase, type PassContext, type Skip,
} from '../src/rewrite/pass.js';
import { SvdCache, svdPairCost, svdPairFactors, svdPairRank, whiteningFor, type Whitening } from '../src/rewrite/svd-pair.js';

export interface BatchedMatch extends MatchBase {
  weightRight: boolean;
  /** W's batch dims (all but the last two). */
  batch: number[];
  rows: number;
  cols: number;
  /** One SVD per slice, in row-major batch order. */
  slices: SvdCache[];
}

/** Rank of a value as declared (graph input, output or value_info), if it is. */
function declaredRank(g: Graph, v: string): number | undefined {
  for (let s: Graph | undefined = g; s; s = s.parent) {
    for (const vi of [...s.proto.input, ...s.proto.valueInfo, ...s.proto.output]) {
      const dims = vi.name === v ? vi.type?.tensorType?.shape?.dim : undefined;
      if (dims) return dims.length;
    }
  }
  return undefined;
}

function shapeProblem(layer: LayerInfo): true | Skip {
  if (layer.weightShape.length < 3) return skip('applies to batched (3-D or more) constant weights only');
  return true;
}

export const matmulBatchedSvd: LayerPass<BatchedMatch, 'svd'> = castAware({
  name: 'matmul-batched-svd',
  method: 'svd',
  ops: ['MatMul'],
  // Above matmul-svd, which declines batched weights in match (not in accepts), so that
  // dispatch leads with this pass on them; `accepts` keeps it off every 2-D weight, whose
  // routing is unchanged.
  benefit: 3,

  accepts: shapeProblem,

  match(layer: LayerInfo, cx: PassContext): BatchedMatch | Skip {
    const ok = shapeProblem(layer);
    if (ok !== true) return ok;
    const dataType = layer.weight.tensor.dataType ?? 0;
    if (!FLOAT_TYPES.has(dataType)) return skip(`weight type ${dataType} is not floating point`);
    const weightRight = layer.weightInput === 1;
    const x = layer.node.input[weightRight ? 0 : 1];
    if (x && declaredRank(layer.graph, x) === 1) return skip('the other operand is 1-D: the factored pair would not keep its shape');
    const dims = layer.weightShape;
    const rows = dims[dims.length - 2]!;
    const cols = dims[dims.length - 1]!;
    const batch = dims.slice(0, -2);
    const data = readTensorFloat(layer.weight.tensor, cx.external);
    const count = batch.reduce((a, b) => a * b, 1);
    const whiten = sliceWhitening(cx.stats?.get(layer.name), weightRight ? 'rows' : 'cols', weightRight ? rows : cols, count);
    const slices: SvdCache[] = [];
    for (let b = 0; b < count; b++) {
      const w: Matrix = fromArray(rows, cols, data.subarray(b * rows * cols, (b + 1) * rows * cols));
      slices.push(new SvdCache(w, b, whiten?.(b), cx.gemm));
    }
    return { layer, node: layer.node, graph: layer.graph, dataType, weightRight, batch, rows, cols, slices };
  },

  chooseRanks(m, policy): number[] | Skip {
    let r = 0;
    for (const [b, s] of m.slices.entries()) {
      const c = svdPairRank(s, policy);
      if (isSkip(c)) return skip(m.slices.length > 1 ? `slice ${b}: ${c.skip}` : c.skip);
      r = Math.max(r, c[0]!);
    }
    return [r];
  },

  rankLimits: (m) => [Math.min(m.rows, m.cols)],

  cost(m, ranks) {
    const c = svdPairCost(m.rows, m.cols, ranks[0]!);
    const k = m.slices.length;
    return {
      before: { params: k * c.before.params, macsPerPosition: k * c.before.macsPerPosition },
      after: { params: k * c.after.params, macsPerPosition: k * c.after.macsPerPosition },
    };
  },

  estimate(m, ranks) {
    const e = batchedFactors(m, ranks[0]!);
    return Number.isFinite(e.relError) ? { relError: e.relError } : skip('factorization produced non-finite values');
  },

  apply(m: BatchedMatch, ranks: readonly number[], cx: PassContext): Applied | Skip {
    const r = ranks[0]!;
    const { node: n, graph: g, rows, cols, batch } = m;
    const f = batchedFactors(m, r);
    if (!Number.isFinite(f.relError)) return skip('factorization produced non-finite values');
    const lName = derivedName(cx, n, 'lr_l');
    const rName = derivedName(cx, n, 'lr_r');
    g.addInitializer(makeFloatTensor(lName, [...batch, rows, r], f.left, m.dataType));
    g.addInitializer(makeFloatTensor(rName, [...batch, r, cols], f.right, m.dataType));
    const z = derivedName(cx, n, 'lr_z');
    const x = n.input[m.weightRight ? 0 : 1]!;
    const nameA = derivedName(cx, n, 'lr_a');
    const nameB = derivedName(cx, n, 'lr_b');
    const nodes = m.weightRight
      ? [newNode({ opType: 'MatMul', name: nameA, input: [x, lName], output: [z] }),
         newNode({ opType: 'MatMul', name: nameB, input: [z, rName], output: [n.output[0]!] })]
      : [newNode({ opType: 'MatMul', name: nameA, input: [rName, x], output: [z] }),
         newNode({ opType: 'MatMul', name: nameB, input: [lName, z], output: [n.output[0]!] })];
    const doc = docString('matmul-batched-svd', `rank ${r} of ${m.slices.length} slices ${rows}x${cols} (weight rel. error ${f.relError.toExponential(2)}${dataNote(f.dataError)})`);
    for (const x2 of nodes) x2.docString = doc;
    g.replaceNode(n, nodes);
    return { relError: f.relError, dataError: f.dataError, nodes: nodes.map((x2) => x2.name!) };
  },

  /** W_b = L_b·R_b for every slice, in W's layout [B…, rows, cols]. */
  compose(_chain, factors, f, ext): Float32Array | string {
    const [p, q] = factors;
    if (!p || !q) return 'a batched SVD pair needs two factors';
    // Chain order: right weight X·L·R gives [L, R]; left weight L·(R·X) gives [R, L].
    const [l, r] = f.weightInput === 1 ? [p, q] : [q, p];
    const rows = f.weightDims[f.weightDims.length - 2]!;
    const cols = f.weightDims[f.weightDims.length - 1]!;
    const k = l.dims[l.dims.length - 1]!;
    if (r.dims[r.dims.length - 2] !== k || l.dims[l.dims.length - 2] !== rows || r.dims[r.dims.length - 1] !== cols) return `factor shapes [${l.dims}] and [${r.dims}] do not chain`;
    const count = f.weightDims.slice(0, -2).reduce((a, b) => a * b, 1);
    const lv = l.read(ext);
    const rv = r.read(ext);
    const out = new Float32Array(count * rows * cols);
    for (let b = 0; b < count; b++) {
      for (let i = 0; i < rows; i++) {
        for (let j = 0; j < cols; j++) {
          let s = 0;
          for (let t = 0; t < k; t++) s += lv[b * rows * k + i * k + t]! * rv[b * k * cols + t * cols + j]!;
          out[b * rows * cols + i * cols + j] = s;
        }
      }
    }
    return out;
  },
});

/**
 * Each slice's whitening from per-slice statistics (groups = slices, gram [slices, dim,
 * dim]: src/calib/stats.ts), or undefined when the statistics are not of that form (none,
 * or a layer whose statistics were collected another way): the weight-only fit.
 */
function sliceWhitening(stats: LayerInputStats | undefined, side: Whitening['side'], dim: number, count: number): ((b: number) => Whitening | undefined) | undefined {
  if (!stats || stats.kind !== 'matrix' || (stats.groups ?? 1) !== count || stats.dim !== dim || stats.gram.length !== count * dim * dim || stats.anchor) return undefined;
  return (b) => whiteningFor({ kind: 'matrix', dim, count: stats.count, gram: stats.gram.subarray(b * dim * dim, (b + 1) * dim * dim) }, side, dim);
}

const energy = (a: Float64Array | Float32Array): number => {
  let e = 0;
  for (let i = 0; i < a.length; i++) e += a[i]! * a[i]!;
  return e;
};

/**
 * Every slice's pair at rank r, stacked; the relative error over the whole weight and,
 * when whitened, over the calibration outputs of all slices (each slice's data error
 * weighted by its output energy on the statistics, ‖L_xᵀ·W_b‖²).
 */
function batchedFactors(m: BatchedMatch, r: number): { left: Float32Array; right: Float32Array; relError: number; dataError?: number } {
  const { rows, cols } = m;
  const left = new Float32Array(m.slices.length * rows * r);
  const right = new Float32Array(m.slices.length * r * cols);
  let num = 0, den = 0, dataNum = 0, dataDen = 0;
  let whitened = false;
  for (const [b, s] of m.slices.entries()) {
    const f = svdPairFactors(s, r);
    left.set(f.left, b * rows * r);
    right.set(f.right, b * r * cols);
    const norm2 = energy(s.w.data);
    num += f.relError * f.relError * norm2;
    den += norm2;
    if (f.dataError !== undefined) {
      whitened = true;
      const e = energy(s.a.data);
      dataNum += f.dataError * f.dataError * e;
      dataDen += e;
    }
  }
  return { left, right, relError: den === 0 ? 0 : Math.sqrt(num / den), ...(whitened && { dataError: dataDen === 0 ? 0 : Math.sqrt(dataNum / dataDen) }) };
}
