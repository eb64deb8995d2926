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
 * statistics a Conv Tucker-2 refits its last 1x1 on. The calibration collector gathers
 * them (src/calib: patchBlocks on a `transposed` PatchGeometry); the tests' reference that
 * builds them from an input tensor directly is test/helpers/scatter-patches.ts. Here:
 * where the output window lies (scatterPlacement), which both use.
 */
import type { ConvTransposeGeometry } from './convtranspose-geometry.js';

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
