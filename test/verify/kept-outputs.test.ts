import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { DataType, newValueInfo } from '../../src/onnx/schema.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { loadModel, saveModel } from '../../src/onnx/file.js';
import { keptInside, keptInsideAll, MAX_KEPT_BYTES } from '../../src/verify/kept-outputs.js';
import { measureLatency } from '../../src/verify/latency.js';
import { createSession } from '../../src/verify/session.js';
import { randomFeed, runModel } from '../helpers/ort.js';
import { CLS, HELLO } from './models.js';

// The sessions measureLatency opens, to see which models it times (the real ORT sessions still run).
vi.mock('../../src/verify/session.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/verify/session.js')>();
  return { ...m, createSession: vi.fn(m.createSession) };
});

const dirs: string[] = [];
afterAll(() => { for (const d of dirs) fs.rmSync(d, { recursive: true, force: true }); });

/** x → Conv 1x1 → y (4 channels), y → Relu → r, and x itself returned too (three outputs, one a graph input); `clash` takes the name the sink would use. */
function threeOutputs(opset: number, clash: boolean) {
  const b = new ModelBuilder({ opset });
  const x = b.input(clash ? 'c_out0_first' : 'x', [1, 2, 3, 5]);
  const w = b.init('w', [4, 2, 1, 1], Float32Array.from({ length: 8 }, (_, i) => i - 3));
  const y = b.node('Conv', [x, w], { kernel_shape: [1, 1] }, { name: 'c' });
  b.output(y);
  b.output(b.node('Relu', [y], {}, { name: 'r' }));
  b.output(x);
  return b.build();
}

describe('keptInside: timed models keep their outputs inside ORT', () => {
  for (const opset of [7, 9, 13, 18]) {
    it(`opset ${opset}: every output becomes its first element alone, computed as before; the model given is unchanged`, async () => {
      const m = threeOutputs(opset, opset === 13);
      const before = encodeModel(m);
      const kept = keptInside(m);
      const input = m.graph!.input[0]!.name!;
      const feeds = { [input]: randomFeed([1, 2, 3, 5], opset) };
      const full = await runModel(before, feeds);
      const out = await runModel(encodeModel(kept), feeds);
      const names = kept.graph!.output.map((o) => o.name!);
      expect(names).toHaveLength(3);
      expect(new Set(names).size).toBe(3);
      expect(Object.keys(out).sort()).toEqual([...names].sort());
      m.graph!.output.forEach((o, i) => {
        expect(full[o.name!]!.length).toBeGreaterThan(1);
        expect(out[names[i]!]).toEqual(Float32Array.of(full[o.name!]![0]!));
      });
      expect(encodeModel(m)).toEqual(before);
    });
  }
});

/** Writes `m` to a fresh folder; returns its path. */
function written(m: ReturnType<ModelBuilder['build']>, name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-lr-kept-'));
  dirs.push(dir);
  const file = path.join(dir, name);
  fs.writeFileSync(file, encodeModel(m));
  return file;
}

describe('measureLatency times the models with their outputs kept inside', () => {
  it('a sequence output is left as it is (Flatten takes tensors), the tensor output beside it is cut', () => {
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [2, 3]);
    const y = b.node('Relu', [x], {}, { name: 'r' });
    b.output(y);
    b.graph.output.push(newValueInfo({ name: b.node('SequenceConstruct', [y, x], {}, { name: 'seq' }), type: { sequenceType: { elemType: { tensorType: { elemType: DataType.FLOAT } } } } }));
    const kept = keptInside(b.build());
    expect(kept.graph!.output.map((o) => o.name)).toEqual(['r_out0_first', 'seq_out0']);
    expect(kept.graph!.node.filter((n) => n.opType === 'Flatten').map((n) => n.input[0])).toEqual(['r_out0']);
  });

  it('a model over the size bound is not copied (its copy would be decoded and encoded in memory beside ORT\'s): both are timed as they are', () => {
    const size = fs.statSync(CLS).size;
    expect(MAX_KEPT_BYTES).toBe(512 * 2 ** 20);
    expect(keptInsideAll([{ path: CLS }, { path: CLS }], size)).toHaveLength(2);
    expect(keptInsideAll([{ path: CLS }, { path: CLS }], size - 1)).toBeUndefined();
    expect(keptInsideAll([{ path: CLS }, { bytes: fs.readFileSync(CLS) }], size - 1)).toBeUndefined();
  });

  it('a copy ORT refuses (an int64 output where Flatten-1 takes floats only) falls back to timing both as they are', async () => {
    const b = new ModelBuilder({ opset: 7 });
    b.output(b.node('ArgMax', [b.input('x', [2, 5])], { axis: 1 }, { name: 'am' }), [2, 1], DataType.INT64);
    const file = written(b.build(), 'argmax.onnx');
    const created = vi.mocked(createSession);
    created.mockClear();
    const r = await measureLatency({ path: file }, { path: file }, { minRuns: 3, minSeconds: 0 });
    if (!r.ok) throw r.error;
    expect(r.value.outputsKept).toBe(false);
    expect(created.mock.calls.at(-2)![0]).toEqual({ path: file });
    expect(created.mock.calls.at(-1)![0]).toEqual({ path: file });
  });

  it('the sessions it opens return one element per output, and the stats say so', async () => {
    const created = vi.mocked(createSession);
    created.mockClear();
    const r = await measureLatency({ path: CLS }, { path: CLS }, { minRuns: 3, minSeconds: 0, shapes: { x: [1, 3, 48, 192] } });
    if (!r.ok) throw r.error;
    expect(r.value.outputsKept).toBe(true);
    expect(created).toHaveBeenCalledTimes(2);
    const outputs = decodeModel(fs.readFileSync(CLS)).graph!.output.length;
    for (const [src] of created.mock.calls) {
      const g = decodeModel((src as { bytes: Uint8Array }).bytes).graph!;
      expect(g.output).toHaveLength(outputs);
      expect(g.node.at(-1)!.opType).toBe('Slice');
    }
  });

  it('a model with external data loads from its path: both are timed as they are, and the stats say so', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-lr-kept-'));
    dirs.push(dir);
    const ext = path.join(dir, 'ext.onnx');
    expect(saveModel(loadModel(HELLO), ext, { externalData: { threshold: 1024 } }).externalTensors).toBeGreaterThan(0);
    const created = vi.mocked(createSession);
    created.mockClear();
    const r = await measureLatency({ path: HELLO }, { path: ext }, { minRuns: 3, minSeconds: 0 });
    if (!r.ok) throw r.error;
    expect(r.value.outputsKept).toBe(false);
    expect(created.mock.calls.map(([src]) => src)).toEqual([{ path: HELLO }, { path: ext }]);
  });
});
