/**
 * The run's fit cache (src/rewrite/fit-cache.ts): a budget's allocations refit, on a freshly
 * loaded model, the ranks its sensitivity trials fitted. With the same statistics the
 * data-aware Tucker-2 (and spatial SVD, a budget's default rival) is taken from the cache:
 * the same bytes, no second factorization.
 */
import { describe, expect, it, vi } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import type { CalibSet } from '../../src/calib/load.js';
import { collectStats } from '../../src/calib/stats.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { tucker2Conv } from '../../src/linalg/tucker2-conv.js';
import { spatialSvd } from '../../src/linalg/spatial-svd.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { optimizeModel, type OptimizeOptions } from '../../src/optimize/driver.js';
import { cachedFit, createFitCache } from '../../src/rewrite/fit-cache.js';
import { createRng } from '../../src/util/rng.js';
import type { Feeds, HostTensor } from '../../src/verify/tensor.js';

vi.mock('../../src/linalg/tucker2-conv.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/linalg/tucker2-conv.js')>();
  return { ...m, tucker2Conv: vi.fn(m.tucker2Conv) };
});
vi.mock('../../src/linalg/spatial-svd.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/linalg/spatial-svd.js')>();
  return { ...m, spatialSvd: vi.fn(m.spatialSvd) };
});

describe('cachedFit', () => {
  it('keeps a fit per statistics object and key; without statistics it always fits', () => {
    const cache = createFitCache();
    const stats = {};
    let calls = 0;
    const fit = () => ++calls;
    expect(cachedFit(cache, stats, 'a', fit)).toBe(1);
    expect(cachedFit(cache, stats, 'a', fit)).toBe(1);
    expect(cachedFit(cache, stats, 'b', fit)).toBe(2);
    // Statistics measured anew are another object: never an older fit.
    expect(cachedFit(cache, {}, 'a', fit)).toBe(3);
    expect(cachedFit(cache, undefined, 'a', fit)).toBe(4);
    expect(cachedFit(undefined, stats, 'a', fit)).toBe(5);
  });
});

describe('a data-aware Tucker-2 fitted again in the same run', () => {
  const rng = createRng(5);
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [1, 8, 10, 10]);
  b.output(b.node('Conv', [x, b.init('w', [12, 8, 3, 3], Array.from({ length: 12 * 8 * 9 }, () => rng.normal()))], { pads: [1, 1, 1, 1] }, { name: 'conv' }));
  const bytes = encodeModel(b.build());
  const feeds: Feeds[] = Array.from({ length: 3 }, () => ({ x: { type: 'float32', dims: [1, 8, 10, 10], data: Float32Array.from({ length: 800 }, () => rng.normal()) } as HostTensor }));
  const calib: CalibSet = {
    source: { kind: 'random', seed: 0 }, samples: 3, batches: 3, batchSize: 1, calibrated: [], fixed: [], random: [], notes: [],
    *feeds() { yield* feeds; },
  };
  const opts: OptimizeOptions = { method: 'tucker2', policy: { kind: 'fixed', rank: 4 }, minParams: 0, seed: 0 };
  /** The model rewritten by `pass` (under `method`) on a fresh load, as bytes. */
  const onceWith = (method: OptimizeOptions['method'], pass: string) => (run: Parameters<typeof optimizeModel>[4]): Uint8Array => {
    const m = new Model(decodeModel(bytes));
    const [rec] = optimizeModel(m, undefined, { ...opts, method }, undefined, run);
    expect(rec!.pass).toBe(pass);
    expect(rec!.skipped).toBeFalsy();
    return encodeModel(m.proto);
  };

  /** Statistics of the calibration feeds. */
  const statsOf = async () => {
    const m0 = new Model(decodeModel(bytes));
    const st = await collectStats(m0, findLayers(m0), calib);
    if (!st.ok) throw st.error;
    return st.value.stats;
  };
  /** Fits `method` twice on the same statistics and cache: `fitted` runs once, both models are the same bytes. */
  const keptOnce = async (fitted: { mockClear(): void }, method: OptimizeOptions['method'], pass: string) => {
    const stats = await statsOf();
    const fits = createFitCache();
    fitted.mockClear();
    const once = onceWith(method, pass);
    const first = once({ stats, fits });
    expect(fitted).toHaveBeenCalledTimes(1);
    const second = once({ stats, fits });
    expect(fitted).toHaveBeenCalledTimes(1);
    expect(Buffer.from(second).equals(Buffer.from(first))).toBe(true);
    return { once, stats, fits, first };
  };

  it('comes from the cache on a fresh load of the model: same bytes, one factorization', async () => {
    const fitted = vi.mocked(tucker2Conv);
    const { once, stats, fits, first } = await keptOnce(fitted, 'tucker2', 'conv-tucker2');
    // Without the cache: fitted again, the same bytes (the data-aware fit draws no random numbers).
    const plain = once({ stats });
    expect(fitted).toHaveBeenCalledTimes(2);
    expect(Buffer.from(plain).equals(Buffer.from(first))).toBe(true);
    // Weight-only fits are never kept.
    once({ fits });
    once({ fits });
    expect(fitted).toHaveBeenCalledTimes(4);
  });

  it('spatial SVD too (deterministic, so kept on its statistics): same bytes, one factorization', async () => {
    const fitted = vi.mocked(spatialSvd);
    const { once, fits } = await keptOnce(fitted, 'spatial-svd', 'conv-spatial-svd');
    // Other statistics (an anchored wave's, a later stage's): fitted anew.
    once({ stats: await statsOf(), fits });
    expect(fitted).toHaveBeenCalledTimes(2);
  });
});
