/**
 * The tests' reference for a ConvTranspose's scatter-patch moments (defined in
 * src/rewrite/convtranspose-patches.ts): every output position's patch built directly from
 * the input tensor, tap by tap, apart from the calibration collector's blocked, sampled path
 * (src/calib/sample-blocks.ts), which test/calib/convtranspose-stats.test.ts checks against it.
 */
import type { ConvTransposeGeometry } from '../../src/rewrite/convtranspose-geometry.js';
import { scatterPlacement } from '../../src/rewrite/convtranspose-patches.js';

export interface ScatterPatchMoments {
  /** Σ P·Pᵀ per group, [g·D·D]. */
  gram: Float64Array;
  /** E[P] per group, [g·D]. */
  mean: Float64Array;
  /** Patches (output positions × samples). */
  count: number;
  /** D = (S/g)·∏k. */
  dim: number;
  /** Output extent per spatial axis. */
  outDims: number[];
}

/** Running sums over batches: Σ P·Pᵀ and Σ P per group, and the patch count. */
export interface ScatterPatchSums { gram: Float64Array; sum: Float64Array; count: number; dim: number; outDims: number[] }

/**
 * The scatter-patch moments of a ConvTranspose over inputs `x` [N, S, in…] (see the file's
 * comment), or why they are not computed here.
 */
export function scatterPatchMoments(geo: ConvTransposeGeometry, x: Float32Array, dims: readonly number[]): ScatterPatchMoments | string {
  const sums = addScatterPatches(geo, x, dims);
  if (typeof sums === 'string') return sums;
  const mean = Float64Array.from(sums.sum, (v) => v / sums.count);
  return { gram: sums.gram, mean, count: sums.count, dim: sums.dim, outDims: sums.outDims };
}

/**
 * Adds the scatter patches of one batch `x` [N, S, in…] to `into` (new sums when absent;
 * batches of one input extent), for a collector that sees the input batch by batch.
 */
export function addScatterPatches(geo: ConvTransposeGeometry, x: Float32Array, dims: readonly number[], into?: ScatterPatchSums): ScatterPatchSums | string {
  const [N, S, ...inDims] = dims as number[];
  if (S !== geo.S || inDims.length !== geo.spatial) return `input dims [${dims.join(', ')}] do not fit ${geo.S} channels and ${geo.spatial} spatial axes`;
  const place = scatterPlacement(geo, inDims);
  if (typeof place === 'string') return place;
  const { padBegin, outDims } = place;
  const n = geo.spatial;
  const G = geo.group;
  const s = S / G;
  const K = geo.kernelSize;
  const D = s * K;
  const inSize = inDims.reduce((a, b) => a * b, 1);
  const outSize = outDims.reduce((a, b) => a * b, 1);
  if (into && (into.dim !== D || into.outDims.some((o, a) => o !== outDims[a]))) return `batch of output extent [${outDims.join(', ')}] does not match the sums' [${into.outDims.join(', ')}]`;
  const gram = into?.gram ?? new Float64Array(G * D * D);
  const sum = into?.sum ?? new Float64Array(G * D);
  // Per output position: each tap's input position (flat), or −1.
  const src = new Int32Array(K);
  const p = new Array<number>(n).fill(0);
  const kap = new Array<number>(n).fill(0);
  const idx: number[] = [];
  const val: number[] = [];
  for (let o = 0; o < outSize; o++) {
    for (let a = n - 1, r = o; a >= 0; a--) { p[a] = r % outDims[a]!; r = Math.floor(r / outDims[a]!); }
    for (let k = 0; k < K; k++) {
      for (let a = n - 1, r = k; a >= 0; a--) { kap[a] = r % geo.kernel[a]!; r = Math.floor(r / geo.kernel[a]!); }
      let q = 0;
      for (let a = 0; a < n && q >= 0; a++) {
        const num = p[a]! + padBegin[a]! - kap[a]! * geo.dilations[a]!;
        const qa = num / geo.strides[a]!;
        q = num >= 0 && num % geo.strides[a]! === 0 && qa < inDims[a]! ? q * inDims[a]! + qa : -1;
      }
      src[k] = q;
    }
    for (let b = 0; b < N; b++) {
      for (let j = 0; j < G; j++) {
        idx.length = 0;
        val.length = 0;
        for (let c = 0; c < s; c++) {
          const base = (b * S + j * s + c) * inSize;
          for (let k = 0; k < K; k++) {
            if (src[k]! < 0) continue;
            const v = x[base + src[k]!]!;
            if (v === 0) continue;
            idx.push(c * K + k);
            val.push(v);
          }
        }
        const g = gram.subarray(j * D * D, (j + 1) * D * D);
        for (let u = 0; u < idx.length; u++) {
          sum[j * D + idx[u]!] += val[u]!;
          const row = idx[u]! * D;
          for (let v = 0; v < idx.length; v++) g[row + idx[v]!] += val[u]! * val[v]!;
        }
      }
    }
  }
  return { gram, sum, count: (into?.count ?? 0) + N * outSize, dim: D, outDims };
}
