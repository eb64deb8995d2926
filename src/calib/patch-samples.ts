/**
 * A fixed number of a conv's im2col patches kept whole, in both models at the same
 * (batch item, output position) pairs: what a fit through the activation after the conv
 * needs (optimize/flat-refit.ts), since its target depends on each sample's prediction and
 * cannot be summed into moments ahead of the fit.
 */
import type { PatchGeometry } from './patch-geometry.js';
import { patchDimOf } from './patch-geometry.js';
import { patchBlocks, patchPairCount, samplePairs, type FloatData } from './sample-blocks.js';

/** Rows of patches [n, D] of the original model's input (x) and the partly compressed one's (x̂). */
export interface PatchSamples {
  dim: number;
  n: number;
  /** [n, D], row-major. */
  x: Float32Array;
  /** [n, D]; the same array as x when nothing is compressed upstream. */
  xHat: Float32Array;
}

export interface PatchSampler {
  readonly rows: number;
  readonly perFeed: number;
  dim?: number;
  n: number;
  x?: Float32Array;
  xHat?: Float32Array;
  same?: boolean;
  /** Set when a feed could not be sampled: the layer keeps no samples. */
  failed?: boolean;
}

/** Bytes of samples a layer keeps at most (both models' patches, float32). */
export const MAX_SAMPLE_BYTES = 128 * 2 ** 20;
/** Patches kept at most per layer. */
export const MAX_SAMPLE_ROWS = 8192;

/** Rows a layer of patch dimension D keeps: MAX_SAMPLE_ROWS within MAX_SAMPLE_BYTES. */
export const sampleRowsFor = (dim: number): number => Math.max(1, Math.min(MAX_SAMPLE_ROWS, Math.floor(MAX_SAMPLE_BYTES / (8 * dim))));

/** A sampler of `rows` patches spread over `feeds` feeds. */
export function newPatchSampler(rows: number, feeds: number): PatchSampler {
  return { rows, perFeed: Math.max(1, Math.ceil(rows / Math.max(1, feeds))), n: 0 };
}

/**
 * Keeps up to perFeed patches of one feed (stratified over its pairs, as samplePairs draws
 * them), x̂ from `xHat` or x itself when absent. Returns why not, for a grouped conv or a
 * change of patch size.
 */
export function takePatchSamples(s: PatchSampler, geo: PatchGeometry, x: FloatData, xHat: FloatData | undefined): string | undefined {
  if (geo.groups !== 1) return 'a grouped conv';
  const D = patchDimOf(geo);
  if (s.dim !== undefined && s.dim !== D) return `patches of ${D} values after ${s.dim}`;
  if (s.same !== undefined && s.same !== !xHat) return 'its input was fetched from the partly compressed model for some feeds only';
  s.dim = D;
  s.same = !xHat;
  s.x ??= new Float32Array(s.rows * D);
  if (!s.xHat) s.xHat = xHat ? new Float32Array(s.rows * D) : s.x;
  const room = s.rows - s.n;
  if (room <= 0) return undefined;
  const total = patchPairCount(geo);
  const pairs = samplePairs(total, Math.min(room, s.perFeed)) ?? Int32Array.from({ length: Math.min(total, room) }, (_, i) => i);
  const copy = (src: FloatData, dst: Float32Array): void => {
    let row = s.n;
    for (const b of patchBlocks(src, geo, 256, pairs)) {
      for (let e = 0; e < b.n; e++, row++) for (let d = 0; d < D; d++) dst[row * D + d] = b.data[d * b.width + e]!;
    }
  };
  copy(x, s.x);
  if (xHat) copy(xHat, s.xHat);
  s.n += pairs.length;
  return undefined;
}

/** The samples kept, or undefined when none were. */
export function finishPatchSamples(s: PatchSampler): PatchSamples | undefined {
  if (s.failed || !s.n || !s.dim || !s.x || !s.xHat) return undefined;
  const n = s.n;
  const D = s.dim;
  const x = s.x.length === n * D ? s.x : s.x.slice(0, n * D);
  return { dim: D, n, x, xHat: s.same ? x : s.xHat.length === n * D ? s.xHat : s.xHat.slice(0, n * D) };
}
