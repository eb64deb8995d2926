import { describe, expect, it } from 'vitest';
import { DataType, DATA_LOCATION_EXTERNAL, newTensor, type TensorProto } from '../../src/onnx/schema.js';
import {
  bf16BitsToF32, bfloat16BitsToFloat32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, float16BitsToFloat32,
  float32ToBfloat16Bits, float32ToFloat16Bits,
} from '../../src/onnx/half.js';
import {
  makeFloatTensor, makeInt64Tensor, readTensorFloat, readTensorFloat64, readTensorInt64, readTensorInts, tensorByteSize,
  tensorElementCount, tensorRawBytes,
} from '../../src/onnx/tensor.js';
import { createRng } from '../../src/util/rng.js';
import { expectLrError } from './helpers.js';

const isF16NaN = (h: number) => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
const INT64_MAX = 0x7fffffffffffffffn;
const INT64_MIN = -0x8000000000000000n;

/** Values of the non-negative finite halves: bit patterns 0..0x7bff are already ascending. */
function halfTable(): Float64Array {
  const t = new Float64Array(0x7c00);
  for (let h = 0; h < 0x7c00; h++) {
    const exp = h >>> 10, m = h & 0x3ff;
    t[h] = exp === 0 ? m * 2 ** -24 : (1 + m / 1024) * 2 ** (exp - 15);
  }
  return t;
}

/** Reference rounding by search: nearest half, ties to the even pattern, 65520 and up to inf. */
function refF16(x: number, table: Float64Array): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65520) return sign | 0x7c00;
  let lo = 0, hi = table.length; // invariant: table[lo] <= a < table[hi] (hi may be past the end)
  while (hi - lo > 1) { const mid = (lo + hi) >> 1; if (table[mid] <= a) lo = mid; else hi = mid; }
  if (table[lo] === a || lo === table.length - 1) return sign | lo;
  const dl = a - table[lo], dh = table[lo + 1] - a;
  return sign | (dl < dh ? lo : dh < dl ? lo + 1 : lo % 2 === 0 ? lo : lo + 1);
}

describe('tensorElementCount', () => {
  it('multiplies dims and treats [] as a scalar', () => {
    expect(tensorElementCount([])).toBe(1);
    expect(tensorElementCount([2, 3, 4])).toBe(24);
    expect(tensorElementCount([5, 0, 7])).toBe(0);
  });
  it('refuses negative, fractional and overflowing dims', () => {
    expectLrError(() => tensorElementCount([2, -1]), 'parse', /invalid dimension -1/);
    expectLrError(() => tensorElementCount([1.5]), 'parse');
    expectLrError(() => tensorElementCount([2 ** 30, 2 ** 30, 2 ** 30]), 'parse', /too large/);
  });
});

