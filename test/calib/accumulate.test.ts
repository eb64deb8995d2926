import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { accumulateCols, accumulateConvChannels, accumulatePatches, accumulateRows } from '../../src/calib/accumulate.js';
import { patchDimOf, resolvePatchGeometry, type ConvPlacement } from '../../src/calib/patch-geometry.js';
import { samplePairs } from '../../src/calib/sample-blocks.js';
import { gramOf, maxRelDiff, naiveColsGram, naiveOutSpatial, naivePatches, naiveRowsGram, seededArray } from './helpers.js';

const symmetric = (g: Float64Array, d: number, off = 0): boolean => {
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) if (g[off + i * d + j] !== g[off + j * d + i]) return false;
  return true;
};

describe('accumulateRows / accumulateCols', () => {
  it('equal XᵀX for every size around the 4×2 blocks, chained over batches, with sums', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 11 }), fc.integer({ min: 1, max: 300 }), fc.integer(), (k, rows, seed) => {
      const x = seededArray(rows * k, seed);
      const g = new Float64Array(k * k);
      const sum = new Float64Array(k);
      const half = Math.floor(rows / 2);
      // Two calls (two batches) add up to one.
      expect(accumulateRows(g, x.subarray(0, half * k), half, k, sum)).toBe(half);
      accumulateRows(g, x.subarray(half * k), rows - half, k, sum);
      expect(maxRelDiff(g, naiveRowsGram(x, rows, k))).toBeLessThan(1e-12);
      expect(symmetric(g, k)).toBe(true);
      for (let c = 0; c < k; c++) {
        let s = 0;
        for (let r = 0; r < rows; r++) s += x[r * k + c]!;
        expect(sum[c]).toBeCloseTo(s, 9);
      }
    }), { numRuns: 60 });
  });

  it('columns: X·Xᵀ for X [k, cols] at an offset (long rows are chunked)', () => {
    for (const [k, cols] of [[1, 1], [5, 3], [8, 1300], [13, 517]] as const) {
      const x = seededArray(7 + 2 * k * cols, k + cols);
      const g = new Float64Array(k * k);
      accumulateCols(g, x, k, cols, undefined, 7);
      accumulateCols(g, x, k, cols, undefined, 7 + k * cols);
      const want = naiveColsGram(x, k, cols, 7);
      naiveColsGram(x, k, cols, 7 + k * cols, want);
      expect(maxRelDiff(g, want)).toBeLessThan(1e-12);
      expect(symmetric(g, k)).toBe(true);
    }
  });

  it('refuses buffers that are too short (a broken invariant)', () => {
    expect(() => accumulateRows(new Float64Array(3), new Float32Array(4), 1, 2)).toThrow(/needs 4/);
    expect(() => accumulateCols(new Float64Array(4), new Float32Array(3), 2, 2)).toThrow(/needs 4/);
  });
});

describe('accumulateConvChannels', () => {
  it('per-group channel covariance over batch and positions', () => {
    const [N, C, P, G] = [3, 6, 37, 2];
    const x = seededArray(N * C * P, 5);
    const g = new Float64Array(G * 3 * 3);
    const sum = new Float64Array(C);
    expect(accumulateConvChannels(g, x, N, C, P, G, sum)).toBe(N * P);
    for (let j = 0; j < G; j++) {
      const want = new Float64Array(9);
      for (let n = 0; n < N; n++) naiveColsGram(x, 3, P, (n * C + j * 3) * P, want);
      expect(maxRelDiff(g.subarray(j * 9, j * 9 + 9), want)).toBeLessThan(1e-12);
      expect(symmetric(g, 3, j * 9)).toBe(true);
    }
    let s0 = 0;
    for (let n = 0; n < N; n++) for (let p = 0; p < P; p++) s0 += x[n * C * P + p]!;
    expect(sum[0]).toBeCloseTo(s0, 9);
  });
});

