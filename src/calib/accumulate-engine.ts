/**
 * The conv accumulators of accumulate.ts with their Gram products on a GemmEngine.
 *
 * Why: at high resolution the patch Gram is the cost of calibration. A 128-channel 3x3
 * conv on a 512² map has 262k patches of 1152 values, 174 GMAC per sample: minutes in
 * plain JS (~1–1.5 GMAC/s), seconds in ORT's GEMM. Each block's B·Bᵀ runs in the
 * engine's precision (fp32 for fp32 activations, summing at most `width` products per
 * entry) and is added to the Float64 running sum, so rounding does not grow with the
 * number of blocks.
 */
import type { GemmEngine } from '../linalg/engine.js';
import { addBlockSums } from './accumulate.js';
import { addSymmetricGram } from './symmetric-gram.js';
import { patchDimOf, type PatchGeometry } from './patch-geometry.js';
import { channelBlocks, patchBlocks, patchPairCount, type FloatData, type SampleBlock } from './sample-blocks.js';

/** Values per block buffer (16 MB as fp32): wide enough for the GEMM, small beside the activations. */
const BLOCK_VALUES = 4 * 2 ** 20;

/**
 * Samples per block: BLOCK_VALUES of them, and for vectors past 2048 values at least half as
 * many samples as values. Each block's D×D product lands in fresh memory, whose first touch
 * cost here about what a product of D/4 samples does (D = 4608: ~0.2 s, AMD EPYC): narrower
 * blocks of wide patches spent as much on that as on the products.
 */
const widthFor = (rows: number): number => Math.max(256, Math.min(65536, Math.max(Math.floor(BLOCK_VALUES / Math.max(1, rows)), Math.ceil(rows / 2))));

function addBlockGram(engine: GemmEngine, gram: Float64Array, gOff: number, b: SampleBlock): Promise<void> {
  return addSymmetricGram(engine, gram, gOff, { rows: b.rows, cols: b.width, data: b.data });
}

/** accumulateConvChannels with the products on `engine` (same result up to rounding); `width`: positions per product. */
export async function accumulateConvChannelsOn(
  engine: GemmEngine, gram: Float64Array, x: FloatData, batch: number, channels: number, positions: number, groups: number, sum?: Float64Array,
  width = widthFor(channels / groups),
): Promise<number> {
  const s = channels / groups;
  for (const b of channelBlocks(x, batch, channels, positions, groups, width)) {
    await addBlockGram(engine, gram, b.group * s * s, b);
    if (sum) addBlockSums(sum, b.group * s, b);
  }
  return batch * positions;
}

/** accumulatePatches with the products on `engine` (same result up to rounding); `width`: patches per product. */
export async function accumulatePatchesOn(
  engine: GemmEngine, gram: Float64Array, x: FloatData, geo: PatchGeometry, sum?: Float64Array, pairs?: Int32Array, width = widthFor(patchDimOf(geo)),
): Promise<number> {
  const D = patchDimOf(geo);
  for (const b of patchBlocks(x, geo, width, pairs)) {
    await addBlockGram(engine, gram, b.group * D * D, b);
    if (sum) addBlockSums(sum, b.group * D, b);
  }
  return patchPairCount(geo, pairs);
}

/** Running sums of paired statistics over the same samples of x (original) and x̂ (partly compressed model). */
export interface PairSums {
  /** Σ x·xᵀ, Σ x̂·x̂ᵀ, Σ x̂·xᵀ, each [groups, dim, dim]. */
  gram: Float64Array;
  gramHat: Float64Array;
  cross: Float64Array;
  /** Σ x, Σ x̂ [groups·dim]. */
  sum?: Float64Array;
  sumHat?: Float64Array;
  /**
   * Per-group shifts s, ŝ [groups·dim] (the first block's means), set on first use: the
   * products run on x − s and x̂ − ŝ, so the sums hold shifted values until unshiftPairSums.
   * fp32 products of activations with large means would otherwise lose the covariance to
   * cancellation (E[x·xᵀ] − μ·μᵀ) when the means are removed later.
   */
  shift?: Float64Array;
  shiftHat?: Float64Array;
  shifted?: Uint8Array;
  /** Σ x·xᵀ is known already (the original's statistics, same samples): `gram` is neither computed nor touched. */
  noGram?: boolean;
}

/** Subtracts a per-row shift from a block's filled columns (in place: the block is the generator's scratch). */
function shiftBlock(b: SampleBlock, shift: Float64Array, off: number): void {
  for (let i = 0; i < b.rows; i++) {
    const v = shift[off + i]!;
    if (v === 0) continue;
    const r = i * b.width;
    for (let t = 0; t < b.n; t++) b.data[r + t] -= v;
  }
}

/** Per-row means of a block's filled columns into shift[off…]. */
function blockMeans(b: SampleBlock, shift: Float64Array, off: number): void {
  for (let i = 0; i < b.rows; i++) {
    let s = 0;
    const r = i * b.width;
    for (let t = 0; t < b.n; t++) s += b.data[r + t]!;
    shift[off + i] = b.n > 0 ? s / b.n : 0;
  }
}

