/**
 * bf16 models (src/verify/widen-bf16.ts): ORT's CPU has no bf16 MatMul, so such a model is
 * verified, timed and profiled through its exact fp32 copy, and `optimize` writes OUT with
 * its bf16 weights kept instead of exiting 2.
 */
import * as ort from 'onnxruntime-node';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { DataType, type ModelProto } from '../../src/onnx/schema.js';
import { makeFloatTensor, readTensorFloat } from '../../src/onnx/tensor.js';
import { bfloat16BitsToFloat32, float32ToBfloat16Bits } from '../../src/onnx/half.js';
import { profileModel } from '../../src/verify/profile.js';
import { createSession } from '../../src/verify/session.js';
import { verifyModels, verifySequentially } from '../../src/verify/verify.js';
import { holdsBf16, widenBf16, WIDENED_NOTE } from '../../src/verify/widen-bf16.js';
import { runCli } from '../helpers/cli.js';
import { lowRank } from '../helpers/ort.js';

const bf16 = (x: Float32Array): Float32Array => bfloat16BitsToFloat32(float32ToBfloat16Bits(x));

/** Y = MatMul(MatMul(X, W0), W1) all in bf16 (input, weights, output), X [4, 64]; an If in a subgraph carries a bf16 Cast. */
function bf16Model(opts: { withIf?: boolean } = {}): ModelProto {
  const b = new ModelBuilder({ opset: 17 });
  let h = b.input('x', [4, 64], DataType.BFLOAT16);
  for (let i = 0; i < 2; i++) {
    b.graph.initializer.push(makeFloatTensor(`w${i}`, [64, 64], lowRank(64, 64, 4, 30 + i).map((v) => v / 8), DataType.BFLOAT16));
    h = b.node('MatMul', [h, `w${i}`], {}, { name: `fc${i}` });
  }
  if (opts.withIf) {
    // then: Cast(h → float) → Cast(→ bf16); else: h itself. The condition is a bool input.
    const then = new ModelBuilder();
    then.output(then.node('Cast', [then.node('Cast', [h], { to: DataType.FLOAT })], { to: DataType.BFLOAT16 }), [4, 64], DataType.BFLOAT16);
    const other = new ModelBuilder();
    other.output(other.node('Identity', [h]), [4, 64], DataType.BFLOAT16);
    h = b.node('If', [b.input('c', [], DataType.BOOL)], { then_branch: then.graph, else_branch: other.graph }, { name: 'branch' });
  }
  b.output(h, [4, 64], DataType.BFLOAT16);
  return b.build();
}

/** The reference: fp32 arithmetic on the bf16 values of X and the weights. */
function reference(model: ModelProto, x: Float32Array): Float32Array {
  let h = x;
  for (let i = 0; i < 2; i++) {
    const w = readTensorFloat(model.graph!.initializer.find((t) => t.name === `w${i}`)!);
    const out = new Float32Array(4 * 64);
    for (let r = 0; r < 4; r++) for (let c = 0; c < 64; c++) {
      let s = 0;
      for (let k = 0; k < 64; k++) s += h[r * 64 + k]! * w[k * 64 + c]!;
      out[r * 64 + c] = s;
    }
    h = out;
  }
  return h;
}

