/**
 * Tensor payload conversions: element counts and sizes, reading any numeric payload layout
 * (raw_data, the typed *_data fields, external data) as float/int arrays, and building
 * float tensors in FLOAT / FLOAT16 / BFLOAT16 / DOUBLE. Pure: external bytes come from a
 * caller-supplied reader. Results never alias the TensorProto's buffers.
 */
import { LrError } from '../errors.js';
import { bfloat16BitsToFloat32, float16BitsToFloat32, float32ToBfloat16Bits, float32ToFloat16Bits } from './half.js';
import { DATA_LOCATION_EXTERNAL, DataType, newTensor, type TensorProto } from './schema.js';

/** Anything that can fetch the bytes of an external tensor (see external.ts). */
export interface ExternalBytes {
  readBytes(t: TensorProto): Uint8Array;
}

const tensorLabel = (t: TensorProto): string => `tensor "${t.name ?? '(unnamed)'}"`;

/** Number of elements for dims ([] is a scalar: 1). */
export function tensorElementCount(dims: readonly number[], what = 'tensor'): number {
  let n = 1;
  for (const d of dims) {
    if (!Number.isSafeInteger(d) || d < 0) throw new LrError('parse', `${what}: invalid dimension ${d} in [${dims.join(', ')}]`);
    n *= d;
    if (!Number.isSafeInteger(n)) throw new LrError('parse', `${what}: element count of [${dims.join(', ')}] is too large`);
  }
  return n;
}

/** Bits per element in raw_data layout, or 0 for types without a fixed width (STRING, UNDEFINED, unknown). */
export function dataTypeBits(dataType: number): number {
  switch (dataType) {
    case DataType.BOOL: case DataType.UINT8: case DataType.INT8:
    case DataType.FLOAT8E4M3FN: case DataType.FLOAT8E4M3FNUZ: case DataType.FLOAT8E5M2:
    case DataType.FLOAT8E5M2FNUZ: case DataType.FLOAT8E8M0: return 8;
    case DataType.UINT16: case DataType.INT16: case DataType.FLOAT16: case DataType.BFLOAT16: return 16;
    case DataType.FLOAT: case DataType.INT32: case DataType.UINT32: return 32;
    case DataType.INT64: case DataType.UINT64: case DataType.DOUBLE: case DataType.COMPLEX64: return 64;
    case DataType.COMPLEX128: return 128;
    case DataType.UINT4: case DataType.INT4: case DataType.FLOAT4E2M1: return 4;
    case DataType.UINT2: case DataType.INT2: return 2;
    default: return 0;
  }
}

/** Bytes that `count` elements take in raw_data layout (sub-byte types are packed, rounded up). */
export function rawByteLength(dataType: number, count: number): number {
  const bits = dataTypeBits(dataType);
  if (bits === 0) throw new LrError('unsupported', `data type ${dataType} has no fixed element size`);
  return bits >= 8 ? count * (bits / 8) : Math.ceil((count * bits) / 8);
}

/**
 * Payload size in bytes as raw_data / external data would hold it (dims × element size);
 * for STRING tensors, the summed length of the strings.
 */
export function tensorByteSize(t: TensorProto): number {
  const dt = t.dataType ?? DataType.UNDEFINED;
  if (dt === DataType.STRING) return t.stringData.reduce((s, b) => s + b.length, 0);
  return rawByteLength(dt, tensorElementCount(t.dims, tensorLabel(t)));
}

export const isExternal = (t: TensorProto): boolean => t.dataLocation === DATA_LOCATION_EXTERNAL;

/** A fresh, 8-byte aligned copy of `src`'s bytes (raw_data is an unaligned view into the file). */
function alignedCopy(src: Uint8Array): Uint8Array {
  const out = new Uint8Array(src.length);
  out.set(src);
  return out;
}

const bytesOf = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Which typed field holds this data type's payload when raw_data is absent (onnx.proto comments). */
type TypedField = 'floatData' | 'int32Data' | 'int64Data' | 'doubleData' | 'uint64Data';
function typedFieldFor(dt: number): TypedField | undefined {
  switch (dt) {
    case DataType.FLOAT: case DataType.COMPLEX64: return 'floatData';
    case DataType.DOUBLE: case DataType.COMPLEX128: return 'doubleData';
    case DataType.INT64: return 'int64Data';
    case DataType.UINT32: case DataType.UINT64: return 'uint64Data';
    case DataType.STRING: case DataType.UNDEFINED: return undefined;
    default: return dataTypeBits(dt) > 0 ? 'int32Data' : undefined;
  }
}

/**
 * The payload in raw_data layout (little-endian, sub-byte types packed), whichever field
 * holds it. May be a view of the tensor's own buffers or a fresh array: do not mutate.
 * Checks the payload length against dims before anything is allocated.
 */
