import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import jpeg from 'jpeg-js';
import pngjs from 'pngjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { describeCalibration, loadCalibration, randomCalibration, type CalibOptions, type CalibSet } from '../../src/calib/load.js';
import { resizeBilinear } from '../../src/calib/image.js';
import { writeNpy, type NpyArray } from '../../src/io/npy.js';
import { writeNpz } from '../../src/io/npz.js';
import { buildFeeds } from '../../src/verify/inputs.js';
import type { ValueInfo } from '../../src/verify/session.js';
import { fromNumbers, type Feeds } from '../../src/verify/tensor.js';

const input = (name: string, shape: (number | string)[], type = 'float32'): ValueInfo => ({ name, isTensor: true, type, shape });
const f32 = (shape: number[], f: (i: number) => number = (i) => i): NpyArray =>
  ({ dtype: 'f4', shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => f(i)) });

let dir: string;
const at = (...p: string[]): string => path.join(dir, ...p);
function npy(name: string, a: NpyArray): string { const r = writeNpy(at(name), a); if (!r.ok) throw r.error; return at(name); }
function npz(name: string, a: Record<string, NpyArray>): string { const r = writeNpz(at(name), a); if (!r.ok) throw r.error; return at(name); }

function load(p: string, opts: CalibOptions): CalibSet {
  const r = loadCalibration(p, opts);
  if (!r.ok) throw r.error;
  return r.value;
}
function fails(p: string, opts: CalibOptions): string {
  const r = loadCalibration(p, opts);
  if (r.ok) throw new Error(`expected ${p} to fail`);
  expect(r.error.message).not.toContain('\n');
  return r.error.message;
}
const all = (s: CalibSet): Feeds[] => [...s.feeds()];
const values = (f: Feeds, n: string): number[] => Array.from(f[n]!.data as Float32Array);

/** An RGBA PNG from rows of [r, g, b] pixels. */
function png(rows: number[][][]): Buffer {
  const h = rows.length, w = rows[0]!.length;
  const p = new pngjs.PNG({ width: w, height: h });
  rows.forEach((row, y) => row.forEach(([r, g, b], x) => { p.data.set([r!, g!, b!, 255], 4 * (y * w + x)); }));
  return pngjs.PNG.sync.write(p);
}

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-calib-'));
});

