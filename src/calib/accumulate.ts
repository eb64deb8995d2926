/**
 * Pure accumulation of second-moment statistics (Gram matrices) of layer inputs, in
 * Float64. No ORT here: `stats.ts` runs the model and feeds each fetched tensor to these
 * functions, batch by batch.
 *
 * Every `gram` is a row-major, symmetric `dim × dim` Float64Array holding a running sum
 * Σ x·xᵀ (not divided by the count). Every function adds to it and leaves it symmetric
 * (both triangles valid), so calls can be chained across batches. `sum`, when given,
 * receives Σ x (the first moment), so that `mean = sum / count`.
 *
 * The inner kernel computes the upper triangle as 4×2 blocks of dot products over
 * contiguous runs of values (plain JS cannot use SIMD; eight register accumulators and
 * streamed operands measured best here, ~1–1.5 GMAC/s), then mirrors it.
 */
import { checkLength, patchBlocks, patchPairCount, type FloatData, type SampleBlock } from './sample-blocks.js';
import { patchDimOf, type PatchGeometry } from './patch-geometry.js';

/** Length of the runs of values the kernel dots at a time (keeps operands in L1/L2). */
const CHUNK = 512;

/**
 * g[gOff + i·dim + j] += Σ_t a[aOff + i·lda + t] · a[aOff + j·lda + t] for i ≤ j < dim,
 * t < n: the upper triangle (and, inside diagonal 4×2 blocks, some lower entries) of A·Aᵀ
 * for A = `dim` rows of `n` values with stride `lda`.
 */
function syrkUpper(g: Float64Array, gOff: number, dim: number, a: FloatData, aOff: number, lda: number, n: number): void {
  const d4 = dim - (dim % 4);
  for (let i = 0; i < d4; i += 4) {
    const r0 = aOff + i * lda, r1 = r0 + lda, r2 = r1 + lda, r3 = r2 + lda;
    let j = i;
    for (; j + 1 < dim; j += 2) {
      const c0 = aOff + j * lda, c1 = c0 + lda;
      let s00 = 0, s01 = 0, s10 = 0, s11 = 0, s20 = 0, s21 = 0, s30 = 0, s31 = 0;
      for (let t = 0; t < n; t++) {
        const y0 = a[c0 + t]!, y1 = a[c1 + t]!;
        const x0 = a[r0 + t]!, x1 = a[r1 + t]!, x2 = a[r2 + t]!, x3 = a[r3 + t]!;
        s00 += x0 * y0; s01 += x0 * y1; s10 += x1 * y0; s11 += x1 * y1;
        s20 += x2 * y0; s21 += x2 * y1; s30 += x3 * y0; s31 += x3 * y1;
      }
      let o = gOff + i * dim + j;
      g[o] += s00; g[o + 1] += s01; o += dim;
      g[o] += s10; g[o + 1] += s11; o += dim;
      g[o] += s20; g[o + 1] += s21; o += dim;
      g[o] += s30; g[o + 1] += s31;
    }
    if (j < dim) { // one column left (odd dim)
      const c = aOff + j * lda;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let t = 0; t < n; t++) {
        const y = a[c + t]!;
        s0 += a[r0 + t]! * y; s1 += a[r1 + t]! * y; s2 += a[r2 + t]! * y; s3 += a[r3 + t]! * y;
      }
      const o = gOff + i * dim + j;
      g[o] += s0; g[o + dim] += s1; g[o + 2 * dim] += s2; g[o + 3 * dim] += s3;
    }
  }
  // Rows past the last block of four (j ≥ i).
  for (let i = d4; i < dim; i++) {
    const r = aOff + i * lda;
    for (let j = i; j < dim; j++) {
      const c = aOff + j * lda;
      let s = 0;
      for (let t = 0; t < n; t++) s += a[r + t]! * a[c + t]!;
      g[gOff + i * dim + j] += s;
    }
  }
}

/** Runs syrkUpper over the n values in chunks (long rows would otherwise stream from memory per block). */
function syrkChunked(g: Float64Array, gOff: number, dim: number, a: FloatData, aOff: number, lda: number, n: number): void {
  for (let t = 0; t < n; t += CHUNK) syrkUpper(g, gOff, dim, a, aOff + t, lda, Math.min(CHUNK, n - t));
}

/** Copies the upper triangle of a dim×dim block onto the lower one. */
function mirror(g: Float64Array, gOff: number, dim: number): void {
  for (let i = 1; i < dim; i++) {
    const row = gOff + i * dim;
    for (let j = 0; j < i; j++) g[row + j] = g[gOff + j * dim + i]!;
  }
}

/** Adds Σ of each of `dim` rows (n values, stride lda) into sum[sOff + i]. */
function rowSums(sum: Float64Array, sOff: number, dim: number, a: FloatData, aOff: number, lda: number, n: number): void {
  for (let i = 0; i < dim; i++) {
    const r = aOff + i * lda;
    let s = 0;
    for (let t = 0; t < n; t++) s += a[r + t]!;
    sum[sOff + i] += s;
  }
}

