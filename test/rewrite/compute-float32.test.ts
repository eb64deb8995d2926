/**
 * convert --compute float32's graph change (rewrite/compute-float32.ts) on a float16 model
 * with every construct it handles, run in ONNX Runtime: the converted model computes what
 * the same graph built in float32 (from the float16-rounded weights) computes, keeps its
 * interface and its float16 storage, and models it cannot follow are refused untouched.
 */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { LrError } from '../../src/errors.js';
import { computeInFloat32, computesInFloat16 } from '../../src/rewrite/compute-float32.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { float16BitsToFloat32 } from '../../src/onnx/half.js';
import { DataType, type ModelProto } from '../../src/onnx/schema.js';
import { ModelBuilder } from '../../models/builder.js';
import { fp16ConvModel } from '../helpers/fp16-model.js';
import { randomFeed, relL2 } from '../helpers/ort.js';

/** The outputs [y, z] as float32. */
async function run(m: ModelProto, x: ort.Tensor): Promise<Float32Array[]> {
  const s = await ort.InferenceSession.create(encodeModel(m), { intraOpNumThreads: 1 });
  try {
    const out = await s.run({ x });
    return s.outputNames.map((k) => (out[k]!.type === 'float16' ? float16BitsToFloat32(out[k]!.data as Uint16Array) : out[k]!.data as Float32Array));
  } finally {
    await s.release();
  }
}

const fp16Model = (): ModelProto => fp16ConvModel(true);

describe('computeInFloat32', () => {
  it('computes what the float32 graph computes, keeping the interface and the float16 storage', async () => {
    const x = randomFeed([1, 4, 8, 8], 3);
    const original = fp16Model();
    const converted = decodeModel(encodeModel(original));
    expect(computesInFloat16(converted)).toBe(true);
    const stats = computeInFloat32(converted);
    expect(stats).toEqual({ constants: 3, casts: 1, values: 5, boundaries: 1, attributes: 1 });
    expect(computesInFloat16(converted)).toBe(false);
    // Converting again changes nothing.
    const again = decodeModel(encodeModel(converted));
    expect(computeInFloat32(again)).toEqual({ constants: 0, casts: 0, values: 0, boundaries: 0, attributes: 0 });
    expect(Buffer.from(encodeModel(again)).equals(Buffer.from(encodeModel(converted)))).toBe(true);
    const reference = fp16ConvModel(false);
    const [yo, yc, yr] = [await run(original, x), await run(converted, x), await run(reference, x)];
    // The converted model is the float32 graph (z is rounded to float16 at the end only);
    // the float16 one may round values on the way (ORT drops most of its Cast pairs).
    expect(relL2(yr[0]!, yc[0]!)).toBeLessThan(1e-6);
    expect(relL2(yr[1]!, yc[1]!)).toBeLessThan(1e-3);
    for (const i of [0, 1]) expect(relL2(yr[i]!, yo[i]!)).toBeLessThan(1e-2);
    // Same inputs and outputs, same types; the weights still float16 (the file keeps its size).
    const sig = (m: ModelProto) => JSON.stringify([...m.graph!.input, ...m.graph!.output].map((v) => [v.name, v.type?.tensorType?.elemType]));
    expect(sig(converted)).toBe(sig(original));
    expect(converted.graph!.initializer.filter((t) => t.dataType === DataType.FLOAT16).map((t) => t.name)).toEqual(['w', 'b']);
    expect(Math.abs(encodeModel(converted).length - encodeModel(original).length)).toBeLessThan(600);
    expect(converted.graph!.valueInfo.every((v) => v.type?.tensorType?.elemType !== DataType.FLOAT16)).toBe(true);
  });

  it('is part of the library', async () => {
    const lib = await import('../../src/index.js');
    expect(lib.computeInFloat32).toBe(computeInFloat32);
    expect(lib.computesInFloat16).toBe(computesInFloat16);
  });

  it('leaves a float32 model as it is', () => {
    const m = fp16ConvModel(false);
    const before = encodeModel(m);
    expect(computesInFloat16(m)).toBe(false);
    expect(computeInFloat32(m)).toEqual({ constants: 0, casts: 0, values: 0, boundaries: 0, attributes: 0 });
    expect(Buffer.from(encodeModel(m)).equals(Buffer.from(before))).toBe(true);
  });

  it('refuses, unchanged, a model with a subgraph or an operator outside the ONNX domain', () => {
    const withIf = fp16Model();
    const sub = new ModelBuilder().graph;
    withIf.graph!.node.push({ ...withIf.graph!.node[0]!, opType: 'If', name: 'if', input: ['x'], output: ['o'], attribute: [{ name: 'then_branch', type: 5, g: sub, floats: [], ints: [], strings: [], tensors: [], graphs: [], sparseTensors: [], typeProtos: [] }] });
    const custom = fp16Model();
    custom.graph!.node[2]!.domain = 'com.example';
    for (const [m, why] of [[withIf, /node "if" \(If\) has a subgraph/], [custom, /domain "com.example"/]] as const) {
      const before = encodeModel(m);
      expect(() => computeInFloat32(m)).toThrow(LrError);
      expect(() => computeInFloat32(m)).toThrow(why);
      expect(Buffer.from(encodeModel(m)).equals(Buffer.from(before))).toBe(true);
    }
  });
});