describe('loadCalibration: arrays', () => {
  it('.npy of the input rank feeds a [1,…] input once per row', () => {
    const file = npy('six.npy', f32([6, 3, 2]));
    const set = load(file, { inputs: [input('x', [1, 3, 2])] });
    expect(set).toMatchObject({ samples: 6, batches: 6, batchSize: 1, calibrated: ['x'], random: [], fixed: [] });
    const feeds = all(set);
    expect(feeds[0]!.x!.dims).toEqual([1, 3, 2]);
    expect(values(feeds[5]!, 'x')).toEqual([30, 31, 32, 33, 34, 35]);
    expect(describeCalibration(set)).toBe(`6 samples from ${file}; inputs x`);
    // feeds() starts over on every call.
    expect(values(all(set)[5]!, 'x')).toEqual([30, 31, 32, 33, 34, 35]);
  });

  it('batches rows when the batch dim is dynamic; samples caps what is read', () => {
    const file = npy('ten.npy', f32([10, 2]));
    const set = load(file, { inputs: [input('x', ['N', 2])], batch: 4, samples: 7 });
    expect(set).toMatchObject({ samples: 7, batches: 2, batchSize: 4 });
    const feeds = all(set);
    expect(feeds.map((f) => f.x!.dims)).toEqual([[4, 2], [3, 2]]);
    expect(values(feeds[1]!, 'x')).toEqual([8, 9, 10, 11, 12, 13]);
    expect(describeCalibration(set)).toContain('2 runs of up to 4');
  });

  it('stacked whole inputs (rank + 1), and a fixed batch of 2 with the remainder dropped', () => {
    const set = load(npy('stack.npy', f32([3, 1, 2])), { inputs: [input('x', [1, 2])] });
    expect(all(set).map((f) => values(f, 'x'))).toEqual([[0, 1], [2, 3], [4, 5]]);
    const fixed = load(npy('five.npy', f32([5, 2])), { inputs: [input('x', [2, 2])] });
    expect(fixed).toMatchObject({ samples: 4, batches: 2, batchSize: 2 });
    expect(all(fixed)[1]!.x!.dims).toEqual([2, 2]);
    expect(fixed.notes.join()).toMatch(/1 calibration sample\(s\) dropped/);
  });

  it('casts dtypes without loss and refuses float data for an integer input', () => {
    const f8: NpyArray = { dtype: 'f8', shape: [2, 2], data: Float64Array.of(0.5, 1.5, 2.5, 3.5) };
    const set = load(npy('f8.npy', f8), { inputs: [input('x', [1, 2])] });
    expect(all(set)[1]!.x!).toMatchObject({ type: 'float32', dims: [1, 2] });
    expect(values(all(set)[1]!, 'x')).toEqual([2.5, 3.5]);
    expect(fails(at('f8.npy'), { inputs: [input('ids', [1, 2], 'int64')] })).toMatch(/f8\.npy: array ids \(f8\) cannot feed input ids \(int64\)/);
  });

  it('names the file for bad shapes, NaN, unreadable data and a missing path', () => {
    expect(fails(npy('bad.npy', f32([4, 3, 5])), { inputs: [input('x', [1, 3, 4])] })).toMatch(/bad\.npy: array x has shape 4x3x5, but input x \[1,3,4\] has 4 on axis 2/);
    expect(fails(at('bad.npy'), { inputs: [input('x', [1, 2, 3, 4, 5, 6])] })).toMatch(/bad\.npy: .*expected the samples on a first axis/);
    expect(fails(npy('nan.npy', f32([3, 2], (i) => (i === 3 ? NaN : i))), { inputs: [input('x', [1, 2])] })).toMatch(/nan\.npy: array x has NaN or Inf \(sample 1, element 1\)/);
    writeFileSync(at('junk.npy'), 'not numpy');
    expect(fails(at('junk.npy'), { inputs: [input('x', [1, 2])] })).toMatch(/junk\.npy: not a \.npy file/);
    expect(fails(at('missing.npy'), { inputs: [input('x', [1, 2])] })).toMatch(/missing\.npy: ENOENT/);
    expect(fails(npy('empty.npy', f32([0, 2])), { inputs: [input('x', [1, 2])] })).toMatch(/empty\.npy: array x holds no samples/);
    writeFileSync(at('notes.txt'), 'x');
    expect(fails(at('notes.txt'), { inputs: [input('x', [1, 2])] })).toMatch(/notes\.txt: expected a \.npy, \.npz/);
  });

  it('a .npy feeds one input: several open inputs are an error; fixed values and random fill the others', () => {
    const inputs = [input('x', ['B', 2]), input('sr', [], 'int64'), input('state', [2, 'B', 3])];
    const file = npy('multi.npy', f32([3, 2]));
    expect(fails(file, { inputs })).toMatch(/multi\.npy: a \.npy file feeds a single input, but inputs x, sr, state have no fixed value; use a \.npz/);
    const sr = fromNumbers('int64', [], [16000]);
    const state = fromNumbers('float32', [2, 1, 3], [1, 2, 3, 4, 5, 6]);
    expect(fails(file, { inputs, values: { sr } })).toMatch(/inputs x, state have no fixed value/);
    const set = load(file, { inputs, values: { sr, state } });
    expect(set).toMatchObject({ calibrated: ['x'], fixed: ['sr', 'state'], random: [], batchSize: 1 }); // B is fixed by state's value
    const f = all(set);
    expect(f.length).toBe(3);
    expect(Object.keys(f[0]!)).toEqual(['x', 'sr', 'state']);
    expect(f[2]!.sr!.data).toEqual(BigInt64Array.of(16000n));
    expect(values(f[2]!, 'x')).toEqual([4, 5]);
  });

  it('.npz names the inputs; missing ones get seeded random data bound to the calibrated dims', () => {
    const inputs = [input('a', ['N', 2]), input('b', ['N', 3]), input('r', ['N', 4])];
    const file = npz('two.npz', { a: f32([5, 2]), b: f32([5, 3], (i) => -i) });
    const set = load(file, { inputs, batch: 2, seed: 3 });
    expect(set).toMatchObject({ calibrated: ['a', 'b'], random: ['r'], batches: 3, samples: 5 });
    const f = all(set);
    expect(f.map((x) => x.r!.dims)).toEqual([[2, 4], [2, 4], [1, 4]]);
    expect(values(f[2]!, 'b')).toEqual([-12, -13, -14]);
    // The random input is the seeded draw of buildFeeds at those dims.
    const want = buildFeeds(inputs, { seed: 3, count: 2, values: { a: f[0]!.a!, b: f[0]!.b! } });
    expect(want.ok && values(want.value.feeds[1]!, 'r')).toEqual(values(f[1]!, 'r'));
    expect(describeCalibration(set)).toBe(`5 samples from ${file}; 3 runs of up to 2; inputs a, b; random r`);
    expect(fails(npz('uneven.npz', { a: f32([5, 2]), b: f32([4, 3]) }), { inputs })).toMatch(/uneven\.npz: arrays hold different sample counts \(a: 5, b: 4\)/);
    expect(fails(npz('stray.npz', { a: f32([5, 2]), c: f32([5, 3]) }), { inputs })).toMatch(/stray\.npz: array 'c' names no model input \(inputs are: a, b, r\)/);
  });

  it('a folder of arrays: files in name order until the cap; bad folders are errors', () => {
    mkdirSync(at('arrays'));
    writeNpy(at('arrays', 'b.npy'), f32([2, 2], (i) => 10 + i));
    writeNpy(at('arrays', 'a.npy'), f32([3, 2]));
    writeFileSync(at('arrays', 'README.md'), 'ignored');
    const set = load(at('arrays'), { inputs: [input('x', [1, 2])], samples: 4 });
    expect(all(set).map((f) => values(f, 'x'))).toEqual([[0, 1], [2, 3], [4, 5], [10, 11]]);
    expect(describeCalibration(set)).toBe(`4 samples from 2 files in ${at('arrays')}; inputs x`);
    mkdirSync(at('nothing'));
    writeFileSync(at('nothing', 'a.txt'), '');
    expect(fails(at('nothing'), { inputs: [input('x', [1, 2])] })).toMatch(/nothing has no \.npy, \.npz, \.png, \.jpg or \.jpeg files/);
    mkdirSync(at('mixed'));
    writeNpy(at('mixed', 'a.npy'), f32([1, 2]));
    writeFileSync(at('mixed', 'b.png'), png([[[0, 0, 0]]]));
    expect(fails(at('mixed'), { inputs: [input('x', [1, 2])] })).toMatch(/mixed mixes images \(1\) and arrays \(1\)/);
    mkdirSync(at('shapes'));
    writeNpy(at('shapes', 'a.npy'), f32([1, 2]));
    writeNpy(at('shapes', 'b.npy'), f32([1, 1, 2]));
    expect(fails(at('shapes'), { inputs: [input('x', [1, 2])] })).toMatch(/b\.npy: array x has rank 3, earlier files gave rank 2/);
  });

  it('rejects bad options', () => {
    expect(fails(at('six.npy'), { inputs: [input('x', [1, 3, 2])], samples: 0 })).toMatch(/samples must be a positive integer/);
    expect(fails(at('six.npy'), { inputs: [input('x', [1, 3, 2])], values: { y: fromNumbers('float32', [1], [0]) } })).toMatch(/no model input named 'y'/);
  });
});

