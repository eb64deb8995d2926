import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeNpy } from '../../src/io/npy.js';
import { buildFeeds, loadInputArgs, parseInputArg, parseShapeArg, parseShapeArgs } from '../../src/verify/inputs.js';
import type { ValueInfo } from '../../src/verify/session.js';
import { floatToHalf, fromNumbers, halfToFloat, toNumbers } from '../../src/verify/tensor.js';

// Silero VAD's signature as ORT 1.30 reports it.
const SILERO: ValueInfo[] = [
  { name: 'input', isTensor: true, type: 'float32', shape: ['batch', 'sequence'] },
  { name: 'sr', isTensor: true, type: 'int64', shape: [] },
  { name: 'state', isTensor: true, type: 'float32', shape: [2, 'batch', 128] },
];

const MIXED: ValueInfo[] = [
  { name: 'x', isTensor: true, type: 'float32', shape: [4, 100] },
  { name: 'ids', isTensor: true, type: 'int64', shape: [1000] },
  { name: 'i32', isTensor: true, type: 'int32', shape: [1000] },
  { name: 'mask', isTensor: true, type: 'bool', shape: [1000] },
  { name: 'h', isTensor: true, type: 'float16', shape: [8] },
];

const unwrap = <T>(r: { ok: true; value: T } | { ok: false; error: Error }): T => {
  if (!r.ok) throw r.error;
  return r.value;
};