/**
 * Turns shifted sums back into plain ones, in fp64 (n vectors per group):
 * Σ x·xᵀ = Σ(x−s)(x−s)ᵀ + s·Σ(x−s)ᵀ + Σ(x−s)·sᵀ + n·s·sᵀ, likewise the cross term, Σ x = Σ(x−s) + n·s.
 * With `same` only gram and sum (x̂ = x).
 */
export function unshiftPairSums(sums: PairSums, dim: number, groups: number, n: number, same = false): void {
  const s = sums.shift;
  if (!s || !sums.sum) return;
  const sh = sums.shiftHat ?? s;
  const sumHat = sums.sumHat ?? sums.sum;
  for (let g = 0; g < groups; g++) {
    const o = g * dim;
    const m = g * dim * dim;
    for (let i = 0; i < dim; i++) {
      for (let j = 0; j < dim; j++) {
        if (!sums.noGram) sums.gram[m + i * dim + j] += s[o + i]! * sums.sum[o + j]! + sums.sum[o + i]! * s[o + j]! + n * s[o + i]! * s[o + j]!;
        if (!same) {
          sums.gramHat[m + i * dim + j] += sh[o + i]! * sumHat[o + j]! + sumHat[o + i]! * sh[o + j]! + n * sh[o + i]! * sh[o + j]!;
          sums.cross[m + i * dim + j] += sh[o + i]! * sums.sum[o + j]! + sumHat[o + i]! * s[o + j]! + n * sh[o + i]! * s[o + j]!;
        }
      }
    }
  }
  for (let i = 0; i < sums.sum.length; i++) sums.sum[i] += n * s[i]!;
  if (!same && sums.sumHat) for (let i = 0; i < sums.sumHat.length; i++) sums.sumHat[i] += n * sh[i]!;
}


/**
 * Adds the paired statistics of two block streams that yield the same samples in the same
 * order (the same generator over x and over x̂): per block, B·Bᵀ, B̂·B̂ᵀ and B̂·Bᵀ on
 * `engine`, into the Float64 sums of the block's group.
 */
export async function accumulatePairBlocksOn(
  engine: GemmEngine, sums: PairSums, dim: number, xs: Iterator<SampleBlock>, hats: Iterator<SampleBlock> | 'same',
): Promise<void> {
  const shiftOf = (b: SampleBlock, shift: Float64Array, first: boolean): void => {
    if (first) blockMeans(b, shift, b.group * dim);
    shiftBlock(b, shift, b.group * dim);
  };
  const firstOf = (b: SampleBlock): boolean => {
    sums.shifted ??= new Uint8Array(Math.max(1, (sums.sum?.length ?? dim) / dim));
    const f = sums.shifted[b.group] === 0;
    sums.shifted[b.group] = 1;
    return f;
  };
  if (hats === 'same') {
    // x̂ = x: only Σ x·xᵀ and Σ x (the caller aliases the rest).
    for (let a = xs.next(); !a.done; a = xs.next()) {
      if (sums.shift) shiftOf(a.value, sums.shift, firstOf(a.value));
      if (!sums.noGram) await addBlockGram(engine, sums.gram, a.value.group * dim * dim, a.value);
      if (sums.sum) addBlockSums(sums.sum, a.value.group * dim, a.value);
    }
    return;
  }
  for (;;) {
    const a = xs.next();
    const b = hats.next();
    if (a.done || b.done) {
      if (!a.done || !b.done) throw new Error('accumulatePairBlocksOn: the two block streams differ in length');
      return;
    }
    const x = a.value;
    const h = b.value;
    if (x.group !== h.group || x.rows !== h.rows || x.width !== h.width || x.n !== h.n) throw new Error('accumulatePairBlocksOn: the two block streams differ');
    if (sums.shift && sums.shiftHat) {
      const first = firstOf(x);
      shiftOf(x, sums.shift, first);
      shiftOf(h, sums.shiftHat, first);
    }
    const off = x.group * dim * dim;
    const mx = { rows: x.rows, cols: x.width, data: x.data };
    const mh = { rows: h.rows, cols: h.width, data: h.data };
    const add = async (target: Float64Array, l: typeof mx, r: typeof mx): Promise<void> => {
      const p = (await engine.matmul(l, r, { transB: true })).data;
      for (let i = 0; i < p.length; i++) target[off + i] += p[i]!;
    };
    if (!sums.noGram) await addBlockGram(engine, sums.gram, off, x);
    await addBlockGram(engine, sums.gramHat, off, h);
    await add(sums.cross, mh, mx);
    if (sums.sum) addBlockSums(sums.sum, x.group * dim, x);
    if (sums.sumHat) addBlockSums(sums.sumHat, h.group * dim, h);
  }
}

/** Block width for `rows`-value sample vectors (the conv paths' choice). */
export const pairBlockWidth = (rows: number): number => widthFor(rows);
