/**
 * Dense row-major tensors (a typed array plus a shape) and the reshapes the
 * decompositions need: mode unfoldings and axis permutations.
 */
import { LrError } from '../errors.js';
import type { FloatArray, Matrix } from './matrix.js';

export interface Tensor {
  data: FloatArray;
  shape: readonly number[];
}

export function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function checkTensor(t: Tensor, what: string): void {
  for (const d of t.shape) {
    if (!Number.isInteger(d) || d < 1) throw new LrError('numeric', `${what}: invalid shape [${t.shape.join(', ')}]`);
  }
  if (sizeOf(t.shape) !== t.data.length) {
    throw new LrError('numeric', `${what}: shape [${t.shape.join(', ')}] needs ${sizeOf(t.shape)} elements, data has ${t.data.length}`);
  }
}

/** out[perm-ordered index] = t[index]: out.shape[i] = t.shape[perm[i]]. Always a Float64 copy. */
export function permute(t: Tensor, perm: readonly number[]): Tensor {
  const nd = t.shape.length;
  if (perm.length !== nd || [...perm].sort((a, b) => a - b).some((p, i) => p !== i)) {
    throw new LrError('numeric', `permute: [${perm.join(', ')}] is not a permutation of ${nd} axes`);
  }
  const inStrides = new Array<number>(nd);
  let s = 1;
  for (let i = nd - 1; i >= 0; i--) {
    inStrides[i] = s;
    s *= t.shape[i]!;
  }
  const outShape = perm.map((p) => t.shape[p]!);
  const strides = perm.map((p) => inStrides[p]!); // input stride of each output axis
  const out = new Float64Array(t.data.length);
  // Innermost output axis handled as a strided copy; outer axes by an odometer.
  const inner = outShape[nd - 1] ?? 1;
  const innerStride = strides[nd - 1] ?? 1;
  const idx = new Array<number>(nd).fill(0);
  let src = 0;
  for (let o = 0; o < out.length; o += inner) {
    for (let j = 0; j < inner; j++) out[o + j] = t.data[src + j * innerStride]!;
    for (let ax = nd - 2; ax >= 0; ax--) {
      idx[ax]!++;
      src += strides[ax]!;
      if (idx[ax]! < outShape[ax]!) break;
      src -= strides[ax]! * outShape[ax]!;
      idx[ax] = 0;
    }
  }
  return { data: out, shape: outShape };
}

/** Mode-n unfolding: rows = shape[n], columns = the other axes in order (last fastest). */
export function unfold(t: Tensor, mode: number): Matrix {
  const rows = t.shape[mode]!;
  const cols = t.data.length / rows;
  if (mode === 0) return { rows, cols, data: t.data };
  const perm = [mode, ...t.shape.map((_, i) => i).filter((i) => i !== mode)];
  return { rows, cols, data: permute(t, perm).data };
}

/**
 * [d0, d1, inner] → [d1, d0, inner] for a row-major buffer: the reshuffle between
 * the two channel unfoldings of a conv kernel, copying contiguous inner blocks.
 */
export function swapLeadingAxes(data: FloatArray, d0: number, d1: number, inner: number): Float64Array {
  const out = new Float64Array(d0 * d1 * inner);
  for (let a = 0; a < d0; a++) {
    for (let b = 0; b < d1; b++) {
      const src = (a * d1 + b) * inner;
      const dst = (b * d0 + a) * inner;
      for (let k = 0; k < inner; k++) out[dst + k] = data[src + k]!;
    }
  }
  return out;
}

export function tensorNorm(t: Tensor | FloatArray): number {
  const d = 'data' in t ? t.data : t;
  let s = 0;
  for (let i = 0; i < d.length; i++) s += d[i]! * d[i]!;
  return Math.sqrt(s);
}
