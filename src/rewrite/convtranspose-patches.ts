/**
 * The "scatter patches" of a ConvTranspose: what its output at one position is a linear
 * map of, so that its Tucker-2 can be fitted on the output side as a Conv's is on im2col
 * patches (tucker2-conv.ts `patches` / `anchor.patch`).
 *
 * A ConvTranspose with weight W [S, T/g, k…] writes, per axis, input position q through
 * tap κ to output position p = q·stride + κ·dilation − pad_begin. So per group j the output
 * at p is Y[j·t + τ](p) = Σ_{σ, κ} Wc_j[τ, σ·K + κ]·P_j(p)[σ·K + κ] + b, with Wc the Conv
 * layout of the weight (convtranspose-geometry.ts swapChannelRoles) and the patch
 *   P_j(p)[σ·K + κ] = X[j·s + σ](q)  when every axis has an integer q = (p + pad_begin − κ·dilation)/stride in range,
 *                    0               otherwise
 * (κ in the weight's own tap order, no flip). Its moments Σ_p P·Pᵀ [D, D] and E[P] [D]
 * (D = s·K, per group), over every output position of every sample, are exactly the patch
 * statistics a Conv Tucker-2 refits its last 1x1 on. This is the reference definition of
 * what the calibration collector gathers for ConvTranspose layers (src/calib: patchBlocks
 * on a `transposed` PatchGeometry, checked against this in
 * test/calib/convtranspose-stats.test.ts); here it is computed from an input tensor
 * directly (tests, and the specification of that statistic).
 */
import type { ConvTransposeGeometry } from './convtranspose-geometry.js';

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

/**
 * Where the output window sits on each axis: the pads before it and the output extent.
 * Explicit pads (NOTSET, VALID: none) give out = stride·(in − 1) + output_padding +
 * (k − 1)·dilation + 1 − pad_begin − pad_end. With output_shape, or auto_pad SAME_* (out =
 * in·stride), the pads are what that extent leaves: total = stride·(in − 1) +
 * output_padding + (k − 1)·dilation + 1 − out, at least 0, split as ONNX Runtime splits it
 * (checked against it in test/passes/convtranspose-patches.test.ts; the ONNX spec's split):
 * SAME_UPPER puts the odd unit at the end, SAME_LOWER and NOTSET with output_shape at the
 * beginning; under SAME_* a total clamped at 0 leaves the extent the input reaches (ORT's
 * output is then smaller than in·stride).
 */
export function scatterPlacement(geo: ConvTransposeGeometry, inDims: readonly number[]): { padBegin: number[]; outDims: number[] } | string {
  const n = geo.spatial;
  const full = inDims.map((x, a) => geo.strides[a]! * (x - 1) + geo.outputPadding[a]! + (geo.kernel[a]! - 1) * geo.dilations[a]! + 1);
  const same = geo.autoPad === 'SAME_UPPER' || geo.autoPad === 'SAME_LOWER';
  if (!geo.outputShape && !same) {
    const pads = geo.autoPad === 'VALID' ? new Array<number>(2 * n).fill(0) : geo.pads;
    return { padBegin: pads.slice(0, n), outDims: full.map((f, a) => f - pads[a]! - pads[a + n]!) };
  }
  const os = geo.outputShape;
  // output_shape may list the spatial extents only or N, C and them.
  const out = os ? (os.length === n + 2 ? os.slice(2) : os) : inDims.map((x, a) => x * geo.strides[a]!);
  if (out.length !== n) return `output_shape [${os!.join(', ')}] does not fit ${n} spatial axes`;
  // ORT clamps the total at 0; under SAME_* the extent is then what the input reaches.
  const total = full.map((f, a) => Math.max(0, f - out[a]!));
  const upper = geo.autoPad === 'SAME_UPPER';
  return { padBegin: total.map((t) => (upper ? Math.floor(t / 2) : t - Math.floor(t / 2))), outDims: os ? out : full.map((f, a) => f - total[a]!) };
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
