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

/** Float data accepted by the accumulators (float16 tensors must be converted first). */
export type FloatData = Float32Array | Float64Array;

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

function checkLength(what: string, arr: { length: number }, need: number): void {
  if (arr.length < need) throw new Error(`${what}: needs ${need} values, got ${arr.length}`);
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
 * Everything that places a conv's receptive fields on its input, with auto_pad resolved.
 * `padsBegin` are the pads before each spatial axis (the end pads only matter through
 * `outSpatial`).
 */
export interface PatchGeometry {
  batch: number;
  channels: number;
  groups: number;
  inSpatial: number[];
  kernel: number[];
  strides: number[];
  dilations: number[];
  padsBegin: number[];
  outSpatial: number[];
}

/** Size of one group's patch vector: (channels/groups)·∏kernel. */
export const patchDimOf = (g: { channels: number; groups: number; kernel: readonly number[] }): number =>
  (g.channels / g.groups) * g.kernel.reduce((a, b) => a * b, 1);

/** The subset of a Conv's attributes (see rewrite/conv-geometry.ts) that places its windows. */
export interface ConvPlacement {
  kernel: readonly number[];
  strides: readonly number[];
  dilations: readonly number[];
  /** [begin…, end…] */
  pads: readonly number[];
  autoPad: 'NOTSET' | 'SAME_UPPER' | 'SAME_LOWER' | 'VALID';
  /** Input channels. */
  S: number;
  group: number;
}

/**
 * Resolves a conv's placement on an input of dims [N, S, spatial…] the way ONNX Runtime
 * does (auto_pad SAME_* pads to ceil(in/stride) outputs, the odd pixel at the end for
 * SAME_UPPER and at the start for SAME_LOWER). Returns a reason string when the input
 * does not fit.
 */
export function resolvePatchGeometry(conv: ConvPlacement, inputDims: readonly number[]): PatchGeometry | string {
  const sp = conv.kernel.length;
  if (inputDims.length !== sp + 2) return `input has dims [${inputDims.join(', ')}], expected rank ${sp + 2}`;
  const [batch, channels] = inputDims as [number, number];
  if (channels !== conv.S) return `input has ${channels} channels, the weight expects ${conv.S}`;
  const inSpatial = inputDims.slice(2);
  const padsBegin: number[] = [];
  const outSpatial: number[] = [];
  for (let a = 0; a < sp; a++) {
    const inp = inSpatial[a]!, k = conv.kernel[a]!, s = conv.strides[a]!, d = conv.dilations[a]!;
    const span = (k - 1) * d + 1;
    let begin: number, out: number;
    if (conv.autoPad === 'SAME_UPPER' || conv.autoPad === 'SAME_LOWER') {
      out = Math.ceil(inp / s);
      const total = Math.max(0, (out - 1) * s + span - inp);
      begin = conv.autoPad === 'SAME_UPPER' ? Math.floor(total / 2) : total - Math.floor(total / 2);
    } else if (conv.autoPad === 'VALID') {
      begin = 0;
      out = Math.floor((inp - span) / s) + 1;
    } else {
      begin = conv.pads[a]!;
      out = Math.floor((inp + begin + conv.pads[a + sp]! - span) / s) + 1;
    }
    if (out < 1) return `the kernel does not fit the input on spatial axis ${a} (${inp})`;
    padsBegin.push(begin);
    outSpatial.push(out);
  }
  return {
    batch, channels, groups: conv.group, inSpatial, kernel: [...conv.kernel], strides: [...conv.strides],
    dilations: [...conv.dilations], padsBegin, outSpatial,
  };
}

/** Patches (batch item × output position) per block of accumulatePatches. */
const PATCH_BLOCK = 256;

/**
 * A block of sample vectors, one per column: `rows` values each, stored row-major in a
 * [rows, width] buffer of which the first `n` columns are filled and the rest are zero
 * (so a product with the whole buffer adds nothing for them). `group` is the conv group
 * the vectors belong to. The buffer is reused: consume a block before asking for the next.
 */
export interface SampleBlock { group: number; data: FloatData; rows: number; width: number; n: number }

/** A Float32 buffer for fp32 data (activations are fp32: nothing is lost), else Float64. */
const bufferFor = (x: FloatData, length: number): FloatData => (x instanceof Float32Array ? new Float32Array(length) : new Float64Array(length));

/**
 * The im2col patches exactly as the conv sees them (zero padding, strides, dilations), in
 * blocks of up to `width` (batch item, output position) pairs: for group j the patch
 * vector is p[c·K + κ] = x[n, j·s + c, o·stride − padBegin + κ·dilation] (K = ∏kernel, κ
 * the kernel offset in row-major order, 0 outside the input) — the order of the flattened
 * weight W[t, c, k…], so a group's conv is Y = W_g [T/g, s·K] · p. Blocks run over the
 * pairs, so small feature maps still fill them; each block is yielded once per group.
 */
export function* patchBlocks(x: FloatData, geo: PatchGeometry, width = PATCH_BLOCK): Generator<SampleBlock, void, void> {
  const { batch, channels, groups, inSpatial, kernel, strides, dilations, padsBegin, outSpatial } = geo;
  const sp = kernel.length;
  if (channels % groups !== 0) throw new Error(`patchBlocks: ${channels} channels do not split into ${groups} groups`);
  const s = channels / groups;
  const K = kernel.reduce((a, b) => a * b, 1);
  const D = s * K;
  const inSize = inSpatial.reduce((a, b) => a * b, 1);
  const outSize = outSpatial.reduce((a, b) => a * b, 1);
  checkLength('patchBlocks x', x, batch * channels * inSize);

  const inStride = new Array<number>(sp);
  for (let a = sp - 1, st = 1; a >= 0; a--) { inStride[a] = st; st *= inSpatial[a]!; }
  // Kernel offsets as coordinates.
  const kc: number[][] = [];
  for (let q = 0; q < K; q++) {
    const c = new Array<number>(sp);
    for (let a = sp - 1, r = q; a >= 0; a--) { c[a] = r % kernel[a]!; r = Math.floor(r / kernel[a]!); }
    kc.push(c);
  }
  const total = batch * outSize;
  const nb = Math.min(width, total);
  const index = new Int32Array(K * nb); // input spatial offset per (kernel offset, pair), −1 = padding
  const itemBase = new Float64Array(nb); // offset of the pair's batch item in x
  const buf = bufferFor(x, D * nb);
  const origin = new Array<number>(sp);

  for (let t0 = 0; t0 < total; t0 += nb) {
    const np = Math.min(nb, total - t0);
    for (let e = 0; e < np; e++) {
      const n = Math.floor((t0 + e) / outSize);
      itemBase[e] = n * channels * inSize;
      for (let a = sp - 1, r = t0 + e - n * outSize; a >= 0; a--) {
        origin[a] = (r % outSpatial[a]!) * strides[a]! - padsBegin[a]!;
        r = Math.floor(r / outSpatial[a]!);
      }
      for (let q = 0; q < K; q++) {
        let off = 0;
        let inside = true;
        for (let a = 0; a < sp; a++) {
          const i = origin[a]! + kc[q]![a]! * dilations[a]!;
          if (i < 0 || i >= inSpatial[a]!) { inside = false; break; }
          off += i * inStride[a]!;
        }
        index[q * nb + e] = inside ? off : -1;
      }
    }
    for (let j = 0; j < groups; j++) {
      for (let c = 0; c < s; c++) {
        const chan = (j * s + c) * inSize;
        for (let q = 0; q < K; q++) {
          const row = (c * K + q) * nb;
          const idx = q * nb;
          for (let e = 0; e < np; e++) {
            const o = index[idx + e]!;
            buf[row + e] = o >= 0 ? x[itemBase[e]! + chan + o]! : 0;
          }
          buf.fill(0, row + np, row + nb);
        }
      }
      yield { group: j, data: buf, rows: D, width: nb, n: np };
    }
  }
}

/**
 * Patch statistics: gram [groups, D, D] += Σ p·pᵀ per group (D = s·K, p as in
 * patchBlocks); sum [groups·D] += Σ p. Returns batch·∏outSpatial (the patches added per group).
 */
export function accumulatePatches(gram: Float64Array, x: FloatData, geo: PatchGeometry, sum?: Float64Array): number {
  const D = patchDimOf(geo);
  checkLength('accumulatePatches gram', gram, geo.groups * D * D);
  if (sum) checkLength('accumulatePatches sum', sum, geo.groups * D);
  for (const b of patchBlocks(x, geo)) {
    syrkUpper(gram, b.group * D * D, D, b.data, 0, b.width, b.n);
    if (sum) rowSums(sum, b.group * D, D, b.data, 0, b.width, b.n);
  }
  for (let j = 0; j < geo.groups; j++) mirror(gram, j * D * D, D);
  return geo.batch * geo.outSpatial.reduce((a, b) => a * b, 1);
}

/**
 * Conv input channels as blocks of up to `width` positions: block rows are the s
 * channels of one group, columns are positions of one batch item (for the engine path,
 * where x·xᵀ per block runs as one product).
 */
export function* channelBlocks(
  x: FloatData, batch: number, channels: number, positions: number, groups: number, width: number,
): Generator<SampleBlock, void, void> {
  if (channels % groups !== 0) throw new Error(`channelBlocks: ${channels} channels do not split into ${groups} groups`);
  const s = channels / groups;
  checkLength('channelBlocks x', x, batch * channels * positions);
  const nb = Math.min(width, positions);
  const buf = bufferFor(x, s * nb);
  for (let n = 0; n < batch; n++) {
    for (let t0 = 0; t0 < positions; t0 += nb) {
      const np = Math.min(nb, positions - t0);
      for (let j = 0; j < groups; j++) {
        for (let c = 0; c < s; c++) {
          const src = (n * channels + j * s + c) * positions + t0;
          buf.set(x.subarray(src, src + np), c * nb);
          buf.fill(0, c * nb + np, (c + 1) * nb);
        }
        yield { group: j, data: buf, rows: s, width: nb, n: np };
      }
    }
  }
}

/** rowSums over a block's filled columns, for the engine path (the JS path inlines it). */
export function addBlockSums(sum: Float64Array, sOff: number, b: SampleBlock): void {
  rowSums(sum, sOff, b.rows, b.data, 0, b.width, b.n);
}

/**
 * Row samples X [rows, k] (Y = X·W) as blocks of up to `width` rows, transposed: block
 * rows are the k features, columns the samples (for the engine path and paired statistics).
 */
export function* rowBlocks(x: FloatData, rows: number, k: number, width: number): Generator<SampleBlock, void, void> {
  checkLength('rowBlocks x', x, rows * k);
  const nb = Math.max(1, Math.min(width, rows));
  const buf = bufferFor(x, k * nb);
  for (let r0 = 0; r0 < rows; r0 += nb) {
    const nr = Math.min(nb, rows - r0);
    for (let r = 0; r < nr; r++) {
      const src = (r0 + r) * k;
      for (let c = 0; c < k; c++) buf[c * nb + r] = x[src + c]!;
    }
    if (nr < nb) for (let c = 0; c < k; c++) buf.fill(0, c * nb + nr, (c + 1) * nb);
    yield { group: 0, data: buf, rows: k, width: nb, n: nr };
  }
}
