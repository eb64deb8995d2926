/**
 * One axis of an ONNX Resize (or Upsample) as a matrix: out = A·in along that axis, A of
 * size out×in. Nearest and linear modes are separable, so a 2-D resize is Aₕ·X·A_wᵀ per
 * plane, and its adjoint (what a gradient needs) is Aₕᵀ·G·A_w.
 *
 * Coordinate transforms and rounding follow the Resize spec (opset 11+): x_original is
 * computed from the output index, linear interpolation clamps it into [0, in − 1], nearest
 * rounds it and clamps the index.
 */

export type ResizeCoordinates = 'half_pixel' | 'pytorch_half_pixel' | 'asymmetric' | 'align_corners';
export type NearestRounding = 'round_prefer_floor' | 'round_prefer_ceil' | 'floor' | 'ceil';

export interface ResizeAxis {
  in: number;
  out: number;
  /** The scale the transform divides by (the scales input, or out/in when sizes were given). */
  scale: number;
  mode: 'nearest' | 'linear';
  coordinates: ResizeCoordinates;
  nearest: NearestRounding;
}

function original(o: number, a: ResizeAxis): number {
  switch (a.coordinates) {
    case 'half_pixel': return (o + 0.5) / a.scale - 0.5;
    case 'pytorch_half_pixel': return a.out > 1 ? (o + 0.5) / a.scale - 0.5 : 0;
    case 'asymmetric': return o / a.scale;
    case 'align_corners': return a.out === 1 ? 0 : (o * (a.in - 1)) / (a.out - 1);
  }
}

function rounded(x: number, r: NearestRounding): number {
  switch (r) {
    case 'round_prefer_floor': return x === Math.floor(x) + 0.5 ? Math.floor(x) : Math.round(x);
    case 'round_prefer_ceil': return Math.floor(x + 0.5);
    case 'floor': return Math.floor(x);
    case 'ceil': return Math.ceil(x);
  }
}

/** The out×in matrix of one resized axis, row-major. */
export function resizeMatrix(a: ResizeAxis): Float32Array {
  const m = new Float32Array(a.out * a.in);
  const last = a.in - 1;
  for (let o = 0; o < a.out; o++) {
    const x = original(o, a);
    if (a.mode === 'nearest') {
      m[o * a.in + Math.min(last, Math.max(0, rounded(x, a.nearest)))] = 1;
      continue;
    }
    const c = Math.min(last, Math.max(0, x));
    const i0 = Math.floor(c);
    const w = c - i0;
    m[o * a.in + i0] += 1 - w;
    if (w > 0) m[o * a.in + Math.min(last, i0 + 1)] += w;
  }
  return m;
}

/** Whether the matrix is the identity (same size, every output reads its own input). */
export function isIdentityMatrix(m: Float32Array, n: number): boolean {
  if (m.length !== n * n) return false;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (m[i * n + j] !== (i === j ? 1 : 0)) return false;
  return true;
}