describe('buildFeeds', () => {
  it('is deterministic per seed, and different seeds differ', () => {
    const a = unwrap(buildFeeds(MIXED, { seed: 7, count: 2 }));
    const b = unwrap(buildFeeds(MIXED, { seed: 7, count: 2 }));
    const c = unwrap(buildFeeds(MIXED, { seed: 8, count: 2 }));
    expect(a.feeds).toEqual(b.feeds);
    expect([...a.feeds[0]!.x!.data]).not.toEqual([...c.feeds[0]!.x!.data]);
    expect([...a.feeds[0]!.ids!.data]).not.toEqual([...c.feeds[0]!.ids!.data]);
    // Successive feeds of one plan differ too.
    expect([...a.feeds[0]!.x!.data]).not.toEqual([...a.feeds[1]!.x!.data]);
  });

  it('draws N(0,1) floats, {0..3} integers and 0/1 bools in the right array types', () => {
    const f = unwrap(buildFeeds(MIXED, { seed: 1 })).feeds[0]!;
    const x = f.x!;
    expect(x.data).toBeInstanceOf(Float32Array);
    expect(x.dims).toEqual([4, 100]);
    const xs = toNumbers(x);
    const mean = xs.reduce((s, v) => s + v, 0) / xs.length;
    const sd = Math.sqrt(xs.reduce((s, v) => s + (v - mean) ** 2, 0) / xs.length);
    expect(Math.abs(mean)).toBeLessThan(0.2);
    expect(sd).toBeGreaterThan(0.85);
    expect(sd).toBeLessThan(1.15);
    expect(f.ids!.data).toBeInstanceOf(BigInt64Array);
    expect(new Set(toNumbers(f.ids!))).toEqual(new Set([0, 1, 2, 3]));
    expect(f.i32!.data).toBeInstanceOf(Int32Array);
    expect(new Set(toNumbers(f.mask!))).toEqual(new Set([0, 1]));
    expect(f.h!.data).toBeInstanceOf(Uint16Array);
    expect(toNumbers(f.h!).every((v) => Number.isFinite(v) && Math.abs(v) < 6)).toBe(true);
  });

  it('with a period, draws that many values per input and repeats them (the draw starts as without one)', () => {
    const full = unwrap(buildFeeds(MIXED, { seed: 3 })).feeds[0]!;
    const tiled = unwrap(buildFeeds(MIXED, { seed: 3, period: 7 })).feeds[0]!;
    for (const name of ['x', 'ids', 'mask']) {
      const a = toNumbers(full[name]!);
      const b = toNumbers(tiled[name]!);
      expect(b.length).toBe(a.length);
      expect(b.slice(0, 7)).toEqual(a.slice(0, 7));
      expect(b.every((v, j) => v === b[j % 7])).toBe(true);
    }
    // The draw differs past the period without one (it is random there, not repeated).
    expect(toNumbers(full.x!).slice(7, 14)).not.toEqual(toNumbers(full.x!).slice(0, 7));
    // A period past the size is no period.
    expect(unwrap(buildFeeds(MIXED, { seed: 3, period: 1e6 })).feeds).toEqual(unwrap(buildFeeds(MIXED, { seed: 3 })).feeds);
  });

  it('overriding one input leaves the random data of the others unchanged', () => {
    const plain = unwrap(buildFeeds(SILERO, { seed: 3, shapes: { input: [1, 512] } })).feeds[0]!;
    const sr = fromNumbers('int64', [], [16000]);
    const over = unwrap(buildFeeds(SILERO, { seed: 3, shapes: { input: [1, 512] }, values: { sr } })).feeds[0]!;
    expect(over.sr!.data).toEqual(new BigInt64Array([16000n]));
    expect(over.input).toEqual(plain.input);
    expect(over.state).toEqual(plain.state);
  });

  it('binds symbolic dims across inputs and reports the ones it defaulted', () => {
    const given = unwrap(buildFeeds(SILERO, { shapes: { input: [2, 512] } }));
    expect(given.dims).toEqual({ input: [2, 512], sr: [], state: [2, 2, 128] });
    expect(given.defaulted).toEqual([]);
    const none = unwrap(buildFeeds(SILERO, {}));
    expect(none.dims).toEqual({ input: [1, 1], sr: [], state: [2, 1, 128] });
    expect(none.defaulted).toEqual([
      { input: 'input', axis: 0, symbol: 'batch' },
      { input: 'input', axis: 1, symbol: 'sequence' },
    ]);
    // A value override's shape binds symbols as well.
    const byValue = unwrap(buildFeeds(SILERO, { values: { state: fromNumbers('float32', [2, 3, 128], new Float64Array(768)) } }));
    expect(byValue.dims.input).toEqual([3, 1]);
    expect(byValue.defaulted).toEqual([{ input: 'input', axis: 1, symbol: 'sequence' }]);
  });

  it('casts value overrides losslessly and refuses lossy casts', () => {
    const f64 = fromNumbers('float64', [2, 1, 128], new Float64Array(256).fill(0.25));
    const sr32 = fromNumbers('int32', [], [8000]);
    const r = unwrap(buildFeeds(SILERO, { values: { state: f64, sr: sr32 } })).feeds[0]!;
    expect(r.state!.data).toBeInstanceOf(Float32Array);
    expect(r.state!.data[0]).toBe(0.25);
    expect(r.sr!.data).toEqual(new BigInt64Array([8000n]));
    const lossy = buildFeeds(SILERO, { values: { sr: fromNumbers('float32', [], [16000]) } });
    expect(!lossy.ok && lossy.error.message).toBe('input sr expects int64: cannot cast float32 to int64 (would truncate)');
  });

  it('calls the defaultFeedsFor hook for inputs without an override', () => {
    const seen: string[] = [];
    const plan = unwrap(buildFeeds(SILERO, {
      shapes: { input: [1, 512] },
      defaultFeedsFor: (input, dims) => {
        seen.push(`${input.name}:${dims.join('x')}`);
        return input.name === 'sr' ? fromNumbers('int64', dims, [16000]) : undefined;
      },
    }));
    expect(seen).toEqual(['input:1x512', 'sr:', 'state:2x1x128']);
    expect(plan.feeds[0]!.sr!.data).toEqual(new BigInt64Array([16000n]));
    expect(plan.feeds[0]!.input!.data.length).toBe(512);
  });

  it('rejects overrides that do not fit the model, as usage errors', () => {
    const cases: [Parameters<typeof buildFeeds>[1], RegExp][] = [
      [{ shapes: { nope: [1] } }, /no model input named 'nope' \(inputs are: input, sr, state\)/],
      [{ shapes: { state: [2, 1] } }, /input state has rank 3/],
      [{ shapes: { state: [3, 1, 128] } }, /input state axis 0 is fixed at 2/],
      [{ shapes: { input: [1, 512], state: [2, 4, 128] } }, /dim 'batch' is 1 from an earlier input but 4 for state/],
      [{ shapes: { sr: [1] }, values: { sr: fromNumbers('int64', [], [1]) } }, /disagrees/],
    ];
    for (const [opts, re] of cases) {
      const r = buildFeeds(SILERO, opts);
      expect(r.ok).toBe(false);
      if (r.ok) continue;
      expect(r.error.kind).toBe('usage');
      expect(r.error.message).toMatch(re);
    }
    const str = buildFeeds([{ name: 's', isTensor: true, type: 'string', shape: [1] }]);
    expect(!str.ok && str.error.kind).toBe('unsupported');
  });
});

