import { describe, expect, it } from 'vitest';
import { leanFactor, leftOutSplit } from '../../src/optimize/left-out.js';
import type { Feeds, HostTensor } from '../../src/verify/tensor.js';

const f32 = (dims: number[], start = 0): HostTensor => ({ type: 'float32', dims, data: Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, (_, i) => start + i) });

describe('leftOutSplit', () => {
  const learned = new Map<string, readonly number[]>([['y', [1, 5]]]);

  it('several feeds: the last one is left out', () => {
    const feeds: Feeds[] = [{ x: f32([1, 2]) }, { x: f32([1, 2], 10) }, { x: f32([1, 2], 20) }];
    const outs = [{ y: f32([1, 5]) }, { y: f32([1, 5], 5) }, { y: f32([1, 5], 9) }];
    const s = leftOutSplit(feeds, outs, learned)!;
    expect(s.fitFeeds).toEqual(feeds.slice(0, 2));
    expect(s.fitted(outs)).toEqual(outs.slice(0, 2));
    expect(s.leftOut(outs)).toEqual([outs[2]]);
    expect(s.fitBatches(outs)).toEqual(outs.slice(0, 2));
    expect(s.leftOutFeeds).toEqual([2]);
    expect(s.label).toBe('2 of 3 calibration feeds');
  });

  it('one feed of 8 samples: the last quarter is left out, every input and output cut along its batch axis', () => {
    const x = f32([8, 3, 2]);
    const mask = f32([8, 4], 1000);
    const y = f32([8, 5]);
    const s = leftOutSplit([{ x, mask }], [{ y }], learned)!;
    expect(s.label).toBe('6 of 8 calibration samples');
    expect(s.fitFeeds).toHaveLength(1);
    const head = s.fitFeeds[0]!;
    expect(head.x!.dims).toEqual([6, 3, 2]);
    expect(Array.from(head.x!.data as Float32Array)).toEqual(Array.from((x.data as Float32Array).subarray(0, 36)));
    expect(head.mask!.dims).toEqual([6, 4]);
    expect((head.mask!.data as Float32Array)[0]).toBe(1000);
    const fitted = s.fitted([{ y }]);
    const left = s.leftOut([{ y }]);
    expect(fitted).toHaveLength(6);
    expect(left).toHaveLength(2);
    expect(s.leftOutFeeds).toEqual([0]);
    // Sample 6 of y: elements 30..34.
    expect(left[0]!.y!.dims).toEqual([1, 5]);
    expect(Array.from(left[0]!.y!.data as Float32Array)).toEqual([30, 31, 32, 33, 34]);
    expect(Array.from(fitted[5]!.y!.data as Float32Array)).toEqual([25, 26, 27, 28, 29]);
    // The part fitted as its one feed gives it (--refine fits that feed): the first 6 samples in a batch.
    const batches = s.fitBatches([{ y }])!;
    expect(batches).toHaveLength(1);
    expect(batches[0]!.y!.dims).toEqual([6, 5]);
    expect(Array.from(batches[0]!.y!.data as Float32Array)).toEqual(Array.from({ length: 30 }, (_, i) => i));
  });

  it('one sample at least is left out of a small batch', () => {
    const s = leftOutSplit([{ x: f32([3, 2]) }], [{ y: f32([3, 5]) }], learned)!;
    expect(s.label).toBe('2 of 3 calibration samples');
    expect(s.leftOut([{ y: f32([3, 5]) }])).toHaveLength(1);
  });

  it('nothing to leave out: one sample, no batch axis on an output, inputs of other batches', () => {
    expect(leftOutSplit([{ x: f32([1, 2]) }], [{ y: f32([1, 5]) }], learned)).toBeUndefined();
    expect(leftOutSplit([], [], learned)).toBeUndefined();
    // The learned shapes do not show axis 0 of y as a batch (5 is its own size at batch 1).
    expect(leftOutSplit([{ x: f32([4, 2]) }], [{ y: f32([4, 5]) }], new Map([['y', [4, 5]]]))).toBeUndefined();
    expect(leftOutSplit([{ x: f32([4, 2]) }], [{ y: f32([4, 5]) }], undefined)).toBeUndefined();
    // An input without the batch (a fixed table of another size) keeps the feed whole.
    expect(leftOutSplit([{ x: f32([4, 2]), table: f32([3, 2]) }], [{ y: f32([4, 5]) }], learned)).toBeUndefined();
  });
});

describe('leanFactor', () => {
  it('how much more a fit does better on what it saw than on the rest, against the independent fit', () => {
    // The fit: 0.5 of the independent fit on its own part, 0.8 on the part left out: 1.6.
    expect(leanFactor({ fitted: 0.5, leftOut: 0.8 }, { fitted: 1, leftOut: 1 })).toBeCloseTo(1.6, 12);
    // Relative to the independent fit on each part: a harder left-out part alone changes nothing.
    expect(leanFactor({ fitted: 0.5, leftOut: 1.5 }, { fitted: 1, leftOut: 3 })).toBe(1);
  });

  it('never narrows the margin, and is 1 when an error is missing or zero', () => {
    expect(leanFactor({ fitted: 0.9, leftOut: 0.5 }, { fitted: 1, leftOut: 1 })).toBe(1);
    expect(leanFactor({ fitted: 0, leftOut: 0 }, { fitted: 1, leftOut: 1 })).toBe(1);
    expect(leanFactor({ fitted: 0, leftOut: 0.1 }, { fitted: 1, leftOut: 1 })).toBe(1);
    expect(leanFactor({ fitted: NaN, leftOut: 0.1 }, { fitted: 1, leftOut: 1 })).toBe(1);
    expect(leanFactor({ fitted: 0.5, leftOut: 0.8 }, { fitted: 1, leftOut: 0 })).toBe(1);
  });
});