export function tensorRawBytes(t: TensorProto, external?: ExternalBytes): Uint8Array {
  const dt = t.dataType ?? DataType.UNDEFINED;
  const label = tensorLabel(t);
  if (dt === DataType.STRING) throw new LrError('unsupported', `${label}: STRING data has no raw layout`);
  if (dataTypeBits(dt) === 0) throw new LrError('unsupported', `${label}: unsupported data type ${dt}`);
  const count = tensorElementCount(t.dims, label);
  const expected = rawByteLength(dt, count);
  const mismatch = (what: string, got: number, want: number): LrError =>
    new LrError('parse', `${label}: ${what} holds ${got} but dims [${t.dims.join(', ')}] need ${want}`);

  if (isExternal(t)) {
    if (!external) throw new LrError('usage', `${label}: data is external but no external data reader was given`);
    const b = external.readBytes(t);
    if (b.length !== expected) throw mismatch('external data', b.length, expected);
    return b;
  }
  if (t.rawData !== undefined && (t.rawData.length > 0 || expected === 0)) {
    if (t.rawData.length !== expected) throw mismatch('raw_data bytes', t.rawData.length, expected);
    return t.rawData;
  }
  const field = typedFieldFor(dt)!;
  const arr = t[field];
  if (arr === undefined || arr.length === 0) {
    if (expected === 0) return new Uint8Array(0);
    throw new LrError('parse', `${label}: no data for dims [${t.dims.join(', ')}]`);
  }
  const bits = dataTypeBits(dt);
  switch (field) {
    case 'floatData': case 'doubleData': case 'int64Data': {
      // Complex types hold two scalars per element; the typed array is already raw layout.
      const want = expected / arr.BYTES_PER_ELEMENT;
      if (arr.length !== want) throw mismatch(`${field} values`, arr.length, want);
      return bytesOf(arr);
    }
    case 'uint64Data': {
      const want = count;
      if (arr.length !== want) throw mismatch('uint64_data values', arr.length, want);
      if (dt === DataType.UINT64) return bytesOf(arr);
      const out = new Uint32Array(count);
      const src = arr as BigUint64Array;
      for (let i = 0; i < count; i++) out[i] = Number(BigInt.asUintN(32, src[i]));
      return bytesOf(out);
    }
    case 'int32Data': {
      const src = arr as Int32Array;
      if (bits === 32) {
        if (src.length !== count) throw mismatch('int32_data values', src.length, count);
        return bytesOf(src);
      }
      // 16-bit types (incl. fp16/bf16 bit patterns) and 8-bit types: one element per int32;
      // 4- and 2-bit types: one already-packed byte per int32.
      const per = bits >= 8 ? count : expected;
      if (src.length !== per) throw mismatch('int32_data values', src.length, per);
      if (bits === 16) {
        const out = new Uint16Array(count);
        for (let i = 0; i < count; i++) out[i] = src[i] & 0xffff;
        return bytesOf(out);
      }
      const out = new Uint8Array(per);
      for (let i = 0; i < per; i++) out[i] = src[i] & 0xff;
      return out;
    }
  }
}

function viewAs<T>(bytes: Uint8Array, width: number, make: (b: ArrayBuffer, off: number, n: number) => T): T {
  // Typed views need aligned offsets; raw_data views into the file usually are not.
  const b = bytes.byteOffset % width === 0 ? bytes : alignedCopy(bytes);
  return make(b.buffer as ArrayBuffer, b.byteOffset, b.length / width);
}

/** The payload as a typed array of its own element type (fp16/bf16 widened to float32). */
function numericView(t: TensorProto, raw: Uint8Array): ArrayLike<number> | BigInt64Array | BigUint64Array {
  const dt = t.dataType ?? DataType.UNDEFINED;
  switch (dt) {
    case DataType.FLOAT: return viewAs(raw, 4, (b, o, k) => new Float32Array(b, o, k));
    case DataType.FLOAT16: return float16BitsToFloat32(viewAs(raw, 2, (b, o, k) => new Uint16Array(b, o, k)));
    case DataType.BFLOAT16: return bfloat16BitsToFloat32(viewAs(raw, 2, (b, o, k) => new Uint16Array(b, o, k)));
    case DataType.DOUBLE: return viewAs(raw, 8, (b, o, k) => new Float64Array(b, o, k));
    case DataType.INT8: return new Int8Array(raw.buffer, raw.byteOffset, raw.length);
    case DataType.UINT8: case DataType.BOOL: return raw;
    case DataType.INT16: return viewAs(raw, 2, (b, o, k) => new Int16Array(b, o, k));
    case DataType.UINT16: return viewAs(raw, 2, (b, o, k) => new Uint16Array(b, o, k));
    case DataType.INT32: return viewAs(raw, 4, (b, o, k) => new Int32Array(b, o, k));
    case DataType.UINT32: return viewAs(raw, 4, (b, o, k) => new Uint32Array(b, o, k));
    case DataType.INT64: return viewAs(raw, 8, (b, o, k) => new BigInt64Array(b, o, k));
    case DataType.UINT64: return viewAs(raw, 8, (b, o, k) => new BigUint64Array(b, o, k));
    default: throw new LrError('unsupported', `${tensorLabel(t)}: cannot read data type ${dt} as numbers`);
  }
}