describe('CLI strings', () => {
  it('parses --shape', () => {
    expect(unwrap(parseShapeArg('x:1x3x224x224'))).toEqual({ name: 'x', dims: [1, 3, 224, 224] });
    expect(unwrap(parseShapeArg('onnx::Flatten_0:1x25x96'))).toEqual({ name: 'onnx::Flatten_0', dims: [1, 25, 96] });
    expect(unwrap(parseShapeArg('n:7'))).toEqual({ name: 'n', dims: [7] });
    for (const bad of ['x', 'x:', ':1x2', 'x:1x0', 'x:1,3', 'x:1xx3', 'x:-1']) {
      const r = parseShapeArg(bad);
      expect(!r.ok && r.error.kind, bad).toBe('usage');
    }
    expect(unwrap(parseShapeArgs(['a:1', 'b:2x3']))).toEqual({ a: [1], b: [2, 3] });
    const twice = parseShapeArgs(['a:1', 'a:2']);
    expect(!twice.ok && twice.error.message).toContain('twice');
  });

  it('parses --input, splitting at the first single colon', () => {
    expect(unwrap(parseInputArg('sr:sr.npy'))).toEqual({ name: 'sr', file: 'sr.npy' });
    expect(unwrap(parseInputArg('onnx::Flatten_0:/tmp/a.npy'))).toEqual({ name: 'onnx::Flatten_0', file: '/tmp/a.npy' });
    expect(unwrap(parseInputArg('x:C:\\data\\a.npy'))).toEqual({ name: 'x', file: 'C:\\data\\a.npy' });
    for (const bad of ['x', 'x:', ':a.npy', 'x:a.txt']) {
      const r = parseInputArg(bad);
      expect(!r.ok && r.error.kind, bad).toBe('usage');
    }
  });

  it('loads --input files into typed tensors; a missing file is an io error', () => {
    const dir = mkdtempSync(join(tmpdir(), 'inputs-'));
    const p = join(dir, 'sr.npy');
    writeNpy(p, { dtype: 'i8', shape: [], data: new BigInt64Array([16000n]) });
    const v = unwrap(loadInputArgs([`sr:${p}`]));
    expect(v.sr).toEqual({ type: 'int64', dims: [], data: new BigInt64Array([16000n]) });
    const missing = loadInputArgs([`sr:${join(dir, 'none.npy')}`]);
    expect(!missing.ok && missing.error.kind).toBe('io');
    expect(!missing.ok && missing.error.message).toContain('none.npy');
  });
});

describe('half floats', () => {
  it('round-trips exactly representable values and rounds to nearest even', () => {
    for (const v of [0, 1, -2, 0.5, 65504, 2 ** -24, -(2 ** -14), 1 + 2 ** -10]) {
      expect(halfToFloat(floatToHalf(v))).toBe(v);
    }
    expect(floatToHalf(1)).toBe(0x3c00);
    expect(floatToHalf(1 + 2 ** -11)).toBe(0x3c00); // tie → even
    expect(floatToHalf(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even (up)
    expect(floatToHalf(1e6)).toBe(0x7c00);
    expect(halfToFloat(floatToHalf(-1e6))).toBe(-Infinity);
    expect(Number.isNaN(halfToFloat(floatToHalf(NaN)))).toBe(true);
  });
});
