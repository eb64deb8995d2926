/** Naive reference statistics for the calibration tests (written independently of src/calib). */

/** Σ over rows of x·xᵀ for X [rows, k]. */
export function naiveRowsGram(x: ArrayLike<number>, rows: number, k: number): Float64Array {
  const g = new Float64Array(k * k);
  for (let r = 0; r < rows; r++) for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) g[i * k + j] += x[r * k + i]! * x[r * k + j]!;
  return g;
}

/** Σ over columns of x·xᵀ for X [k, cols] (offset into x). */
export function naiveColsGram(x: ArrayLike<number>, k: number, cols: number, offset = 0, into: Float64Array = new Float64Array(k * k)): Float64Array {
  for (let c = 0; c < cols; c++) for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) into[i * k + j] += x[offset + i * cols + c]! * x[offset + j * cols + c]!;
  return into;
}

export interface NaiveConv {
  /** [N, C, ...spatial] */
  dims: readonly number[];
  kernel: readonly number[];
  strides: readonly number[];
  dilations: readonly number[];
  /** Explicit [begin…, end…] pads (resolve auto_pad in the test). */
  pads: readonly number[];
  groups: number;
}

/** Output spatial dims of a conv by the ONNX formula with explicit pads. */
export function naiveOutSpatial(c: NaiveConv): number[] {
  const sp = c.kernel.length;
  return c.kernel.map((k, a) => Math.floor((c.dims[2 + a]! + c.pads[a]! + c.pads[a + sp]! - (k - 1) * c.dilations[a]! - 1) / c.strides[a]!) + 1);
}

/** All coordinate tuples of a box, row-major. */
function* box(ext: readonly number[]): Generator<number[]> {
  const n = ext.reduce((a, b) => a * b, 1);
  for (let f = 0; f < n; f++) {
    const c = new Array<number>(ext.length);
    for (let a = ext.length - 1, r = f; a >= 0; a--) { c[a] = r % ext[a]!; r = Math.floor(r / ext[a]!); }
    yield c;
  }
}

/**
 * im2col patches of group g: one vector per (n, output position), entry c·∏k + κ =
 * x[n, g·s + c, o·stride − pad + κ·dilation] or 0 outside.
 */
export function naivePatches(x: ArrayLike<number>, c: NaiveConv, g: number): number[][] {
  const [N, C] = c.dims as [number, number];
  const s = C / c.groups;
  const inSp = c.dims.slice(2);
  const out: number[][] = [];
  const ks = [...box(c.kernel)];
  for (let n = 0; n < N; n++) {
    for (const o of box(naiveOutSpatial(c))) {
      const p: number[] = [];
      for (let ch = 0; ch < s; ch++) {
        for (const k of ks) {
          let inside = true;
          let flat = 0;
          for (let a = 0; a < k.length; a++) {
            const i = o[a]! * c.strides[a]! - c.pads[a]! + k[a]! * c.dilations[a]!;
            if (i < 0 || i >= inSp[a]!) inside = false;
            flat = flat * inSp[a]! + i;
          }
          p.push(inside ? x[((n * C) + g * s + ch) * inSp.reduce((u, v) => u * v, 1) + flat]! : 0);
        }
      }
      out.push(p);
    }
  }
  return out;
}

/** Σ p·pᵀ over a list of vectors. */
export function gramOf(vectors: readonly (readonly number[])[], d: number): Float64Array {
  const g = new Float64Array(d * d);
  for (const v of vectors) for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) g[i * d + j] += v[i]! * v[j]!;
  return g;
}

export function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let scale = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]!));
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d / (scale || 1);
}

export function seededArray(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32) * 2 - 1;
  }
  return out;
}
