/**
 * Dense row-major tensors (a typed array plus a shape) and the reshapes the
 * decompositions need: mode unfoldings and axis permutations; the Khatri–Rao product and
 * the MTTKRP of CP-ALS (cp-als.ts).
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

/**
 * Khatri–Rao product of the factors in mode order, last mode varying fastest, so
 * row (i_a, i_b, …) matches column (i_a, i_b, …) of the corresponding unfolding.
 */
export function khatriRao(fs: Matrix[]): Matrix {
  const R = fs[0]!.cols;
  let acc = Float64Array.from(fs[0]!.data);
  let rows = fs[0]!.rows;
  for (let q = 1; q < fs.length; q++) {
    const f = fs[q]!;
    const fd = Float64Array.from(f.data); // monomorphic fp64 access in the hot loop
    const fr = f.rows;
    const next = new Float64Array(rows * fr * R);
    for (let i = 0; i < rows; i++) {
      const ao = i * R;
      for (let j = 0; j < fr; j++) {
        const o = (i * fr + j) * R;
        const bo = j * R;
        for (let r = 0; r < R; r++) next[o + r] = acc[ao + r]! * fd[bo + r]!;
      }
    }
    acc = next;
    rows *= fr;
  }
  return { rows, cols: R, data: acc };
}

/**
 * MTTKRP of mode n ≥ 1 from Z = F_0ᵀ·X_(0) (R × Π_{m≥1} I_m):
 * M[i_n, r] = Σ_{i_m, m∉{0,n}} Z[r, i_1, …] · Π_{m∉{0,n}} F_m[i_m, r].
 */
export function contractRest(z: Matrix, dims: readonly number[], factors: Matrix[], n: number): Matrix {
  const N = dims.length;
  const R = z.rows;
  const P = z.cols;
  const out = new Float64Array(dims[n]! * R);
  const fds = factors.map((f) => f.data);
  const idx = new Array<number>(N).fill(0);
  for (let r = 0; r < R; r++) {
    idx.fill(0);
    const zo = r * P;
    for (let p = 0; p < P; p++) {
      let v = z.data[zo + p]!;
      for (let m = 1; m < N; m++) if (m !== n) v *= fds[m]![idx[m]! * R + r]!;
      out[idx[n]! * R + r]! += v;
      for (let m = N - 1; m >= 1; m--) {
        if (++idx[m]! < dims[m]!) break;
        idx[m] = 0;
      }
    }
  }
  return { rows: dims[n]!, cols: R, data: out };
}