describe('fp16 conversions', () => {
  it('round-trips all 65536 half bit patterns (NaN stays NaN with its sign)', () => {
    for (let h = 0; h < 0x10000; h++) {
      const back = f32ToF16Bits(f16BitsToF32(h));
      if (isF16NaN(h)) {
        expect(isF16NaN(back)).toBe(true);
        expect(back & 0x8000).toBe(h & 0x8000);
      } else if (back !== h) {
        expect.fail(`half 0x${h.toString(16)} came back as 0x${back.toString(16)}`);
      }
    }
  });
  it('bulk conversion keeps every bit pattern, NaN payloads included', () => {
    const all = new Uint16Array(0x10000).map((_, i) => i);
    expect(float32ToFloat16Bits(float16BitsToFloat32(all))).toEqual(all);
  });
  it('matches a search-based round-to-nearest-even reference', () => {
    const table = halfTable();
    const rng = createRng(7);
    const f32 = new Float32Array(1);
    const u32 = new Uint32Array(f32.buffer);
    const check = (x: number) => {
      const got = f32ToF16Bits(x);
      const want = refF16(Math.fround(x), table);
      if (got !== want) expect.fail(`${x}: got 0x${got.toString(16)}, want 0x${want.toString(16)}`);
    };
    // Random float32 bit patterns concentrated in the half range, plus exact midpoints.
    for (let i = 0; i < 100_000; i++) {
      u32[0] = ((rng.int(2) << 31) | ((rng.int(40) + 97) << 23) | rng.int(1 << 23)) >>> 0;
      if (Number.isFinite(f32[0])) check(f32[0]);
    }
    for (let i = 0; i + 1 < table.length; i++) { check((table[i] + table[i + 1]) / 2); check(-(table[i] + table[i + 1]) / 2); }
    check(65519.99); check(65520); check(1e9); check(2 ** -26); check(3 * 2 ** -26);
  });
  it('converts known values', () => {
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f32ToF16Bits(65519)).toBe(0x7bff);
    expect(f32ToF16Bits(65520)).toBe(0x7c00);
    expect(f32ToF16Bits(2 ** -14)).toBe(0x0400); // 6.1035e-5, smallest normal
    expect(f32ToF16Bits(6.1e-5)).toBe(0x03ff); // largest subnormal region
    expect(f32ToF16Bits(2 ** -24)).toBe(0x0001); // 5.96e-8, smallest subnormal
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000); // tie → even (zero)
    expect(f32ToF16Bits(3 * 2 ** -26)).toBe(0x0001);
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie → even
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(f32ToF16Bits(-0)).toBe(0x8000);
    expect(f32ToF16Bits(0)).toBe(0);
    expect(f32ToF16Bits(Infinity)).toBe(0x7c00);
    expect(f32ToF16Bits(-Infinity)).toBe(0xfc00);
    expect(isF16NaN(f32ToF16Bits(NaN))).toBe(true);
    expect(f16BitsToF32(0x7bff)).toBe(65504);
    expect(f16BitsToF32(0x0001)).toBe(2 ** -24);
    expect(f16BitsToF32(0x03ff)).toBe(1023 * 2 ** -24);
    expect(Object.is(f16BitsToF32(0x8000), -0)).toBe(true);
    expect(f16BitsToF32(0xfc00)).toBe(-Infinity);
    expect(f16BitsToF32(0x7e00)).toBeNaN();
    expect(f16BitsToF32(0x3555)).toBeCloseTo(0.33325, 5);
  });
});

