import { afterAll, describe, expect, it } from 'vitest';
import { accumulateConvChannelsOn, accumulatePatchesOn } from '../../src/calib/accumulate-engine.js';
import { accumulateConvChannels, accumulatePatches } from '../../src/calib/accumulate.js';
import { patchDimOf, resolvePatchGeometry } from '../../src/calib/patch-geometry.js';
import { createOrtGemmEngine } from '../../src/linalg/ort-gemm.js';
import { maxRelDiff, seededArray } from './helpers.js';

// minFlops 0: every block product goes to ORT, even the small ones of these cases.
const engine = createOrtGemmEngine({ minFlops: 0 });
afterAll(() => engine.dispose());

describe('conv statistics with the products in ORT', () => {
  const geoCase = { dims: [2, 6, 19, 17], kernel: [3, 3], strides: [2, 1], dilations: [1, 2], pads: [1, 2, 1, 2], groups: 2 };

  for (const width of [256, 37]) {
    it(`patch Gram and sums match the exact JS accumulation (blocks of ${width} patches)`, async () => {
      const x = seededArray(geoCase.dims.reduce((a, b) => a * b, 1), 5);
      const geo = resolvePatchGeometry({
        kernel: geoCase.kernel, strides: geoCase.strides, dilations: geoCase.dilations, pads: geoCase.pads, autoPad: 'NOTSET',
        S: geoCase.dims[1]!, group: geoCase.groups,
      }, geoCase.dims);
      if (typeof geo === 'string') throw new Error(geo);
      const D = patchDimOf(geo);
      const exact = new Float64Array(geo.groups * D * D), exactSum = new Float64Array(geo.groups * D);
      const count = accumulatePatches(exact, x, geo, exactSum);
      const got = new Float64Array(geo.groups * D * D), gotSum = new Float64Array(geo.groups * D);
      // Twice, as two calibration batches: the running sums must add up.
      expect(await accumulatePatchesOn(engine, got, x, geo, gotSum, undefined, width)).toBe(count);
      await accumulatePatchesOn(engine, got, x, geo, gotSum, undefined, width);
      expect(maxRelDiff(got, exact.map((v) => 2 * v))).toBeLessThan(1e-5);
      expect(maxRelDiff(gotSum, exactSum.map((v) => 2 * v))).toBeLessThan(1e-12);
    });
  }

  it('input-channel Gram per group matches the exact JS accumulation, over several blocks', async () => {
    const [N, C, P, G] = [2, 12, 1000, 3];
    const x = seededArray(N * C * P, 9);
    const exact = new Float64Array(G * (C / G) ** 2), exactSum = new Float64Array(C);
    const count = accumulateConvChannels(exact, x, N, C, P, G, exactSum);
    const got = new Float64Array(exact.length), gotSum = new Float64Array(C);
    expect(await accumulateConvChannelsOn(engine, got, x, N, C, P, G, gotSum, 300)).toBe(count);
    expect(maxRelDiff(got, exact)).toBeLessThan(1e-5);
    expect(maxRelDiff(gotSum, exactSum)).toBeLessThan(1e-12);
  });
});
