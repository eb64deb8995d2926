/**
 * gather-svd — an embedding lookup in a constant table becomes a lookup in a thin table
 * followed by one MatMul through rank r.
 *
 * Before: Y = Gather(E, idx; axis 0)               E [V, D] constant, idx any int shape
 * After:  Y = MatMul(Gather(A, idx; axis 0), B)    A = U_r Σ_r^½ [V, r], B = Σ_r^½ V_rᵀ [r, D]
 * Row i of E is eᵢᵀ ≈ aᵢᵀ·B, so gathering rows of A and multiplying by B gives the rows of
 * E_r (the rank-r truncated SVD, Eckart–Young optimal in Frobenius norm over all rows).
 *
 * Cost: params V·D → r·(V + D); the Gather ran no MACs, the MatMul adds r·D per looked-up
 * token. The default pays rule (fewer params AND fewer MACs) can never hold, so this pass
 * pays on parameters alone: it is worth it when a run saves parameters or file size
 * (`--save params`, a params budget). A run that saves latency times the chain against the
 * Gather like any other rewrite (src/optimize/latency-screen.ts), which is slower by
 * construction, so the default run drops it with the timings as the reason.
 *
 * Data-aware: with the calibration inputs' lookup counts cᵢ of each row (LayerInputStats
 * rowCounts; the Gram of one-hot rows is diag(c)), the fit minimises Σᵢ wᵢ‖eᵢ − êᵢ‖² with
 * wᵢ = cᵢ/mean(c) + floor (src/linalg/row-weights.ts): the SVD is of D·E with D = diag(√w),
 * and A = D⁻¹·U_r Σ_r^½, so rows the data uses often are kept more exactly and rows it
 * never uses still approximately. Without counts every row counts the same.
 * A table shared by several Gathers is factorized once and the factors shared; a table
 * also read by another kind of node is declined (its factors would only add parameters).
 */
import { attrInt } from '../src/graph/attrs.js';
import type { Graph } from '../src/graph/graph.js';
import type { LayerInfo } from '../src/graph/layers.js';
import { fromArray } from '../src/linalg/matrix.js';
import { newNode } from '../src/onnx/schema.js';
import { makeFloatTensor, readTensorFloat } from '../src/onnx/tensor.js';
import { castAware } from '../src/rewrite/cast-weights.js';
import { docString, FLOAT_TYPES } from '../src/rewrite/emit.js';
import {
  derivedName, skip, type Applied, type CostPair, type LayerPass, type MatchBase, type PassContext, type Skip,
} from '../src/rewrite/pass.js';
import { pairProduct, SvdCache, svdPairFactors, svdPairRank } from '../src/rewrite/svd-pair.js';
import { rowScales } from '../src/linalg/row-weights.js';

export interface GatherMatch extends MatchBase {
  /** SVD of the table, its rows scaled by `rowScales` when data-aware. */
  svd: SvdCache;
  /** √ of each row's weight (data-aware), to undo on the thin table A. */
  rowScales?: Float64Array;
  /** What the layer's report says about its calibration lookups (used, out of range), when it had statistics. */
  lookups?: string;
}

/** The report's words on the calibration lookups behind the row weights. */
function lookupNote(counted: number, outOfRange: number, rows: number, weighted: boolean): string {
  const bad = outOfRange > 0 ? `; ${outOfRange} lookup(s) outside [-${rows}, ${rows}) ignored` : '';
  return weighted
    ? `rows weighted by ${counted} calibration lookup(s)${bad}`
    : `no calibration lookup in range${bad}: rows weighted equally`;
}

/** The factors of the (row-weighted) table: A's rows divided by the scales again, so A·B ≈ E. */
function tableFactors(m: GatherMatch, r: number): ReturnType<typeof svdPairFactors> {
  const f = svdPairFactors(m.svd, r);
  const s = m.rowScales;
  if (!s) return f;
  const left = Float32Array.from(f.left, (v, k) => v / s[Math.floor(k / r)]!);
  return { ...f, left };
}

/** Why a Gather is not a row lookup in a 2-D table, or true. */
function lookupProblem(layer: LayerInfo): true | Skip {
  if (layer.weightInput !== 0 || layer.weightShape.length !== 2) return skip('needs a constant 2-D table as the Gather\'s data input');
  const axis = attrInt(layer.node, 'axis', 0);
  if (axis !== 0 && axis !== -2) return skip(`Gather along axis ${axis}: only row lookups (axis 0) are factorized`);
  return true;
}

/**
 * Another node (not a row Gather) reads the table: factoring would keep E and add A and B.
 * A table stored fp16/bf16 behind a Cast is looked up through the Cast's output (who else
 * reads the stored table is castAware's check).
 */
function otherReader(layer: LayerInfo): string | undefined {
  const seen = new Set<Graph>([layer.graph, layer.weight.graph]);
  const table = layer.cast ? layer.cast.value : layer.weightName;
  for (const g of seen) {
    for (const c of g.consumers(table)) {
      const rowGather = c.opType === 'Gather' && (c.domain ?? '') === '' && c.input[0] === table
        && c.input[1] !== table && [0, -2].includes(attrInt(c, 'axis', 0));
      if (!rowGather) return `${c.opType} ${c.name || c.output[0] || ''}`.trim();
    }
    if (g.isGraphOutput(table)) return 'a graph output';
  }
  return undefined;
}