describe('loadCalibration: images', () => {
  // 2x2 image: red, green / blue, white.
  const px = [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]];

  it('decodes a PNG to RGB in [0, 1], normalises per channel, NCHW and NHWC', () => {
    mkdirSync(at('png'));
    writeFileSync(at('png', 'a.png'), png(px));
    const nchw = load(at('png'), { inputs: [input('x', [1, 3, 2, 2])], mean: [0.5, 0, 0], std: [0.5, 1, 2] });
    const f = all(nchw)[0]!;
    expect(f.x!.dims).toEqual([1, 3, 2, 2]);
    // R plane: (v − 0.5)/0.5; G plane: v; B plane: v/2.
    expect(values(f, 'x')).toEqual([1, -1, -1, 1, 0, 1, 0, 1, 0, 0, 0.5, 0.5]);
    const nhwc = load(at('png'), { inputs: [input('x', [1, 2, 2, 3])], layout: 'nhwc' });
    expect(values(all(nhwc)[0]!, 'x')).toEqual([1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1]);
    expect(describeCalibration(nchw)).toBe(`1 sample from images in ${at('png')} (resize 2x2, mean 0.5,0,0, std 0.5,1,2, nchw)`);
  });

  it('bilinear resize with half-pixel centres', () => {
    // One row [a, b] → 4 columns: source x = −0.25, 0.25, 0.75, 1.25, clamped.
    expect(Array.from(resizeBilinear(Float32Array.of(0, 8), 1, 1, 2, 1, 4))).toEqual([0, 2, 6, 8]);
    // Downscale 4 → 2 samples at 0.5 and 2.5.
    expect(Array.from(resizeBilinear(Float32Array.of(0, 4, 8, 12), 1, 1, 4, 1, 2))).toEqual([2, 10]);
    mkdirSync(at('resize'));
    writeFileSync(at('resize', 'a.png'), png(px));
    const set = load(at('resize'), { inputs: [input('x', ['N', 3, 'H', 'W'])], resize: [2, 4] });
    const r = values(all(set)[0]!, 'x').slice(0, 8); // red plane, rows [1, 0] and [0, 1] widened
    expect(r).toEqual([1, 0.75, 0.25, 0, 0, 0.25, 0.75, 1]);
  });

  it('JPEG, luminance for a one-channel input, size from --shape, batches of images', () => {
    mkdirSync(at('jpg'));
    const w = 8, h = 8;
    const data = Buffer.alloc(w * h * 4);
    for (let i = 0; i < w * h; i++) data.set([200, 100, 50, 255], 4 * i);
    const bytes = jpeg.encode({ width: w, height: h, data }, 100).data;
    writeFileSync(at('jpg', 'a.jpg'), bytes);
    writeFileSync(at('jpg', 'b.JPEG'), bytes);
    writeFileSync(at('jpg', 'c.png'), png([[[200, 100, 50]]]));
    const set = load(at('jpg'), { inputs: [input('x', ['N', 1, 'H', 'W'])], shapes: { x: [1, 1, 4, 6] } });
    expect(set).toMatchObject({ samples: 3, batches: 1, batchSize: 3 });
    const f = all(set)[0]!;
    expect(f.x!.dims).toEqual([3, 1, 4, 6]);
    const lum = (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255;
    for (const v of values(f, 'x')) expect(Math.abs(v - lum)).toBeLessThan(3 / 255);
    expect(describeCalibration(set)).toContain('luminance');
  });

  it('errors name the file or say what is missing', () => {
    mkdirSync(at('broken'));
    writeFileSync(at('broken', 'a.png'), Buffer.concat([png(px).subarray(0, 40)]));
    expect(fails(at('broken'), { inputs: [input('x', [1, 3, 2, 2])] })).toMatch(/a\.png: cannot decode PNG/);
    writeFileSync(at('broken', 'a.png'), 'plain text');
    expect(fails(at('broken'), { inputs: [input('x', [1, 3, 2, 2])] })).toMatch(/a\.png: not a PNG or JPEG image/);
    expect(fails(at('png'), { inputs: [input('x', [1, 3, 'H', 'W'])] })).toMatch(/dynamic height or width: give a resize HxW/);
    expect(fails(at('png'), { inputs: [input('x', [1, 3, 4, 4])], resize: [2, 2] })).toMatch(/resize 2x2 disagrees with input x \[1,3,4,4\]/);
    expect(fails(at('png'), { inputs: [input('x', [1, 3, 2, 2])], mean: [1, 2] })).toMatch(/mean has 2 values, the input has 3 channels/);
    expect(fails(at('png'), { inputs: [input('x', [1, 3, 2, 2])], std: [0] })).toMatch(/std values must be non-zero/);
    expect(fails(at('png'), { inputs: [input('x', [1, 2, 2, 3])] })).toMatch(/has 2 channels on axis 1 \(nchw\).*try layout nhwc/);
    expect(fails(at('png'), { inputs: [input('x', [1, 3, 2])] })).toMatch(/images feed a 4-D input/);
    expect(fails(at('png'), { inputs: [input('x', [1, 3, 2, 2]), input('y', [1])] })).toMatch(/images feed a single input, but inputs x, y have no fixed value/);
  });
});

describe('randomCalibration', () => {
  it('is buildFeeds with a count, and says so', () => {
    const inputs = [input('x', ['N', 3]), input('sr', [], 'int64')];
    const sr = fromNumbers('int64', [], [8000]);
    const r = randomCalibration(inputs, { samples: 3, seed: 2, values: { sr } });
    if (!r.ok) throw r.error;
    const want = buildFeeds(inputs, { seed: 2, count: 3, values: { sr } });
    if (!want.ok) throw want.error;
    expect([...r.value.feeds()]).toEqual(want.value.feeds);
    expect(r.value).toMatchObject({ samples: 3, batches: 3, fixed: ['sr'], random: ['x'] });
    expect(r.value.notes).toEqual(['dynamic dim x[0] (N) set to 1 for calibration']);
    expect(describeCalibration(r.value)).toBe('random inputs (seed 2, 3 samples)');
    const bad = randomCalibration(inputs, { shapes: { x: [1, 4] } });
    expect(!bad.ok && bad.error.message).toMatch(/axis 1 is fixed at 3/);
  });
});
