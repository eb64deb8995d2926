/**
 * Paired statistics for anchored fitting (calib/anchored-stats.ts) against sums computed
 * here from the activations ORT returns for both models: Σ x̂·x̂ᵀ, Σ x̂·xᵀ, E[x̂] and the
 * im2col patch versions, with x the original model's input to a conv and x̂ the same input
 * in a copy whose first conv was changed.
 */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { collectAnchoredStats, type FeedSource } from '../../src/calib/anchored-stats.js';
import { samplePairs } from '../../src/calib/sample-blocks.js';
import { collectStats, sampledPatchesNote } from '../../src/calib/stats.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { captureModel } from '../../src/optimize/submodel.js';
import type { Feeds, HostTensor } from '../../src/verify/tensor.js';
import { gramOf, maxRelDiff, naivePatches, seededArray, type NaiveConv } from './helpers.js';

const S = 4;
const T = 5;
/** The input's dims, and those of c2's input (c1 keeps the spatial size). */
const X_DIMS = [2, 3, 6, 7];
const DIMS = [2, S, 6, 7];

function convNet(w1: Float32Array) {
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', X_DIMS);
  const h = b.node('Relu', [b.node('Conv', [x, b.init('w1', [S, 3, 3, 3], w1)], { pads: [1, 1, 1, 1] }, { name: 'c1' })], {}, { name: 'act' });
  b.output(b.node('Conv', [h, b.init('w2', [T, S, 3, 3], seededArray(T * S * 9, 5))], { pads: [1, 0, 1, 0], strides: [1, 2] }, { name: 'c2' }));
  return b.build();
}

const feeds: Feeds[] = [11, 12, 13].map((seed) => ({ x: { type: 'float32', dims: X_DIMS, data: seededArray(X_DIMS.reduce((a, b) => a * b, 1), seed) } as HostTensor }));
const source: FeedSource = { feeds: () => feeds, batches: feeds.length };
const w1 = seededArray(S * 9 * 3, 3);
const original = new Model(convNet(w1));
const current = new Model(convNet(w1.map((v, i) => v + 0.3 * Math.sin(i)))); // the "compressed" first conv

/** The conv c2 reads: its input tensor per feed, from ORT. */
async function inputsOf(proto: ReturnType<typeof convNet>): Promise<Float32Array[]> {
  const s = await ort.InferenceSession.create(encodeModel(captureModel(proto, ['act_out0'])), { graphOptimizationLevel: 'disabled' });
  try {
    const out: Float32Array[] = [];
    for (const f of feeds) out.push((await s.run({ x: new ort.Tensor('float32', f.x!.data as Float32Array, f.x!.dims) }, ['act_out0'])).act_out0!.data as Float32Array);
    return out;
  } finally {
    await s.release();
  }
}

/** Σ u·vᵀ over paired vectors. */
function crossOf(u: readonly (readonly number[])[], v: readonly (readonly number[])[], d: number): Float64Array {
  const g = new Float64Array(d * d);
  u.forEach((a, r) => { for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) g[i * d + j] += a[i]! * v[r]![j]!; });
  return g;
}
const meanOf = (vs: readonly (readonly number[])[], d: number): number[] => Array.from({ length: d }, (_, i) => vs.reduce((a, v) => a + v[i]!, 0) / vs.length);
/** Channel vectors (one per batch item and position) of an NCHW tensor. */
function channelVectors(x: Float32Array): number[][] {
  const [N, C, H, W] = DIMS as [number, number, number, number];
  const out: number[][] = [];
  for (let n = 0; n < N; n++) for (let p = 0; p < H * W; p++) out.push(Array.from({ length: C }, (_, c) => x[(n * C + c) * H * W + p]!));
  return out;
}