/** Rows packed per block by accumulateRows. */
const ROW_BLOCK = 128;

/**
 * Row samples: X [rows, k] row-major (Y = X·W with W [k, n]; leading dims of an N-D X
 * flattened into rows). gram [k×k] += XᵀX; sum [k] += Σ rows. Returns `rows` (the count added).
 */
export function accumulateRows(gram: Float64Array, x: FloatData, rows: number, k: number, sum?: Float64Array): number {
  checkLength('accumulateRows gram', gram, k * k);
  checkLength('accumulateRows x', x, rows * k);
  if (sum) checkLength('accumulateRows sum', sum, k);
  // Pack blocks of rows transposed ([k, block]) so each feature's values are contiguous.
  const nb = Math.min(ROW_BLOCK, rows);
  const buf = new Float64Array(k * nb);
  for (let r0 = 0; r0 < rows; r0 += ROW_BLOCK) {
    const nr = Math.min(ROW_BLOCK, rows - r0);
    for (let r = 0; r < nr; r++) {
      const src = (r0 + r) * k;
      for (let c = 0; c < k; c++) buf[c * nb + r] = x[src + c]!;
    }
    syrkUpper(gram, 0, k, buf, 0, nb, nr);
    if (sum) rowSums(sum, 0, k, buf, 0, nb, nr);
  }
  mirror(gram, 0, k);
  return rows;
}

/**
 * Column samples: X [k, cols] row-major (Y = W·X with W [m, k]; Gemm with transA=1).
 * gram [k×k] += X·Xᵀ; sum [k] += Σ columns. `offset` is where X starts in `x`.
 * Returns `cols` (the count added).
 */
export function accumulateCols(gram: Float64Array, x: FloatData, k: number, cols: number, sum?: Float64Array, offset = 0): number {
  checkLength('accumulateCols gram', gram, k * k);
  checkLength('accumulateCols x', x, offset + k * cols);
  if (sum) checkLength('accumulateCols sum', sum, k);
  syrkChunked(gram, 0, k, x, offset, cols, cols);
  if (sum) rowSums(sum, 0, k, x, offset, cols, cols);
  mirror(gram, 0, k);
  return cols;
}

/**
 * Conv input channels: x [batch, channels, positions] (positions = ∏ spatial dims),
 * `groups` groups of s = channels/groups channels. gram [groups, s, s] += per group
 * Σ over batch and positions of x·xᵀ (block j covers channels j·s … j·s+s−1);
 * sum [channels] += Σ over batch and positions. Returns batch·positions.
 */
export function accumulateConvChannels(
  gram: Float64Array, x: FloatData, batch: number, channels: number, positions: number, groups: number, sum?: Float64Array,
): number {
  if (channels % groups !== 0) throw new Error(`accumulateConvChannels: ${channels} channels do not split into ${groups} groups`);
  const s = channels / groups;
  checkLength('accumulateConvChannels gram', gram, groups * s * s);
  checkLength('accumulateConvChannels x', x, batch * channels * positions);
  if (sum) checkLength('accumulateConvChannels sum', sum, channels);
  for (let n = 0; n < batch; n++) {
    for (let j = 0; j < groups; j++) {
      const off = (n * channels + j * s) * positions;
      syrkChunked(gram, j * s * s, s, x, off, positions, positions);
      if (sum) rowSums(sum, j * s, s, x, off, positions, positions);
    }
  }
  for (let j = 0; j < groups; j++) mirror(gram, j * s * s, s);
  return batch * positions;
}

/**
 * Patch statistics: gram [groups, D, D] += Σ p·pᵀ per group (D = s·K, p as in
 * patchBlocks, over `pairs` when given); sum [groups·D] += Σ p. Returns the patches added
 * per group (batch·∏outSpatial, or pairs.length).
 */
export function accumulatePatches(gram: Float64Array, x: FloatData, geo: PatchGeometry, sum?: Float64Array, pairs?: Int32Array): number {
  const D = patchDimOf(geo);
  checkLength('accumulatePatches gram', gram, geo.groups * D * D);
  if (sum) checkLength('accumulatePatches sum', sum, geo.groups * D);
  for (const b of patchBlocks(x, geo, undefined, pairs)) {
    syrkUpper(gram, b.group * D * D, D, b.data, 0, b.width, b.n);
    if (sum) rowSums(sum, b.group * D, D, b.data, 0, b.width, b.n);
  }
  for (let j = 0; j < geo.groups; j++) mirror(gram, j * D * D, D);
  return patchPairCount(geo, pairs);
}

/** rowSums over a block's filled columns, for the engine path (the JS path inlines it). */
export function addBlockSums(sum: Float64Array, sOff: number, b: SampleBlock): void {
  rowSums(sum, sOff, b.rows, b.data, 0, b.width, b.n);
}
