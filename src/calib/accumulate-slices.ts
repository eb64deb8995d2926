/**
 * Per-slice second moments for a MatMul with a constant batched weight W [B…, K, N]
 * (or on the left, W [B…, M, K]): slice b of W meets only the rows (columns) of the data
 * operand's slices that broadcasting pairs with it, so each slice gets its own Gram.
 *
 * Weight on the right, Y = X·W, X [xb…, M, K]: gram_b += Σ X[o]ᵀ·X[o] over the output batch
 * indices o whose W index is b (X[o] the X slice broadcasting pairs with o).
 * Weight on the left, Y = W·X, X [xb…, K, N]: gram_b += Σ X[o]·X[o]ᵀ (X's columns).
 * A 1-D X is [K] read as one row (right) or one column (left), as MatMul promotes it.
 * Batch dims broadcast numpy-style (aligned from the right, 1 stretches). Each X slice's
 * Gram is computed once and added to every W slice it meets, so an X without batch dims
 * (every slice sees the same rows) costs one Gram, not B.
 */
import { accumulateCols, accumulateRows } from './accumulate.js';
import type { FloatData } from './sample-blocks.js';

/** Row-major strides of `dims` (a dim of 1 gets stride 0: it broadcasts). */
function broadcastStrides(dims: readonly number[]): number[] {
  const s = new Array<number>(dims.length).fill(0);
  let acc = 1;
  for (let i = dims.length - 1; i >= 0; i--) {
    s[i] = dims[i] === 1 ? 0 : acc;
    acc *= dims[i]!;
  }
  return s;
}

/**
 * Adds the per-slice Grams of one data tensor `x` of dims `xDims` into gram [slices, k, k]
 * (slices = ∏ wBatch) and, when given, Σ x per slice into sum [slices, k]. Returns the
 * vectors added to EACH slice (every slice meets the same number of output batch
 * indices), or why the dims do not fit.
 */
export function accumulateSlices(
  gram: Float64Array, x: FloatData, xDims: readonly number[], wBatch: readonly number[], side: 'rows' | 'cols', k: number, sum?: Float64Array,
): number | string {
  const slices = wBatch.reduce((a, b) => a * b, 1);
  if (gram.length !== slices * k * k) throw new Error(`accumulateSlices: gram has ${gram.length} values, expected ${slices}x${k}x${k}`);
  if (sum && sum.length !== slices * k) throw new Error(`accumulateSlices: sum has ${sum.length} values, expected ${slices}x${k}`);
  const dimsText = `input dims [${xDims.join(', ')}]`;
  let xb: number[];
  let vectors: number;
  if (xDims.length === 1) {
    if (xDims[0] !== k) return `${dimsText} are not [K = ${k}]`;
    xb = [];
    vectors = 1;
  } else if (side === 'rows') {
    if (xDims.length < 2 || xDims[xDims.length - 1] !== k) return `${dimsText} do not end in K = ${k}`;
    xb = xDims.slice(0, -2);
    vectors = xDims[xDims.length - 2]!;
  } else {
    if (xDims.length < 2 || xDims[xDims.length - 2] !== k) return `${dimsText} do not have K = ${k} second to last`;
    xb = xDims.slice(0, -2);
    vectors = xDims[xDims.length - 1]!;
  }
  // The output's batch dims: both aligned from the right, 1 broadcasting.
  const n = Math.max(xb.length, wBatch.length);
  const xa = [...new Array<number>(n - xb.length).fill(1), ...xb];
  const wa = [...new Array<number>(n - wBatch.length).fill(1), ...wBatch];
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const a = xa[i]!, b = wa[i]!;
    if (a !== b && a !== 1 && b !== 1) return `${dimsText} do not broadcast against the weight's batch dims [${wBatch.join(', ')}]`;
    out.push(Math.max(a, b));
  }
  const xs = broadcastStrides(xa);
  const ws = broadcastStrides(wa);
  const total = out.reduce((a, b) => a * b, 1);
  // Which W slices each X slice meets, with multiplicity.
  const meets = new Map<number, number[]>();
  const idx = new Array<number>(n).fill(0);
  for (let o = 0; o < total; o++) {
    let xi = 0, wi = 0;
    for (let i = 0; i < n; i++) { xi += idx[i]! * xs[i]!; wi += idx[i]! * ws[i]!; }
    const list = meets.get(xi);
    if (list) list.push(wi); else meets.set(xi, [wi]);
    for (let i = n - 1; i >= 0; i--) { if (++idx[i]! < out[i]!) break; idx[i] = 0; }
  }
  const g = new Float64Array(k * k);
  const s = new Float64Array(k);
  const stride = vectors * k;
  for (const [xi, ws2] of meets) {
    g.fill(0);
    s.fill(0);
    if (side === 'rows' || xDims.length === 1) accumulateRows(g, x.subarray(xi * stride, (xi + 1) * stride), vectors, k, s);
    else accumulateCols(g, x, k, vectors, s, xi * stride);
    for (const wi of ws2) {
      const off = wi * k * k;
      for (let i = 0; i < k * k; i++) gram[off + i] += g[i]!;
      if (sum) for (let i = 0; i < k; i++) sum[wi * k + i] += s[i]!;
    }
  }
  return vectors * (total / slices);
}