describe('collectAnchoredStats', () => {
  const conv: NaiveConv = { dims: DIMS, kernel: [3, 3], strides: [1, 2], dilations: [1, 1], pads: [1, 0, 1, 0], groups: 1 };
  const D = S * 9;

  it('pairs the original input x with x̂ of the partly compressed model: sums, cross sums and means equal direct computations', async () => {
    const c2 = findLayers(current).filter((l) => l.name === 'c2');
    const got = await collectAnchoredStats(original, current, c2, source);
    if (!got.ok) throw got.error;
    expect(got.value.unavailable).toEqual(new Map());
    const st = got.value.stats.get('c2')!;
    const an = st.anchor!;
    const [xs, xh] = [await inputsOf(original.proto), await inputsOf(current.proto)];
    const vx = xs.flatMap(channelVectors);
    const vh = xh.flatMap(channelVectors);
    const px = xs.flatMap((x) => naivePatches(x, conv, 0));
    const ph = xh.flatMap((x) => naivePatches(x, conv, 0));
    expect(st.count).toBe(vx.length);
    expect(st.patchCount).toBe(px.length);
    // The original's sums are collectStats' own.
    const plain = await collectStats(original, findLayers(original).filter((l) => l.name === 'c2'), { ...source, samples: 3 } as never);
    if (!plain.ok) throw plain.error;
    const ps = plain.value.stats.get('c2')!;
    expect(maxRelDiff(st.gram, ps.gram)).toBeLessThan(1e-6);
    expect(maxRelDiff(st.patchGram!, ps.patchGram!)).toBeLessThan(1e-6);
    expect(maxRelDiff(st.gram, gramOf(vx, S))).toBeLessThan(1e-6);
    // x̂'s sums and the cross term (rows x̂, columns x).
    expect(maxRelDiff(an.gram, gramOf(vh, S))).toBeLessThan(1e-6);
    expect(maxRelDiff(an.cross, crossOf(vh, vx, S))).toBeLessThan(1e-6);
    expect(maxRelDiff(an.mean, meanOf(vh, S))).toBeLessThan(1e-6);
    expect(maxRelDiff(an.patchGram!, gramOf(ph, D))).toBeLessThan(1e-6);
    expect(maxRelDiff(an.patchCross!, crossOf(ph, px, D))).toBeLessThan(1e-6);
    expect(maxRelDiff(an.patchMean!, meanOf(ph, D))).toBeLessThan(1e-6);
    expect(maxRelDiff(st.patchMean!, meanOf(px, D))).toBeLessThan(1e-6);
    // x̂ really differs from x here (else the test proves nothing).
    expect(maxRelDiff(an.cross, st.gram)).toBeGreaterThan(1e-2);

    // A budget of one byte per run gives the same sums.
    const tiny = await collectAnchoredStats(original, current, c2, source, { maxBytesPerRun: 1 });
    if (!tiny.ok) throw tiny.error;
    const t2 = tiny.value.stats.get('c2')!;
    expect(maxRelDiff(t2.anchor!.patchCross!, an.patchCross!)).toBeLessThan(1e-9);
  });

  it('maxPatches: both models are read at the same stratified sample of patches, and collectStats reads the same one', async () => {
    const max = 7;
    const c2 = findLayers(current).filter((l) => l.name === 'c2');
    const got = await collectAnchoredStats(original, current, c2, source, { maxPatches: max });
    if (!got.ok) throw got.error;
    const st = got.value.stats.get('c2')!;
    const an = st.anchor!;
    const [xs, xh] = [await inputsOf(original.proto), await inputsOf(current.proto)];
    const perFeed = naivePatches(xs[0]!, conv, 0).length;
    const pairs = [...samplePairs(perFeed, max)!];
    const pick = (ps: number[][]): number[][] => pairs.map((i) => ps[i]!);
    const px = xs.flatMap((x) => pick(naivePatches(x, conv, 0)));
    const ph = xh.flatMap((x) => pick(naivePatches(x, conv, 0)));
    expect(st.patchCount).toBe(feeds.length * max);
    expect(maxRelDiff(st.patchGram!, gramOf(px, D))).toBeLessThan(1e-6);
    expect(maxRelDiff(an.patchGram!, gramOf(ph, D))).toBeLessThan(1e-6);
    expect(maxRelDiff(an.patchCross!, crossOf(ph, px, D))).toBeLessThan(1e-6);
    expect(maxRelDiff(an.patchMean!, meanOf(ph, D))).toBeLessThan(1e-6);
    // The channel statistics still read every position.
    expect(st.count).toBe(xs.flatMap(channelVectors).length);
    const plain = await collectStats(original, findLayers(original).filter((l) => l.name === 'c2'), { ...source, samples: 3 } as never, { maxPatches: max });
    if (!plain.ok) throw plain.error;
    expect(plain.value.stats.get('c2')!.patchCount).toBe(feeds.length * max);
    expect(maxRelDiff(plain.value.stats.get('c2')!.patchGram!, st.patchGram!)).toBeLessThan(1e-6);
    // The run says so: 7 of 36 patches per feed.
    expect(sampledPatchesNote(plain.value.stats)).toEqual([expect.stringMatching(/^patch statistics of 1 layer\(s\) from a stratified sample of their im2col patches \(19% of them;/)]);
    expect(sampledPatchesNote(got.value.stats)).toHaveLength(1);
    const all = await collectStats(original, findLayers(original).filter((l) => l.name === 'c2'), { ...source, samples: 3 } as never);
    if (!all.ok) throw all.error;
    expect(sampledPatchesNote(all.value.stats)).toEqual([]);
  });

  it("unchanged: x̂ = x from the original's run alone, the anchor sharing the original's sums", async () => {
    const same = new Model(decodeModel(encodeModel(original.proto)));
    const c2 = findLayers(same).filter((l) => l.name === 'c2');
    const got = await collectAnchoredStats(original, same, c2, source, { unchanged: 'all' });
    if (!got.ok) throw got.error;
    const st = got.value.stats.get('c2')!;
    expect(st.anchor!.gram).toBe(st.gram);
    expect(st.anchor!.cross).toBe(st.gram);
    expect(st.anchor!.patchCross).toBe(st.patchGram);
    // One model run per feed (and the shape probe), not two.
    expect(got.value.runs).toBe(1 + feeds.length);
  });

  it("original: the run's own Σ x·xᵀ is reused (same arrays), the paired sums equal those computed without it", async () => {
    const c2 = findLayers(current).filter((l) => l.name === 'c2');
    const plain = await collectStats(original, findLayers(original).filter((l) => l.name === 'c2'), { ...source, samples: 3 } as never);
    if (!plain.ok) throw plain.error;
    const o = plain.value.stats.get('c2')!;
    const fresh = await collectAnchoredStats(original, current, c2, source);
    const reused = await collectAnchoredStats(original, current, c2, source, { original: plain.value.stats });
    if (!fresh.ok || !reused.ok) throw new Error('collectAnchoredStats failed');
    const [f, r] = [fresh.value.stats.get('c2')!, reused.value.stats.get('c2')!];
    expect(r.gram).toBe(o.gram);
    expect(r.patchGram).toBe(o.patchGram);
    expect(maxRelDiff(r.gram, f.gram)).toBeLessThan(1e-6);
    expect(maxRelDiff(r.patchGram!, f.patchGram!)).toBeLessThan(1e-6);
    for (const k of ['gram', 'cross', 'patchGram', 'patchCross'] as const) expect(maxRelDiff(r.anchor![k]!, f.anchor![k]!)).toBeLessThan(1e-12);
    expect(maxRelDiff(r.anchor!.mean, f.anchor!.mean)).toBeLessThan(1e-12);
  });

  it('original: statistics over other samples are not mixed in; the layer is unavailable with the reason', async () => {
    const c2 = findLayers(current).filter((l) => l.name === 'c2');
    const two: FeedSource = { feeds: () => feeds.slice(0, 2), batches: 2 };
    const plain = await collectStats(original, findLayers(original).filter((l) => l.name === 'c2'), { ...two, samples: 2 } as never);
    if (!plain.ok) throw plain.error;
    const got = await collectAnchoredStats(original, current, c2, source, { original: plain.value.stats });
    if (!got.ok) throw got.error;
    expect(got.value.stats.has('c2')).toBe(false);
    expect(got.value.unavailable.get('c2')).toMatch(/its statistics counted \d+ input vectors, the paired ones \d+/);
  });
});
