/**
 * A layer whose weight and bias are stored float16 behind Casts (fp16 exporters, `convert
 * --compute float32`) is cut out for timing with its Casts and constants: before, the
 * bias's Cast output counted as an activation of unknown shape, the timing failed, and a
 * latency budget silently kept nothing (ISNet after convert: 0 layers rewritten).
 */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Model } from '../../src/graph/graph.js';
import { castFedConstant, findLayers } from '../../src/graph/layers.js';
import { encodeModel } from '../../src/onnx/codec.js';
import type { ModelProto } from '../../src/onnx/schema.js';
import { singleLayerModel } from '../../src/optimize/layer-latency.js';
import { computeInFloat32 } from '../../src/rewrite/compute-float32.js';
import { fp16ConvModel } from '../helpers/fp16-model.js';
import { randomFeed, relL2 } from '../helpers/ort.js';

async function runOne(m: ModelProto, x: ort.Tensor): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(encodeModel(m), { intraOpNumThreads: 1 });
  try { return (await s.run({ [s.inputNames[0]!]: x }))[s.outputNames[0]!]!.data as Float32Array; } finally { await s.release(); }
}

describe('timing a layer whose bias is behind a Cast', () => {
  it('cuts the layer out with its Casts and constants, computing what the float32 layer computes', async () => {
    const converted = fp16ConvModel(true);
    computeInFloat32(converted);
    const model = new Model(converted);
    const layer = findLayers(model).find((l) => l.node.name === 'conv')!;
    expect(layer.cast).toBeDefined();
    expect(castFedConstant(layer.graph, layer.node.input[2]!)).toBeDefined();
    const shapes = new Map([[layer.node.input[0]!, [1, 4, 8, 8]]]);
    const one = singleLayerModel(model, layer, shapes);
    expect(typeof one).not.toBe('string');
    const m = one as ModelProto;
    expect(m.graph!.input.map((v) => v.name)).toEqual([layer.node.input[0]]);
    expect(m.graph!.node.map((n) => n.opType)).toEqual(['Cast', 'Cast', 'Conv']);
    const ref = new Model(fp16ConvModel(false));
    const refLayer = findLayers(ref).find((l) => l.node.name === 'conv')!;
    const refOne = singleLayerModel(ref, refLayer, new Map([[refLayer.node.input[0]!, [1, 4, 8, 8]]])) as ModelProto;
    const x = randomFeed([1, 4, 8, 8], 4);
    expect(relL2(await runOne(refOne, x), await runOne(m, x))).toBeLessThan(1e-6);
  });
});
