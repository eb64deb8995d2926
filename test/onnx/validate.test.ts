/**
 * Model validation at load (src/onnx/validate.ts): duplicate initializer names and tensors
 * whose dims are negative or count past 2^53 are refused with the file and the tensor
 * named; the real models still load. And an IR 3 model keeps its initializers typed
 * graph inputs when the rewrite adds new ones (Graph.addInitializer).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { Model } from '../../src/graph/graph.js';
import { encodeModel } from '../../src/onnx/codec.js';
import { loadModel } from '../../src/onnx/file.js';
import { DataType, newTensor, type ModelProto } from '../../src/onnx/schema.js';
import { makeFloatTensor } from '../../src/onnx/tensor.js';
import { validateModel } from '../../src/onnx/validate.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import { runCli } from '../helpers/cli.js';
import { expectLrError, floatInfo, ifModel, matmulAddModel, randomFloat, REAL_MODELS, removeTmpDirs, tmpDir } from './helpers.js';

afterAll(removeTmpDirs);

function write(dir: string, name: string, m: ModelProto): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, encodeModel(m));
  return f;
}

describe('validateModel at load', () => {
  it('refuses two initializers of one name in the main graph, naming the file and the tensor', () => {
    const dir = tmpDir();
    const m = matmulAddModel(8, 8);
    m.graph!.initializer.push(makeFloatTensor('W', [8, 8], randomFloat(9, 64)));
    const f = write(dir, 'dup.onnx', m);
    expectLrError(() => loadModel(f), 'parse', /dup\.onnx: graph "mm" has more than one initializer named "W"/);
  });

  it('refuses duplicates inside a subgraph (an If branch)', () => {
    const m = ifModel(4, 4);
    const then = m.graph!.node[0]!.attribute[0]!.g!;
    then.initializer.push(makeFloatTensor('W_then', [4, 4], randomFloat(3, 16)));
    expectLrError(() => validateModel(m, 'if.onnx'), 'parse', /^if\.onnx: graph "then" has more than one initializer named "W_then"/);
  });

  it('refuses an initializer and a sparse initializer of one name', () => {
    const m = matmulAddModel(4, 4);
    const values = newTensor({ name: 'B', dims: [1], dataType: DataType.FLOAT, rawData: new Uint8Array(4) });
    const indices = newTensor({ name: 'B_idx', dims: [1], dataType: DataType.INT64, rawData: new Uint8Array(8) });
    m.graph!.sparseInitializer.push({ values, indices, dims: [4] });
    expectLrError(() => validateModel(m, 's.onnx'), 'parse', /initializer named "B" \(sparse initializer\)/);
  });

  it('refuses negative dims and element counts past 2^53 (inspect printed negative or rounded counts)', async () => {
    const dir = tmpDir();
    const neg = matmulAddModel(4, 4);
    neg.graph!.initializer.push(newTensor({ name: 'N', dims: [-3, 5], dataType: DataType.FLOAT }));
    const fNeg = write(dir, 'neg.onnx', neg);
    expectLrError(() => loadModel(fNeg), 'parse', /neg\.onnx: tensor "N" has a negative dimension in \[-3, 5\]/);
    const big = matmulAddModel(4, 4);
    big.graph!.initializer.push(newTensor({ name: 'H', dims: [2 ** 27, 2 ** 27 + 1], dataType: DataType.FLOAT }));
    const fBig = write(dir, 'big.onnx', big);
    expectLrError(() => loadModel(fBig), 'parse', /big\.onnx: tensor "H" has dims \[134217728, 134217729\]: .* elements, past 2\^53/);
    const r = await runCli('inspect', fBig);
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toMatch(/^onnx-lr: .*big\.onnx: tensor "H" has dims/);
    // Each tensor exact, but the parameter count (their sum) past 2^53.
    const many = matmulAddModel(4, 4);
    for (let i = 0; i < 4; i++) many.graph!.initializer.push(newTensor({ name: `T${i}`, dims: [2 ** 26, 2 ** 26], dataType: DataType.FLOAT }));
    expectLrError(() => validateModel(many, 'many.onnx'), 'parse', /^many\.onnx: its tensors hold more than 2\^53 elements in all \(at tensor "T1"\)/);
    // A zero dim makes any count exact.
    const zero = matmulAddModel(4, 4);
    zero.graph!.initializer.push(newTensor({ name: 'Z', dims: [0, 2 ** 40, 2 ** 40], dataType: DataType.FLOAT }));
    expect(() => validateModel(zero, 'zero.onnx')).not.toThrow();
  });

  it('a Constant node tensor with a negative dim is refused too', () => {
    const m = ifModel(4, 4);
    m.graph!.node[0]!.attribute[1]!.g!.node[0]!.attribute[0]!.t!.dims = [-4];
    expectLrError(() => validateModel(m, 'c.onnx'), 'parse', /c\.onnx: tensor "c_else" has a negative dimension/);
  });

  it('every real model still loads', () => {
    expect(REAL_MODELS.length).toBeGreaterThan(3);
    for (const f of REAL_MODELS) {
      const l = loadModel(f);
      l.external.close();
    }
  });
});

describe('IR < 4: new initializers become typed graph inputs', () => {
  it('the factors of an IR 3 model are inputs with their element type and shape, and ORT runs the result', async () => {
    const k = 64, n = 64;
    const m = matmulAddModel(k, n);
    m.irVersion = 3;
    m.opsetImport = [{ domain: '', version: 8 }];
    // IR 3 lists every initializer as a graph input.
    m.graph!.input.push(floatInfo('W', [k, n]), floatInfo('B', [n]));
    const model = new Model(m);
    const recs = optimizeModel(model, undefined, { method: 'auto', policy: { kind: 'fixed', rank: 4 }, minParams: 0, seed: 0 });
    expect(recs.filter((r) => !r.skipped)).toHaveLength(1);
    const inits = new Map(m.graph!.initializer.map((t) => [t.name!, t]));
    expect(inits.size).toBeGreaterThan(1);
    for (const [name, t] of inits) {
      const vi = m.graph!.input.find((v) => v.name === name);
      expect(vi, name).toBeDefined();
      expect(vi!.type?.tensorType?.elemType, name).toBe(t.dataType);
      expect(vi!.type?.tensorType?.shape?.dim.map((d) => d.dimValue), name).toEqual(t.dims);
    }
    const s = await ort.InferenceSession.create(encodeModel(m), { logSeverityLevel: 3 });
    try {
      const x = new ort.Tensor('float32', randomFloat(5, 2 * k), [2, k]);
      const feeds: Record<string, ort.Tensor> = { X: x };
      // Initializers that are inputs may be fed; leave them at their initial values.
      const out = await s.run(feeds);
      expect(out.Y!.dims).toEqual([2, n]);
    } finally {
      await s.release();
    }
  });
});