describe('bf16 conversions', () => {
  it('round-trips all 65536 bit patterns', () => {
    for (let h = 0; h < 0x10000; h++) {
      const back = f32ToBf16Bits(bf16BitsToF32(h));
      const nan = (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;
      if (nan ? (back & 0x7f80) !== 0x7f80 || (back & 0x7f) === 0 : back !== h) expect.fail(`bf16 0x${h.toString(16)} → 0x${back.toString(16)}`);
    }
    const all = new Uint16Array(0x10000).map((_, i) => i);
    expect(float32ToBfloat16Bits(bfloat16BitsToFloat32(all))).toEqual(all);
  });
  it('rounds to nearest even and handles inf/nan', () => {
    const fromBits = (b: number) => new Float32Array(new Uint32Array([b]).buffer)[0];
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(f32ToBf16Bits(fromBits(0x3f808000))).toBe(0x3f80); // tie, even stays
    expect(f32ToBf16Bits(fromBits(0x3f818000))).toBe(0x3f82); // tie, odd rounds up
    expect(f32ToBf16Bits(fromBits(0x3f808001))).toBe(0x3f81);
    expect(f32ToBf16Bits(fromBits(0x7f7fffff))).toBe(0x7f80); // max float rounds to inf
    expect(f32ToBf16Bits(-Infinity)).toBe(0xff80);
    expect(f32ToBf16Bits(-0)).toBe(0x8000);
    const nan = f32ToBf16Bits(fromBits(0x7f800001)); // payload only in the low bits
    expect((nan & 0x7f80) === 0x7f80 && (nan & 0x7f) !== 0).toBe(true);
  });
});

describe('reading tensors', () => {
  const values = Float32Array.from([1.5, -2.25, 0, 3e-3, 65504, -1e-7]);
  const f32bytes = new Uint8Array(values.buffer);

  it('reads raw_data at an unaligned offset', () => {
    const backing = new Uint8Array(f32bytes.length + 3);
    backing.set(f32bytes, 3);
    const t = newTensor({ name: 'w', dims: [2, 3], dataType: DataType.FLOAT, rawData: backing.subarray(3) });
    const got = readTensorFloat(t);
    expect(got).toEqual(values);
    got[0] = 99; // a fresh copy: the tensor is not affected
    expect(readTensorFloat(t)[0]).toBe(1.5);
    expect(readTensorFloat64(t)).toEqual(Float64Array.from(values));
  });
  it('reads float_data, double_data, int64_data and fp16/bf16 bits in int32_data', () => {
    expect(readTensorFloat(newTensor({ dims: [6], dataType: DataType.FLOAT, floatData: values }))).toEqual(values);
    const d = Float64Array.from([1 / 3, -1e300, 2]);
    expect(readTensorFloat64(newTensor({ dims: [3], dataType: DataType.DOUBLE, doubleData: d }))).toEqual(d);
    expect(readTensorFloat(newTensor({ dims: [3], dataType: DataType.DOUBLE, doubleData: d }))).toEqual(Float32Array.from(d));
    expect(readTensorFloat(newTensor({ dims: [2], dataType: DataType.INT64, int64Data: BigInt64Array.from([-3n, 7n]) }))).toEqual(Float32Array.from([-3, 7]));
    const halves = Int32Array.from([0x3c00, 0xc000, 0x7bff, 0x0001]);
    expect(readTensorFloat(newTensor({ dims: [4], dataType: DataType.FLOAT16, int32Data: halves })))
      .toEqual(Float32Array.from([1, -2, 65504, 2 ** -24]));
    expect(readTensorFloat(newTensor({ dims: [2], dataType: DataType.BFLOAT16, int32Data: Int32Array.from([0x3f80, 0xc040]) })))
      .toEqual(Float32Array.from([1, -3]));
    expect(readTensorFloat64(newTensor({ dims: [2], dataType: DataType.INT32, int32Data: Int32Array.from([2 ** 31 - 1, -5]) })))
      .toEqual(Float64Array.from([2 ** 31 - 1, -5]));
    expect(readTensorFloat(newTensor({ dims: [3], dataType: DataType.INT8, int32Data: Int32Array.from([-128, 127, -1]) })))
      .toEqual(Float32Array.from([-128, 127, -1]));
  });
  it('round-trips makeFloatTensor in every float encoding', () => {
    const v = Float32Array.from([0.1, -3.5, 1e-5, 70000, -0, 1024]);
    expect(readTensorFloat(makeFloatTensor('a', [2, 3], v))).toEqual(v);
    expect(readTensorFloat(makeFloatTensor('a', [2, 3], v, DataType.DOUBLE))).toEqual(v);
    const h = readTensorFloat(makeFloatTensor('a', [6], v, DataType.FLOAT16));
    expect(Array.from(h)).toEqual(Array.from(v).map((x) => f16BitsToF32(f32ToF16Bits(x))));
    expect(h[3]).toBe(Infinity);
    const b = readTensorFloat(makeFloatTensor('a', [6], v, DataType.BFLOAT16));
    expect(Array.from(b)).toEqual(Array.from(v).map((x) => bf16BitsToF32(f32ToBf16Bits(x))));
    const t = makeFloatTensor('a', [2, 3], v, DataType.FLOAT16);
    expect(t.rawData!.length).toBe(12);
    expect(tensorByteSize(t)).toBe(12);
    expectLrError(() => makeFloatTensor('a', [4], v), 'usage', /"a"/);
    expectLrError(() => makeFloatTensor('a', [6], v, DataType.INT8), 'unsupported');
  });
  it('does not alias the caller array', () => {
    const v = Float32Array.from([1, 2]);
    const t = makeFloatTensor('a', [2], v);
    v[0] = 5;
    expect(readTensorFloat(t)[0]).toBe(1);
  });
  it('refuses payloads that disagree with dims, naming the tensor, before allocating', () => {
    expectLrError(() => readTensorFloat(newTensor({ name: 'W1', dims: [2, 4], dataType: DataType.FLOAT, rawData: f32bytes })), 'parse', /"W1".*24.*32/);
    expectLrError(() => readTensorFloat(newTensor({ name: 'W2', dims: [7], dataType: DataType.FLOAT, floatData: values })), 'parse', /"W2"/);
    expectLrError(() => readTensorFloat(newTensor({ name: 'W3', dims: [3], dataType: DataType.FLOAT })), 'parse', /"W3".*no data/);
    // A huge declared size with a tiny payload must fail fast, not try to allocate 8 PB.
    expectLrError(() => readTensorFloat(newTensor({ name: 'W4', dims: [2 ** 50], dataType: DataType.FLOAT, rawData: f32bytes })), 'parse', /"W4"/);
    expectLrError(() => readTensorInt64(newTensor({ name: 'W5', dims: [2 ** 40], dataType: DataType.INT64, int64Data: new BigInt64Array(1) })), 'parse', /"W5"/);
    expectLrError(() => readTensorFloat(newTensor({ name: 'S', dims: [1], dataType: DataType.STRING, stringData: [new Uint8Array(1)] })), 'unsupported');
  });
  it('needs a reader for external data and checks the bytes it returns', () => {
    const t = newTensor({ name: 'E', dims: [2], dataType: DataType.FLOAT, dataLocation: DATA_LOCATION_EXTERNAL, externalData: [{ key: 'location', value: 'x' }] });
    expectLrError(() => readTensorFloat(t), 'usage', /"E"/);
    expect(readTensorFloat(t, { readBytes: () => new Uint8Array(new Float32Array([4, 5]).buffer) })).toEqual(Float32Array.from([4, 5]));
    expectLrError(() => readTensorFloat(t, { readBytes: () => new Uint8Array(4) }), 'parse', /"E"/);
  });
  it('reads int64 extremes and shape constants', () => {
    const ext = BigInt64Array.from([INT64_MAX, INT64_MIN, -1n, 0n]);
    const raw = makeInt64Tensor('s', [4], ext);
    expect(readTensorInt64(raw)).toEqual(ext);
    expect(readTensorInt64(newTensor({ dims: [4], dataType: DataType.INT64, int64Data: ext }))).toEqual(ext);
    expectLrError(() => readTensorInts(raw), 'unsupported', /9223372036854775807/);
    expect(readTensorInts(makeInt64Tensor('shape', [3], [1, -1, 2 ** 40]))).toEqual([1, -1, 2 ** 40]);
    expect(readTensorInts(newTensor({ dims: [2], dataType: DataType.INT32, int32Data: Int32Array.from([-7, 3]) }))).toEqual([-7, 3]);
    expect(readTensorInts(newTensor({ dims: [], dataType: DataType.UINT64, uint64Data: BigUint64Array.from([5n]) }))).toEqual([5]);
    expectLrError(() => readTensorInt64(newTensor({ dims: [1], dataType: DataType.UINT64, uint64Data: BigUint64Array.from([2n ** 64n - 1n]) })), 'unsupported');
    expectLrError(() => readTensorInts(makeFloatTensor('f', [1], Float32Array.from([1]))), 'unsupported');
  });
  it('converts typed payloads to raw layout for every fixed-width type', () => {
    const cases: [TensorProto, number[]][] = [
      [newTensor({ dims: [2], dataType: DataType.INT16, int32Data: Int32Array.from([-2, 300]) }), [0xfe, 0xff, 0x2c, 0x01]],
      [newTensor({ dims: [3], dataType: DataType.BOOL, int32Data: Int32Array.from([1, 0, 1]) }), [1, 0, 1]],
      [newTensor({ dims: [3], dataType: DataType.INT4, int32Data: Int32Array.from([0x21, 0x03]) }), [0x21, 0x03]],
      [newTensor({ dims: [1], dataType: DataType.UINT32, uint64Data: BigUint64Array.from([0xdeadbeefn]) }), [0xef, 0xbe, 0xad, 0xde]],
      [newTensor({ dims: [1], dataType: DataType.COMPLEX64, floatData: Float32Array.from([1, 0]) }), [0, 0, 0x80, 0x3f, 0, 0, 0, 0]],
    ];
    for (const [t, bytes] of cases) expect(Array.from(tensorRawBytes(t))).toEqual(bytes);
    expect(tensorByteSize(cases[2][0])).toBe(2);
    expect(tensorByteSize(newTensor({ dims: [], dataType: DataType.STRING, stringData: [new Uint8Array(5)] }))).toBe(5);
  });
});