describe('resolvePatchGeometry', () => {
  const place = (p: Partial<ConvPlacement>): ConvPlacement => ({
    kernel: [3, 3], strides: [1, 1], dilations: [1, 1], pads: [0, 0, 0, 0], autoPad: 'NOTSET', S: 4, group: 1, ...p,
  });

  it('explicit pads, VALID and SAME_* as ONNX Runtime computes them', () => {
    const g = resolvePatchGeometry(place({ strides: [2, 1], pads: [1, 0, 2, 1], dilations: [1, 2] }), [2, 4, 9, 8]);
    expect(g).toMatchObject({ batch: 2, channels: 4, padsBegin: [1, 0], outSpatial: [Math.floor((9 + 3 - 3) / 2) + 1, Math.floor((8 + 1 - 5) / 1) + 1] });
    expect(resolvePatchGeometry(place({ autoPad: 'VALID', pads: [5, 5, 5, 5] }), [1, 4, 7, 6])).toMatchObject({ padsBegin: [0, 0], outSpatial: [5, 4] });
    // SAME: out = ceil(in/stride); total pad 3 on a 4-wide kernel: upper puts 1 first, lower 2.
    const up = resolvePatchGeometry(place({ kernel: [4], strides: [1], dilations: [1], pads: [0, 0], autoPad: 'SAME_UPPER' }), [1, 4, 10]);
    const low = resolvePatchGeometry(place({ kernel: [4], strides: [1], dilations: [1], pads: [0, 0], autoPad: 'SAME_LOWER' }), [1, 4, 10]);
    expect(up).toMatchObject({ padsBegin: [1], outSpatial: [10] });
    expect(low).toMatchObject({ padsBegin: [2], outSpatial: [10] });
    const strided = resolvePatchGeometry(place({ strides: [2, 2], autoPad: 'SAME_UPPER' }), [1, 4, 7, 8]);
    expect(strided).toMatchObject({ outSpatial: [4, 4], padsBegin: [1, 0] });
  });

  it('says why an input does not fit', () => {
    expect(resolvePatchGeometry(place({}), [1, 3, 9, 9])).toMatch(/3 channels, the weight expects 4/);
    expect(resolvePatchGeometry(place({}), [1, 4, 9])).toMatch(/rank 4/);
    expect(resolvePatchGeometry(place({}), [1, 4, 2, 9])).toMatch(/does not fit/);
  });
});

describe('accumulatePatches', () => {
  const cases = [
    { name: '2-D stride/pads/dilation/group', dims: [2, 4, 9, 8], kernel: [3, 2], strides: [2, 1], dilations: [1, 2], pads: [1, 0, 2, 1], groups: 2 },
    { name: '1-D depthwise', dims: [1, 3, 11], kernel: [5], strides: [3], dilations: [1], pads: [2, 2], groups: 3 },
    { name: '3-D', dims: [1, 2, 4, 5, 3], kernel: [2, 3, 1], strides: [1, 2, 1], dilations: [2, 1, 1], pads: [0, 1, 0, 1, 1, 0], groups: 1 },
    { name: 'more positions than one block', dims: [2, 5, 23, 21], kernel: [3, 3], strides: [1, 1], dilations: [1, 1], pads: [1, 1, 1, 1], groups: 1 },
  ];
  for (const c of cases) {
    it(`equals a naive im2col: ${c.name}`, () => {
      const x = seededArray(c.dims.reduce((a, b) => a * b, 1), 11);
      const sp = c.kernel.length;
      const geo = resolvePatchGeometry({
        kernel: c.kernel, strides: c.strides, dilations: c.dilations, pads: c.pads, autoPad: 'NOTSET', S: c.dims[1]!, group: c.groups,
      }, c.dims);
      if (typeof geo === 'string') throw new Error(geo);
      expect(geo.outSpatial).toEqual(naiveOutSpatial(c));
      const D = patchDimOf(geo);
      expect(D).toBe((c.dims[1]! / c.groups) * c.kernel.reduce((a, b) => a * b, 1));
      const gram = new Float64Array(c.groups * D * D);
      const sum = new Float64Array(c.groups * D);
      const count = accumulatePatches(gram, x, geo, sum);
      expect(count).toBe(c.dims[0]! * naiveOutSpatial(c).reduce((a, b) => a * b, 1));
      for (let g = 0; g < c.groups; g++) {
        const patches = naivePatches(x, c, g);
        expect(patches.length).toBe(count);
        expect(maxRelDiff(gram.subarray(g * D * D, (g + 1) * D * D), gramOf(patches, D))).toBeLessThan(1e-12);
        expect(symmetric(gram, D, g * D * D)).toBe(true);
        for (let i = 0; i < D; i++) expect(sum[g * D + i]).toBeCloseTo(patches.reduce((a, p) => a + p[i]!, 0), 9);
      }
      expect(sp).toBe(c.dims.length - 2);
    });
  }
});

describe('samplePairs', () => {
  it('keeps every pair up to max; above it one increasing pair per equal stratum, the same on every call', () => {
    expect(samplePairs(100, 100)).toBeUndefined();
    expect(samplePairs(5, 64)).toBeUndefined();
    fc.assert(fc.property(fc.integer({ min: 2, max: 5000 }), fc.integer({ min: 1, max: 400 }), (total, max) => {
      fc.pre(total > max);
      const p = samplePairs(total, max)!;
      expect(p.length).toBe(max);
      for (let k = 0; k < max; k++) {
        expect(p[k]).toBeGreaterThanOrEqual(Math.floor((k * total) / max));
        expect(p[k]).toBeLessThan(Math.max(Math.floor(((k + 1) * total) / max), Math.floor((k * total) / max) + 1));
      }
      expect([...samplePairs(total, max)!]).toEqual([...p]);
    }));
  });

  it('does not alias with a period-2 map: both phases of every row are drawn', () => {
    // 64 rows of 64 positions, a quarter sampled: a regular stride of 4 would see one phase only.
    const p = samplePairs(64 * 64, 1024)!;
    const odd = [...p].filter((t) => t % 2 === 1).length;
    expect(odd).toBeGreaterThan(1024 * 0.35);
    expect(odd).toBeLessThan(1024 * 0.65);
  });
});
