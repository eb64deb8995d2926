/**
 * The latency screen of the default run (src/optimize/latency-screen.ts): every rewrite
 * the params-and-MACs rule would make is timed against its layer, and only those measured
 * faster are kept. The verdicts here come from an injected timer (no test depends on this
 * machine's speed); one test runs the real ORT timing end to end without asserting which
 * way it goes.
 */
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import type { ShapeMap } from '../../src/graph/shapes.js';
import { ok, err } from '../../src/errors.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { optimizeAnchored } from '../../src/optimize/anchored.js';
import { optimizeModel, type OptimizeOptions } from '../../src/optimize/driver.js';
import { screenByLatency, screenedPlan, SCREEN_MARGIN, type LayerTimer } from '../../src/optimize/latency-screen.js';
import { createRng } from '../../src/util/rng.js';
import type { Feeds, HostTensor } from '../../src/verify/tensor.js';
import { compareModels, randomFeed } from '../helpers/ort.js';
import { tuckerKernel } from '../helpers/kernels.js';

const C = 32;
const HW = 12;


/** x → conv a → Relu → conv b → conv c: 3x3 convs of Tucker ranks 6, 4, 4 (b and c alike). */
function threeConvs(): { bytes: Uint8Array; shapes: ShapeMap } {
  const m = new ModelBuilder({ opset: 13 });
  const x = m.input('x', [1, C, HW, HW]);
  const a = m.node('Conv', [x, m.init('wa', [C, C, 3, 3], tuckerKernel(C, 6, 1))], { pads: [1, 1, 1, 1] }, { name: 'a' });
  const r = m.node('Relu', [a], {}, { name: 'relu' });
  const b = m.node('Conv', [r, m.init('wb', [C, C, 3, 3], tuckerKernel(C, 4, 2))], { pads: [1, 1, 1, 1] }, { name: 'b' });
  const c = m.node('Conv', [b, m.init('wc', [C, C, 3, 3], tuckerKernel(C, 4, 3))], { pads: [1, 1, 1, 1] }, { name: 'c' });
  m.output(c);
  const dims = [1, C, HW, HW];
  return { bytes: encodeModel(m.build()), shapes: new Map([[x, dims], [a, dims], [r, dims], [b, dims], [c, dims]]) };
}

const opts: OptimizeOptions = { method: 'tucker2', policy: { kind: 'energy', energy: 0.999 }, minParams: 0, seed: 0 };

/** Layer a's chain runs 1.30x its time, b's and c's 0.5x; counts calls. */
function fakeTimer(slower: ReadonlySet<string>, calls: string[]): LayerTimer {
  return async (_model, layer, chain) => {
    calls.push(layer.name);
    // The chain is what the pass wrote: a Tucker-2 chain of three convs computing the layer's output.
    expect(chain.map((n) => n.opType)).toEqual(['Conv', 'Conv', 'Conv']);
    expect(chain.at(-1)!.output[0]).toBe(layer.node.output[0]);
    return ok(slower.has(layer.name) ? { originalMs: 1, candidateMs: 1.3 } : { originalMs: 1, candidateMs: 0.5 });
  };
}