export const gatherSvd: LayerPass<GatherMatch, 'svd'> = castAware({
  name: 'gather-svd',
  method: 'svd',
  ops: ['Gather'],
  benefit: 1,

  accepts: lookupProblem,

  match(layer: LayerInfo, cx: PassContext): GatherMatch | Skip {
    const ok = lookupProblem(layer);
    if (ok !== true) return ok;
    const dataType = layer.weight.tensor.dataType ?? 0;
    if (!FLOAT_TYPES.has(dataType)) return skip(`table type ${dataType} is not floating point`);
    const other = otherReader(layer);
    if (other) return skip(`the table ${layer.weightName} is also read by ${other}: its factors would add parameters`);
    const [rows, cols] = layer.weightShape as [number, number];
    const data = readTensorFloat(layer.weight.tensor, cx.external);
    const st = cx.stats?.get(layer.name);
    const counts = st?.rowCounts?.length === rows ? st.rowCounts : undefined;
    const scales = counts ? rowScales(counts) : undefined;
    const lookups = counts && lookupNote(st!.count, st!.indexOutOfRange ?? 0, rows, scales !== undefined);
    if (scales) for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) data[i * cols + j]! *= scales[i]!;
    const e = fromArray(rows, cols, data);
    return { layer, node: layer.node, graph: layer.graph, dataType, svd: new SvdCache(e, 0, undefined, cx.gemm), ...(scales && { rowScales: scales }), ...(lookups && { lookups }) };
  },

  chooseRanks: (m, policy) => svdPairRank(m.svd, policy),

  rankLimits: (m) => [Math.min(m.svd.w.rows, m.svd.w.cols)],

  /** Per looked-up token: the Gather copies D values (no MACs); after, the MatMul runs r·D. */
  cost(m, ranks): CostPair {
    const { rows: v, cols: d } = m.svd.w;
    const r = ranks[0]!;
    return { before: { params: v * d, macsPerPosition: 0 }, after: { params: r * (v + d), macsPerPosition: r * d } };
  },

  /** Parameters alone: a lookup has no MACs to save (see the top of the file). */
  pays: (c) => c.after.params < c.before.params,

  estimate(m, ranks) {
    const f = tableFactors(m, ranks[0]!);
    return Number.isFinite(f.relError) ? { relError: f.relError } : skip('factorization produced non-finite values');
  },

  apply(m: GatherMatch, ranks: readonly number[], cx: PassContext): Applied | Skip {
    const r = ranks[0]!;
    const { node: n, graph: g } = m;
    const { rows, cols } = m.svd.w;
    // Row-weighted factors depend on this Gather's lookups: shared only when not weighted.
    const key = `${m.layer.weight.graph.proto.name}|${m.layer.weightName}|gather-svd|${r}${m.rowScales ? `|${m.layer.name}` : ''}`;
    let entry = cx.shared.get(key);
    if (!entry || !visible(g, entry.names)) {
      const f = tableFactors(m, r);
      if (!Number.isFinite(f.relError)) return skip('factorization produced non-finite values');
      entry = { names: [derivedName(cx, n, 'lr_table'), derivedName(cx, n, 'lr_r')], relError: f.relError };
      g.addInitializer(makeFloatTensor(entry.names[0]!, [rows, r], f.left, m.dataType));
      g.addInitializer(makeFloatTensor(entry.names[1]!, [r, cols], f.right, m.dataType));
      cx.shared.set(key, entry);
    }
    const [aName, bName] = entry.names as [string, string];
    const z = derivedName(cx, n, 'lr_z');
    // The Gather keeps its attributes (axis) and indices; only its table changes.
    const lookup = newNode({ ...n, opType: 'Gather', name: derivedName(cx, n, 'lr_a'), input: [aName, n.input[1]!], output: [z], attribute: n.attribute });
    const product = newNode({ opType: 'MatMul', name: derivedName(cx, n, 'lr_b'), input: [z, bName], output: [n.output[0]!] });
    const nodes = [lookup, product];
    const doc = docString('gather-svd', `rank ${r} of ${rows}x${cols} table${m.rowScales ? ', rows weighted by their calibration lookups' : ''} (${m.rowScales ? 'weighted ' : ''}weight rel. error ${entry.relError.toExponential(2)})`);
    for (const x of nodes) x.docString = doc;
    g.replaceNode(n, nodes);
    return { relError: entry.relError, nodes: nodes.map((x) => x.name!), ...(m.lookups && { note: m.lookups }) };
  },

  /** A·B: the chain's factors in order are the thin table and the right factor. */
  compose(_chain, factors, _f, ext): Float32Array | string {
    const p = pairProduct(factors, 1, ext);
    return typeof p === 'string' ? p : p.w;
  },
});

/** Shared factors are reusable only where the graph can see them (same graph or an enclosing one). */
function visible(g: Graph, names: readonly string[]): boolean {
  return names.every((nm) => {
    for (let s: Graph | undefined = g; s; s = s.parent) if (s.initializer(nm)) return true;
    return false;
  });
}