describe('bf16 models through an fp32 copy', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-bf16-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('ORT refuses the bf16 model as it is, and the session runs its fp32 copy with the same values', async () => {
    const model = bf16Model();
    const bytes = encodeModel(model);
    await expect(ort.InferenceSession.create(bytes)).rejects.toThrow(/Could not find an implementation for MatMul/);
    const s = await createSession({ bytes });
    if (!s.ok) throw s.error;
    try {
      expect(s.value.widened).toBe(WIDENED_NOTE);
      expect(s.value.inputs.map((i) => i.type)).toEqual(['float32']);
      const x = bf16(Float32Array.from({ length: 256 }, (_, i) => Math.sin(i * 0.37)));
      const r = await s.value.run({ x: { type: 'float32', dims: [4, 64], data: x } });
      if (!r.ok) throw r.error;
      const want = reference(model, x);
      const got = r.value[s.value.outputs[0]!.name]!.data as Float32Array;
      for (let i = 0; i < want.length; i++) expect(got[i]).toBeCloseTo(want[i]!, 3);
    } finally {
      await s.value.release();
    }
  });

  it('a model without bf16 is never widened, and one ORT refuses for another reason keeps its own error', async () => {
    const b = new ModelBuilder();
    b.output(b.node('MatMul', [b.input('x', [2, 8]), b.init('w', [8, 8], lowRank(8, 8, 2, 1))]));
    const s = await createSession({ bytes: encodeModel(b.build()) });
    if (!s.ok) throw s.error;
    expect(s.value.widened).toBeUndefined();
    await s.value.release();
    const bad = new ModelBuilder();
    bad.output(bad.node('NoSuchOp', [bad.input('x', [2], DataType.BFLOAT16)]), [2], DataType.BFLOAT16);
    const e = await createSession({ bytes: encodeModel(bad.build()) });
    expect(e.ok).toBe(false);
    if (!e.ok) expect(e.error.message).toMatch(/failed to load .*NoSuchOp/);
  });

  it('widenBf16 moves every bf16 tensor, value type and type attribute to fp32 (subgraphs included) and leaves the model alone', () => {
    const model = bf16Model({ withIf: true });
    const before = encodeModel(model);
    expect(holdsBf16(model)).toBe(true);
    const wide = widenBf16(model);
    if (typeof wide === 'string') throw new Error(wide);
    expect(holdsBf16(wide)).toBe(false);
    expect(encodeModel(model)).toEqual(before);
    const w0 = wide.graph!.initializer[0]!;
    expect(w0.dataType).toBe(DataType.FLOAT);
    expect(readTensorFloat(w0)).toEqual(readTensorFloat(model.graph!.initializer[0]!));
    const branch = wide.graph!.node.find((n) => n.opType === 'If')!;
    const then = branch.attribute.find((a) => a.name === 'then_branch')!.g!;
    expect(then.node.map((n) => Number(n.attribute[0]!.i))).toEqual([DataType.FLOAT, DataType.FLOAT]);
    expect(then.output[0]!.type!.tensorType!.elemType).toBe(DataType.FLOAT);
  });

  it('a bf16 weight stored as external data is not widened (the copy would not find it)', () => {
    const model = bf16Model();
    const t = model.graph!.initializer[0]!;
    delete t.rawData;
    t.dataLocation = 1;
    t.externalData = [{ key: 'location', value: 'w.bin', metadataProps: [] } as never];
    expect(widenBf16(model)).toBe('bf16 tensor w0 is stored as external data');
  });

  it('verifies two bf16 models and says it went through fp32 copies; the profiler reads the copy too', async () => {
    const a = path.join(dir, 'a.onnx');
    writeFileSync(a, encodeModel(bf16Model()));
    const v = await verifyModels({ path: a }, { path: a }, { minCosine: 0.99 });
    if (!v.ok) throw v.error;
    expect(v.value.pass).toBe(true);
    expect(v.value.widened).toBe(WIDENED_NOTE);
    const p = await profileModel(a);
    if (!p.ok) throw p.error;
    expect([...p.value.byNode.keys()].sort()).toEqual(['fc0', 'fc1']);
  });

  it('when only the optimized model needs its fp32 copy, the original is compared through its copy too', async () => {
    // IN: a bf16 table looked up (ORT's CPU Gather takes bf16) and cast to float: it loads as it is.
    // OUT: the lookup followed by a bf16 MatMul, which ORT's CPU cannot run.
    const table = lowRank(50, 16, 2, 3);
    const mk = (rewritten: boolean): Uint8Array => {
      const b = new ModelBuilder({ opset: 17 });
      const ids = b.input('ids', [4], DataType.INT64);
      let h: string;
      if (rewritten) {
        b.graph.initializer.push(makeFloatTensor('a', [50, 16], table, DataType.BFLOAT16));
        const eye = new Float32Array(256).map((_, i) => (i % 17 === 0 ? 1 : 0));
        b.graph.initializer.push(makeFloatTensor('b', [16, 16], eye, DataType.BFLOAT16));
        h = b.node('MatMul', [b.node('Gather', ['a', ids]), 'b']);
      } else {
        b.graph.initializer.push(makeFloatTensor('t', [50, 16], table, DataType.BFLOAT16));
        h = b.node('Gather', ['t', ids]);
      }
      b.output(b.node('Cast', [h], { to: DataType.FLOAT }, { name: 'y' }), [4, 16]);
      return encodeModel(b.build());
    };
    const [inBytes, outBytes] = [mk(false), mk(true)];
    const native = await createSession({ bytes: inBytes });
    if (!native.ok) throw native.error;
    expect(native.value.widened).toBeUndefined();
    await native.value.release();
    const log: string[] = [];
    const v = await verifySequentially(async (which, widen) => {
      log.push(`${which}${widen ? ' widened' : ''}`);
      return createSession({ bytes: which === 'original' ? inBytes : outBytes }, widen ? { widen } : {});
    }, { feeds: [{ ids: { type: 'int64', dims: [4], data: BigInt64Array.from([1n, 7n, 49n, 0n]) } }], atol: Infinity, rtol: 0 });
    if (!v.ok) throw v.error;
    expect(log).toEqual(['original', 'optimized', 'original widened', 'optimized widened']);
    expect(v.value.reasons).toEqual([]);
    expect(v.value.widened).toBe(WIDENED_NOTE);
    expect(v.value.pass).toBe(true);
    expect(v.value.outputs[0]!.relL2).toBe(0);
  });

  it('optimize on a bf16 model verifies, writes OUT with bf16 factors and reports the fp32 copies', async () => {
    const inPath = path.join(dir, 'in.onnx');
    const outPath = path.join(dir, 'out.onnx');
    writeFileSync(inPath, encodeModel(bf16Model()));
    const res = await runCli('optimize', inPath, outPath, '--rank', '4', '--save', 'params', '--min-params', '0', '--json');
    expect(res.code, res.err).toBe(0);
    const report = JSON.parse(res.out);
    expect(report.verify.pass).toBe(true);
    expect(report.verify.widened).toBe(WIDENED_NOTE);
    expect(report.layers.filter((l: { skipped?: boolean }) => !l.skipped)).toHaveLength(2);
    const out = decodeModel(readFileSync(outPath));
    expect(out.graph!.initializer.map((t) => t.dataType)).toEqual(Array(4).fill(DataType.BFLOAT16));
    expect(out.graph!.input[0]!.type!.tensorType!.elemType).toBe(DataType.BFLOAT16);
  });
});