describe('latency screen', () => {
  it('drops a chain measured slower, keeps one measured faster, leaves the model as it was, and OUT runs in ORT', async () => {
    const { bytes, shapes } = threeConvs();
    const model = new Model(decodeModel(bytes));
    const decided = optimizeModel(model, shapes, { ...opts, decideOnly: true });
    expect(decided.filter((r) => !r.skipped).map((r) => r.name)).toEqual(['a', 'b', 'c']);
    const calls: string[] = [];
    const s = await screenByLatency(model, shapes, decided, { threads: 1, seed: 0, time: fakeTimer(new Set(['a']), calls) });
    // b and c have the same geometry and ranks: their chain is timed once.
    expect(calls).toEqual(['a', 'b']);
    expect(s.timed).toBe(2);
    expect(s.dropped).toBe(1);
    const a = s.records.find((r) => r.name === 'a')!;
    expect(a.skipped).toBe(true);
    expect(a.reason).toBe(`measured slower in ORT at 1x${C}x${HW}x${HW}: 1.00 ms → 1.30 ms`);
    expect(a.paramsAfter).toBe(a.paramsBefore);
    expect(s.records.filter((r) => !r.skipped).map((r) => r.name)).toEqual(['b', 'c']);
    expect(s.notes.join('\n')).toMatch(/latency screen: 1 of 3 rewrite\(s\) dropped .*: a; --save params keeps them/);
    // The trials were rolled back: the model is byte-identical to what it was.
    expect(encodeModel(model.proto)).toEqual(bytes);

    // The screened decisions applied as a plan: a stays one conv, b and c become chains.
    const records = optimizeModel(model, shapes, opts, { version: 1, model: '', policy: 'screen', layers: s.records });
    expect(records.find((r) => r.name === 'a')!.reason).toMatch(/measured slower in ORT/);
    const out = encodeModel(model.proto);
    const ops = model.root.proto.node.map((n) => n.name);
    expect(ops).toContain('a');
    expect(ops).not.toContain('b');
    expect(model.root.proto.node.filter((n) => n.opType === 'Conv')).toHaveLength(1 + 3 + 3);
    expect(await compareModels(bytes, out, { x: randomFeed([1, C, HW, HW], 5) })).toBeLessThan(1e-3);
  });

  it('keeps a gain within the noise margin out, says why, and keeps rewrites it cannot time', async () => {
    const { bytes, shapes } = threeConvs();
    const model = new Model(decodeModel(bytes));
    const decided = optimizeModel(model, shapes, { ...opts, decideOnly: true });
    const within = 1 - SCREEN_MARGIN / 2;
    const time: LayerTimer = async (_m, layer) => (layer.name === 'a' ? ok({ originalMs: 2, candidateMs: 2 * within })
      : layer.name === 'b' ? err('unsupported', 'shape of x unknown') : ok({ originalMs: 2, candidateMs: 1 }));
    const s = await screenByLatency(model, shapes, decided, { threads: 2, seed: 0, time });
    expect(s.records.find((r) => r.name === 'a')!.reason).toMatch(/^not measurably faster in ORT at .*: 2\.00 ms → 1\.95 ms \(a rewrite must save 5%\)$/);
    // b could not be timed (and c shares its geometry): both kept by the MACs rule, and noted.
    expect(s.records.filter((r) => !r.skipped).map((r) => r.name)).toEqual(['b', 'c']);
    expect(s.notes.join('\n')).toMatch(/2 rewrite\(s\) could not be timed and are kept .*b \(shape of x unknown\); c \(shape of x unknown\)/);
    expect(s.notes.join('\n')).toMatch(/\(2 thread\(s\)\)/);
  });

  it('works with anchored fitting: the screened plan is applied in waves, the dropped layer left alone', async () => {
    const { bytes, shapes } = threeConvs();
    const model = new Model(decodeModel(bytes));
    const calls: string[] = [];
    const { plan, dropped, notes } = await screenedPlan(model, shapes, opts, {}, { threads: 1, time: fakeTimer(new Set(['a']), calls) });
    expect(dropped).toBe(1);
    expect(notes[0]).toMatch(/dropped .*: a;/);
    const rng = createRng(9);
    const feeds: Feeds[] = Array.from({ length: 4 }, () => ({ x: { type: 'float32', dims: [1, C, HW, HW], data: Float32Array.from({ length: C * HW * HW }, () => rng.normal()) } as HostTensor }));
    const r = await optimizeAnchored(model, shapes, opts, { feeds }, plan);
    expect(r.records.filter((x) => !x.skipped).map((x) => x.name)).toEqual(['b', 'c']);
    expect(r.records.find((x) => x.name === 'a')!.reason).toMatch(/measured slower in ORT/);
    expect(r.notes.join('\n')).toMatch(/anchored fitting: 2 layer\(s\)/);
    expect(model.root.proto.node.map((n) => n.name)).toContain('a');
    expect(await compareModels(bytes, encodeModel(model.proto), { x: randomFeed([1, C, HW, HW], 6) })).toBeLessThan(1e-3);
  });

  it('times real chains in ORT end to end (whichever way the timing goes)', async () => {
    const { bytes, shapes } = threeConvs();
    const model = new Model(decodeModel(bytes));
    const { plan, notes } = await screenedPlan(model, shapes, opts, {}, { threads: 1 });
    expect(encodeModel(model.proto)).toEqual(bytes);
    const rewritten = plan.layers.filter((l) => !l.skipped);
    const dropped = plan.layers.filter((l) => l.skipped);
    expect(rewritten.length + dropped.length).toBe(3);
    for (const l of dropped) expect(l.reason).toMatch(/^(measured slower|not measurably faster) in ORT at 1x32x12x12: [0-9.]+ ms → [0-9.]+ ms/);
    expect(notes[0]).toMatch(/^latency screen: /);
    optimizeModel(model, shapes, opts, plan);
    expect(await compareModels(bytes, encodeModel(model.proto), { x: randomFeed([1, C, HW, HW], 7) })).toBeLessThan(1e-3);
  });
});