function readNumbers<T extends Float32Array | Float64Array>(t: TensorProto, external: ExternalBytes | undefined, make: (n: number) => T): T {
  const v = numericView(t, tensorRawBytes(t, external));
  const out = make(v.length);
  if (v instanceof BigInt64Array || v instanceof BigUint64Array) {
    for (let i = 0; i < v.length; i++) out[i] = Number(v[i]);
  } else {
    out.set(v);
  }
  return out;
}

/**
 * Reads FLOAT, FLOAT16, BFLOAT16, DOUBLE (rounded) or an integer/bool tensor (converted)
 * as a fresh Float32Array.
 */
export function readTensorFloat(t: TensorProto, external?: ExternalBytes): Float32Array {
  return readNumbers(t, external, (n) => new Float32Array(n));
}

/** Like readTensorFloat, as float64: exact for every float type and for integers up to 2^53. */
export function readTensorFloat64(t: TensorProto, external?: ExternalBytes): Float64Array {
  return readNumbers(t, external, (n) => new Float64Array(n));
}

/** Reads an integer or bool tensor as int64 (UINT64 values above INT64_MAX are refused). */
export function readTensorInt64(t: TensorProto, external?: ExternalBytes): BigInt64Array {
  const dt = t.dataType ?? DataType.UNDEFINED;
  const label = tensorLabel(t);
  const raw = tensorRawBytes(t, external);
  const widen = (src: ArrayLike<number>): BigInt64Array => {
    const out = new BigInt64Array(src.length);
    for (let i = 0; i < src.length; i++) out[i] = BigInt(src[i]);
    return out;
  };
  switch (dt) {
    case DataType.INT64: return BigInt64Array.from(viewAs(raw, 8, (b, o, k) => new BigInt64Array(b, o, k)));
    case DataType.UINT64: {
      const v = viewAs(raw, 8, (b, o, k) => new BigUint64Array(b, o, k));
      const out = new BigInt64Array(v.length);
      for (let i = 0; i < v.length; i++) {
        if (v[i] > 0x7fffffffffffffffn) throw new LrError('unsupported', `${label}: UINT64 value ${v[i]} does not fit int64`);
        out[i] = v[i];
      }
      return out;
    }
    case DataType.INT32: return widen(viewAs(raw, 4, (b, o, k) => new Int32Array(b, o, k)));
    case DataType.UINT32: return widen(viewAs(raw, 4, (b, o, k) => new Uint32Array(b, o, k)));
    case DataType.INT16: return widen(viewAs(raw, 2, (b, o, k) => new Int16Array(b, o, k)));
    case DataType.UINT16: return widen(viewAs(raw, 2, (b, o, k) => new Uint16Array(b, o, k)));
    case DataType.INT8: return widen(new Int8Array(raw.buffer, raw.byteOffset, raw.length));
    case DataType.UINT8: case DataType.BOOL: return widen(raw);
    default: throw new LrError('unsupported', `${label}: cannot read data type ${dt} as integers`);
  }
}

/** Reads an integer tensor as JS numbers (shape constants); values beyond ±2^53 are refused. */
export function readTensorInts(t: TensorProto, external?: ExternalBytes): number[] {
  const v = readTensorInt64(t, external);
  const out = new Array<number>(v.length);
  for (let i = 0; i < v.length; i++) {
    const n = Number(v[i]);
    if (!Number.isSafeInteger(n)) throw new LrError('unsupported', `${tensorLabel(t)}: value ${v[i]} is not a safe integer`);
    out[i] = n;
  }
  return out;
}

/** A float tensor with its payload in raw_data, encoded as FLOAT, FLOAT16, BFLOAT16 or DOUBLE. */
export function makeFloatTensor(name: string, dims: readonly number[], data: Float32Array, dataType: number = DataType.FLOAT): TensorProto {
  const count = tensorElementCount(dims, `tensor "${name}"`);
  if (data.length !== count) throw new LrError('usage', `tensor "${name}": ${data.length} values for dims [${dims.join(', ')}]`);
  let raw: Uint8Array;
  switch (dataType) {
    case DataType.FLOAT: raw = bytesOf(data.slice()); break;
    case DataType.FLOAT16: raw = bytesOf(float32ToFloat16Bits(data)); break;
    case DataType.BFLOAT16: raw = bytesOf(float32ToBfloat16Bits(data)); break;
    case DataType.DOUBLE: raw = bytesOf(Float64Array.from(data)); break;
    default: throw new LrError('unsupported', `tensor "${name}": makeFloatTensor cannot encode data type ${dataType}`);
  }
  return newTensor({ name, dims: [...dims], dataType, rawData: raw });
}

/** An INT64 tensor in raw_data (shape constants, axes). */
export function makeInt64Tensor(name: string, dims: readonly number[], data: BigInt64Array | readonly (number | bigint)[]): TensorProto {
  const count = tensorElementCount(dims, `tensor "${name}"`);
  if (data.length !== count) throw new LrError('usage', `tensor "${name}": ${data.length} values for dims [${dims.join(', ')}]`);
  const v = new BigInt64Array(count);
  for (let i = 0; i < count; i++) v[i] = BigInt(data[i]);
  return newTensor({ name, dims: [...dims], dataType: DataType.INT64, rawData: bytesOf(v) });
}
