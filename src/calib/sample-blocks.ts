/**
 * Layer inputs as blocks of sample vectors, one per column: a conv's im2col patches, its
 * input channels, or row samples. The accumulators (accumulate.ts) and the engine path
 * (accumulate-engine.ts) take their statistics block by block.
 */
import type { PatchGeometry } from './patch-geometry.js';

/** Float data accepted by the accumulators (float16 tensors must be converted first). */
export type FloatData = Float32Array | Float64Array;

/** Throws when an array is shorter than a call needs (a wiring bug, not a user mistake). */
export function checkLength(what: string, arr: { length: number }, need: number): void {
  if (arr.length < need) throw new Error(`${what}: needs ${need} values, got ${arr.length}`);
}

/** Patches (batch item × output position) per block of accumulatePatches. */
const PATCH_BLOCK = 256;

/** An integer hash (a murmur3 finaliser): spreads consecutive k over [0, 2³²). */
function mix(k: number): number {
  let h = Math.imul(k ^ 0x9e3779b9, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * Which of `total` (batch item, output position) pairs a patch statistic reads: all
 * (undefined) when total ≤ max, else `max` of them, one drawn from each of `max` equal
 * strata in order. The pairs of one high-resolution feature map are so alike that a
 * stratified sample estimates their covariance almost as well as all of them, at a
 * fraction of the D² products per pair; strata follow the map row by row, so no region is
 * left out, and the draw inside each stratum avoids aliasing with a regular grid (an
 * upsampled map repeats with period 2). Deterministic: the original and the partly
 * compressed model's input are read at the same pairs.
 */
export function samplePairs(total: number, max: number): Int32Array | undefined {
  if (!(max >= 1) || total <= max) return undefined;
  const out = new Int32Array(max);
  for (let k = 0; k < max; k++) {
    const lo = Math.floor((k * total) / max);
    const hi = Math.floor(((k + 1) * total) / max);
    out[k] = lo + (mix(k) % Math.max(1, hi - lo));
  }
  return out;
}

/**
 * A block of sample vectors, one per column: `rows` values each, stored row-major in a
 * [rows, width] buffer of which the first `n` columns are filled and the rest are zero
 * (so a product with the whole buffer adds nothing for them). `group` is the conv group
 * the vectors belong to. The buffer is reused: consume a block before asking for the next.
 */
export interface SampleBlock { group: number; data: FloatData; rows: number; width: number; n: number }

/** A Float32 buffer for fp32 data (activations are fp32: nothing is lost), else Float64. */
const bufferFor = (x: FloatData, length: number): FloatData => (x instanceof Float32Array ? new Float32Array(length) : new Float64Array(length));

/** Patches a patch statistic reads from one tensor: batch·∏outSpatial, or the sampled pairs. */
export function patchPairCount(geo: PatchGeometry, pairs?: Int32Array): number {
  return pairs ? pairs.length : geo.batch * geo.outSpatial.reduce((a, b) => a * b, 1);
}

/**
 * The im2col patches exactly as the conv sees them (zero padding, strides, dilations), in
 * blocks of up to `width` (batch item, output position) pairs: for group j the patch
 * vector is p[c·K + κ] = x[n, j·s + c, o·stride − padBegin + κ·dilation] (K = ∏kernel, κ
 * the kernel offset in row-major order, 0 outside the input) — the order of the flattened
 * weight W[t, c, k…], so a group's conv is Y = W_g [T/g, s·K] · p. Blocks run over the
 * pairs, so small feature maps still fill them; each block is yielded once per group.
 * `pairs` (from samplePairs, increasing) restricts the blocks to those pairs. With
 * `geo.transposed` the vectors are a ConvTranspose's scatter patches (same index order).
 */
export function* patchBlocks(x: FloatData, geo: PatchGeometry, width = PATCH_BLOCK, pairs?: Int32Array): Generator<SampleBlock, void, void> {
  const { batch, channels, groups, inSpatial, kernel, strides, dilations, padsBegin, outSpatial, transposed } = geo;
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
  const total = pairs ? pairs.length : batch * outSize;
  const nb = Math.min(width, total);
  const index = new Int32Array(K * nb); // input spatial offset per (kernel offset, pair), −1 = padding
  const itemBase = new Float64Array(nb); // offset of the pair's batch item in x
  const buf = bufferFor(x, D * nb);
  const origin = new Array<number>(sp);

  for (let t0 = 0; t0 < total; t0 += nb) {
    const np = Math.min(nb, total - t0);
    for (let e = 0; e < np; e++) {
      const t = pairs ? pairs[t0 + e]! : t0 + e;
      const n = Math.floor(t / outSize);
      itemBase[e] = n * channels * inSize;
      for (let a = sp - 1, r = t - n * outSize; a >= 0; a--) {
        const o = r % outSpatial[a]!;
        // A conv's window starts at o·stride − pad; a ConvTranspose's taps reach back from o + pad.
        origin[a] = transposed ? o + padsBegin[a]! : o * strides[a]! - padsBegin[a]!;
        r = Math.floor(r / outSpatial[a]!);
      }
      for (let q = 0; q < K; q++) {
        let off = 0;
        let inside = true;
        for (let a = 0; a < sp; a++) {
          let i = origin[a]! + kc[q]![a]! * dilations[a]!;
          if (transposed) {
            // Input q scattered to o through tap κ when o + pad − κ·dilation = q·stride.
            const num = origin[a]! - kc[q]![a]! * dilations[a]!;
            if (num < 0 || num % strides[a]! !== 0) { inside = false; break; }
            i = num / strides[a]!;
          }
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
