/**
 * A backend-neutral tensor. onnxruntime-node and onnxruntime-web each bundle their own
 * `Tensor` class (instanceof checks fail across them), so feeds and outputs travel as
 * plain `{ type, dims, data }` and are converted at the session boundary.
 */
import type { NpyArray, NpyDtype } from '../io/npy.js';

/** ORT element types we can feed and read. float16 data is raw IEEE half bits. */
export type ElemType =
  | 'float32' | 'float64' | 'float16'
  | 'int8' | 'uint8' | 'int16' | 'uint16' | 'int32' | 'uint32' | 'int64' | 'uint64'
  | 'bool';

export type HostData =
  | Float32Array | Float64Array | Int8Array | Uint8Array | Int16Array | Uint16Array
  | Int32Array | Uint32Array | BigInt64Array | BigUint64Array;

export interface HostTensor {
  readonly type: ElemType;
  readonly dims: readonly number[];
  readonly data: HostData;
}

/** Input name → tensor, as passed to a session run. */
export type Feeds = Record<string, HostTensor>;

const ALLOC: Record<ElemType, (n: number) => HostData> = {
  float32: (n) => new Float32Array(n),
  float64: (n) => new Float64Array(n),
  float16: (n) => new Uint16Array(n),
  int8: (n) => new Int8Array(n),
  uint8: (n) => new Uint8Array(n),
  int16: (n) => new Int16Array(n),
  uint16: (n) => new Uint16Array(n),
  int32: (n) => new Int32Array(n),
  uint32: (n) => new Uint32Array(n),
  int64: (n) => new BigInt64Array(n),
  uint64: (n) => new BigUint64Array(n),
  bool: (n) => new Uint8Array(n),
};

export function isElemType(t: string): t is ElemType {
  return t in ALLOC;
}

export type FloatType = 'float32' | 'float64' | 'float16';

export const isFloatType = (t: ElemType): t is FloatType => t === 'float32' || t === 'float64' || t === 'float16';

export const elementCount = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

/** Builds a tensor of `type` from plain numbers (rounding and half-encoding as needed). */
export function fromNumbers(type: ElemType, dims: readonly number[], values: ArrayLike<number>): HostTensor {
  const n = values.length;
  const data = ALLOC[type](n);
  if (data instanceof BigInt64Array || data instanceof BigUint64Array) {
    for (let i = 0; i < n; i++) data[i] = BigInt(Math.round(values[i]!));
  } else if (type === 'float16') {
    for (let i = 0; i < n; i++) data[i] = floatToHalf(values[i]!);
  } else if (type === 'bool') {
    for (let i = 0; i < n; i++) data[i] = values[i] ? 1 : 0;
  } else {
    (data as Float64Array).set(values);
  }
  return { type, dims: [...dims], data };
}

/** Element values as doubles (int64 beyond 2^53 loses precision; fine for comparison). */
export function toNumbers(t: HostTensor): Float64Array {
  const out = new Float64Array(t.data.length);
  const d = t.data;
  if (d instanceof BigInt64Array || d instanceof BigUint64Array) {
    for (let i = 0; i < d.length; i++) out[i] = Number(d[i]!);
  } else if (t.type === 'float16') {
    for (let i = 0; i < d.length; i++) out[i] = halfToFloat(d[i] as number);
  } else {
    out.set(d as ArrayLike<number>);
  }
  return out;
}

/** IEEE half conversions are the codec's (exhaustively tested there). */
export { f32ToF16Bits as floatToHalf, f16BitsToF32 as halfToFloat } from '../onnx/half.js';
import { f16BitsToF32 as halfToFloat, f32ToF16Bits as floatToHalf } from '../onnx/half.js';

// ------------------------------------------------------------------ npy bridge

const NPY_TO_ELEM: Record<NpyDtype, ElemType> = {
  f2: 'float16', f4: 'float32', f8: 'float64',
  i1: 'int8', i2: 'int16', i4: 'int32', i8: 'int64',
  u1: 'uint8', u2: 'uint16', u4: 'uint32', u8: 'uint64', b1: 'bool',
};

export function fromNpy(a: NpyArray): HostTensor {
  return { type: NPY_TO_ELEM[a.dtype], dims: [...a.shape], data: a.data };
}

export function toNpy(t: HostTensor): NpyArray {
  const dtype = (Object.keys(NPY_TO_ELEM) as NpyDtype[]).find((k) => NPY_TO_ELEM[k] === t.type)!;
  return { dtype, shape: [...t.dims], data: t.data };
}

/**
 * Converts a tensor to `to` when no value changes meaning: float↔float, int→float and
 * int→int when every value fits. numpy saves float64 / int64 by default, so this lets
 * `--input x:a.npy` feed a float32 / int32 input without the user re-saving.
 * Returns a reason string when the cast is refused.
 */
export function castTensor(t: HostTensor, to: ElemType): HostTensor | string {
  if (t.type === to) return t;
  const from = t.type;
  if (isFloatType(from) && !isFloatType(to)) return `cannot cast ${from} to ${to} (would truncate)`;
  const values = toNumbers(t);
  if (!isFloatType(to)) {
    const [lo, hi] = INT_RANGE[to];
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (v < lo || v > hi) return `value ${v} at index ${i} does not fit ${to}`;
    }
  }
  return fromNumbers(to, t.dims, values);
}

const INT_RANGE: Record<Exclude<ElemType, FloatType>, [number, number]> = {
  int8: [-128, 127], uint8: [0, 255], int16: [-32768, 32767], uint16: [0, 65535],
  int32: [-(2 ** 31), 2 ** 31 - 1], uint32: [0, 2 ** 32 - 1],
  int64: [-(2 ** 63), 2 ** 63], uint64: [0, 2 ** 64], bool: [0, 1],
};

/**
 * How many samples one output tensor holds along its axis 0: its dims at the learned shapes
 * (`learned`, at batch 1) with axis 0 grown to the feed's batch, else 1 (an output without a
 * batch axis, or shapes not learned at batch 1). A feed of several calibration or held-out
 * samples is one run; budgets and verification count its samples.
 */
export function samplesIn(t: HostTensor, learned: readonly number[] | undefined): number {
  const d0 = t.dims[0];
  if (!learned || learned[0] !== 1 || d0 === undefined || d0 < 2 || t.dims.length !== learned.length) return 1;
  for (let i = 1; i < learned.length; i++) if (t.dims[i] !== learned[i]) return 1;
  return d0;
}

/** Whether feed `f` has every input of `first` at the same dims (a graph built for one set of dims serves it). */
export function sameFeedDims(first: Feeds, f: Feeds): boolean {
  return Object.entries(first).every(([k, t]) => f[k]?.dims.join() === t.dims.join());
}

/** `t` cut into `units` equal slices along axis 0 (samplesIn's count), each a view of its data. */
export function sampleSlices(t: HostTensor, units: number): HostTensor[] {
  if (units <= 1) return [t];
  const len = t.data.length / units;
  const dims = [1, ...t.dims.slice(1)];
  return Array.from({ length: units }, (_, u) => ({ type: t.type, dims, data: t.data.subarray(u * len, (u + 1) * len) as HostData }));
}
