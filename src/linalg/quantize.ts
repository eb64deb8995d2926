/**
 * Weight-only quantization numerics: symmetric int8 with one scale per output channel
 * (the layout of ONNX DequantizeLinear with `axis`: x = (q − 0)·scale[c]).
 *
 * For channel c with largest magnitude m_c the scale is s_c = m_c / 127 and
 * q = clamp(round(w / s_c), −127, 127), so |w − q·s_c| ≤ s_c / 2 for every element: the
 * quantization step bounds the error. −128 is never used (symmetric, as ORT's quantizer
 * does for weights). A channel of zeros gets scale 1 (DequantizeLinear needs no zero division).
 */

export interface PerChannelInt8 {
  /** Quantized values, in the layout of the input. */
  q: Int8Array;
  /** One scale per channel along `axis`. */
  scales: Float32Array;
  axis: number;
}

/** Elements before `axis`, along it and after it, for a row-major tensor of `dims`. */
function split(dims: readonly number[], axis: number): { outer: number; channels: number; inner: number } {
  if (!Number.isInteger(axis) || axis < 0 || axis >= dims.length) throw new RangeError(`axis ${axis} is out of range for rank ${dims.length}`);
  const prod = (a: readonly number[]): number => a.reduce((x, y) => x * y, 1);
  return { outer: prod(dims.slice(0, axis)), channels: dims[axis]!, inner: prod(dims.slice(axis + 1)) };
}

/** Symmetric per-channel int8 quantization of `w` (row-major, `dims`) along `axis`. */
export function quantizeInt8PerChannel(w: Float32Array, dims: readonly number[], axis: number): PerChannelInt8 {
  const { outer, channels, inner } = split(dims, axis);
  if (outer * channels * inner !== w.length) throw new RangeError(`${w.length} values for dims [${dims.join(', ')}]`);
  const max = new Float64Array(channels);
  for (let o = 0; o < outer; o++) for (let c = 0; c < channels; c++) {
    const base = (o * channels + c) * inner;
    for (let i = 0; i < inner; i++) max[c] = Math.max(max[c]!, Math.abs(w[base + i]!));
  }
  // Rounded to fp32 first: DequantizeLinear multiplies by the fp32 scale, so q is chosen against it.
  const scales = Float32Array.from(max, (m) => (m > 0 && Number.isFinite(m) ? m / 127 : 1));
  const q = new Int8Array(w.length);
  for (let o = 0; o < outer; o++) for (let c = 0; c < channels; c++) {
    const s = scales[c]!;
    const base = (o * channels + c) * inner;
    for (let i = 0; i < inner; i++) q[base + i] = Math.max(-127, Math.min(127, Math.round(w[base + i]! / s)));
  }
  return { q, scales, axis };
}

/** q·scale back to float (what DequantizeLinear computes), for error checks. */
export function dequantizeInt8PerChannel(p: PerChannelInt8, dims: readonly number[]): Float32Array {
  const { outer, channels, inner } = split(dims, p.axis);
  const out = new Float32Array(p.q.length);
  for (let o = 0; o < outer; o++) for (let c = 0; c < channels; c++) {
    const s = p.scales[c]!;
    const base = (o * channels + c) * inner;
    for (let i = 0; i < inner; i++) out[base + i] = Math.fround(p.q[base + i]! * s);
  }
  return out;
}
