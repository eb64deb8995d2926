import * as ort from 'onnxruntime-node';
import { describe, expect, it, vi } from 'vitest';
import { convTucker2 } from '../../passes/conv-tucker2.js';
import { Model } from '../../src/graph/graph.js';
import { shapesFor } from '../../src/graph/layer-shapes.js';
import { findLayers } from '../../src/graph/layers.js';
import { encodeModel } from '../../src/onnx/codec.js';
import { loadModel } from '../../src/onnx/file.js';
import { nodesModel, singleLayerModel, timeChains, timeRewrite } from '../../src/optimize/layer-latency.js';
import { decodeModel } from '../../src/onnx/codec.js';
import { createSession } from '../../src/verify/session.js';
import { isSkip } from '../../src/rewrite/pass.js';
import { ModelBuilder } from '../../models/builder.js';
import { DataType } from '../../src/onnx/schema.js';
import { createRng } from '../../src/util/rng.js';
import { REAL } from '../helpers/models.js';
import { randomFeed, relL2, runModel } from '../helpers/ort.js';
import type { Feeds } from '../../src/verify/tensor.js';

// The sessions timeChains opens, to see which models it times (the real ORT sessions still run).
vi.mock('../../src/verify/session.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/verify/session.js')>();
  return { ...m, createSession: vi.fn(m.createSession) };
});

describe('per-layer latency models', () => {
  // det keeps its weights in Constant nodes: the layer's weight must be found through
  // them and inlined.
  it('the chain a rewrite wrote into det, cut out alone, computes the layer (exact ranks) and is timed against it', async () => {
    const loaded = loadModel(REAL.det);
    const model = new Model(loaded.model);
    const { shapes } = await shapesFor(loaded, model, { x: [1, 3, 64, 64] }, {});
    const layer = findLayers(model, shapes).find((l) => l.op === 'Conv' && l.weightShape[2] === 3 && l.weightShape[1] > 1 && l.weightShape[1] < 128);
    expect(layer, 'a dense 3x3 conv').toBeDefined();
    const [T, S] = layer!.weightShape;
    const one = singleLayerModel(model, layer!, shapes);
    if (typeof one === 'string') throw new Error(one);

    const cx = { model, rng: createRng(1), shared: new Map() };
    const m = convTucker2.match(layer!, cx);
    if (isSkip(m)) throw new Error(m.skip);
    const before = new Set(layer!.graph.proto.node);
    const applied = convTucker2.apply(m, [S, T], cx);
    if (isSkip(applied)) throw new Error(applied.skip);
    const chain = layer!.graph.proto.node.filter((n) => !before.has(n));
    expect(chain.map((n) => n.opType)).toEqual(['Conv', 'Conv', 'Conv']);

    const cut = nodesModel(model, layer!.graph, chain, layer!.node.output[0], 1, shapes);
    if (typeof cut === 'string') throw new Error(cut);
    // Only the activation is an input; every weight and the bias travel inline.
    expect(cut.graph!.input.map((v) => v.name)).toEqual([layer!.node.input[0]]);
    expect(cut.graph!.initializer.map((t) => t.name)).toEqual(chain.flatMap((n) => n.input.slice(1)).filter((v) => v));
    const feeds: Record<string, ort.Tensor> = { [layer!.node.input[0]]: randomFeed(shapes.get(layer!.node.input[0])!.slice(), 3) };
    const ya = await runModel(encodeModel(one), feeds);
    const yb = await runModel(encodeModel(cut), feeds);
    expect(relL2(ya[layer!.node.output[0]]!, yb[layer!.node.output[0]]!)).toBeLessThan(1e-4);

    // The timing input is drawn once per input shape and reused from `inputs`.
    const inputs = new Map<string, Feeds>();
    const t = await timeRewrite(model, layer!, chain, shapes, { threads: 1, inputs });
    if (!t.ok) throw t.error;
    expect(t.value.originalMs).toBeGreaterThan(0);
    expect(t.value.candidateMs).toBeGreaterThan(0);
    expect(inputs.size).toBe(1);
    const drawn = [...inputs.values()][0]!;
    expect(Object.keys(drawn)).toEqual([layer!.node.input[0]]);
    const again = await timeRewrite(model, layer!, chain, shapes, { threads: 1, inputs });
    expect(again.ok).toBe(true);
    expect(inputs.size).toBe(1);
    expect([...inputs.values()][0]).toBe(drawn);
  });

  it('refuses nodes that do not compute the output, and activations of unknown shape', async () => {
    const loaded = loadModel(REAL.cls);
    const model = new Model(loaded.model);
    const layer = findLayers(model)[1]!;
    expect(nodesModel(model, layer.graph, [layer.node], 'not-there', 1, new Map([[layer.node.input[0], [1, 8, 24, 96]]]))).toMatch(/not computed/);
    expect(nodesModel(model, layer.graph, [layer.node], layer.node.output[0], 1, new Map())).toMatch(/shape of .* unknown/);
  });
});

describe('per-layer latency models of layers with integer inputs', () => {
  it('an embedding Gather cut out alone keeps its int64 indices (a float declaration would make ORT refuse the model)', async () => {
    const b = new ModelBuilder({ opset: 13 });
    const ids = b.input('ids', [12], DataType.INT64);
    const rng = createRng(2);
    b.output(b.node('Gather', [b.init('E', [500, 64], Array.from({ length: 500 * 64 }, () => rng.normal())), ids], {}, { name: 'embed' }));
    const model = new Model(b.build());
    const shapes = new Map([['ids', [12]], ['embed_out0', [12, 64]]]);
    const layer = findLayers(model, shapes).find((l) => l.op === 'Gather')!;
    const one = singleLayerModel(model, layer, shapes);
    if (typeof one === 'string') throw new Error(one);
    expect(one.graph!.input.find((i) => i.name === 'ids')!.type!.tensorType!.elemType).toBe(DataType.INT64);
    const t = await timeRewrite(model, layer, [layer.node], shapes, { threads: 1 });
    expect(t.ok, t.ok ? '' : t.error.message).toBe(true);
  });
});

describe('timed layer models keep their output inside ORT', () => {
  // Returned, a 64-channel output at 512² costs a fresh JS buffer each run, more than the conv (verify/kept-outputs.ts).
  it('timeChains times the layer and its chains with their outputs kept inside', async () => {
    const loaded = loadModel(REAL.cls);
    const model = new Model(loaded.model);
    const { shapes } = await shapesFor(loaded, model, { x: [1, 3, 48, 192] }, {});
    const layer = findLayers(model, shapes).find((l) => l.op === 'Conv' && l.weightShape[2] === 3 && l.weightShape[1] > 1)!;
    const one = singleLayerModel(model, layer, shapes);
    if (typeof one === 'string') throw new Error(one);
    const created = vi.mocked(createSession);
    created.mockClear();
    const t = await timeChains(model, layer, [one, one], shapes, { threads: 1 });
    if (!t.ok) throw t.error;
    expect(created).toHaveBeenCalledTimes(3);
    for (const [src] of created.mock.calls) {
      const g = decodeModel((src as { bytes: Uint8Array }).bytes).graph!;
      expect(g.output).toHaveLength(1);
      expect(g.node.at(-1)!.opType).toBe('Slice');
      expect(g.node.at(-2)!.input).toEqual([layer.node.output[0]]);
    }
  });
});
