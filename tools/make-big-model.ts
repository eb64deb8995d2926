/**
 * Builds a synthetic MLP over 2 GiB with its weights in external data, for scale tests:
 *   x [1, K] → MatMul W0 [K, N] → MatMul W1 [N, K] → MatMul W2 [K, N] → … → y
 * Default: 14 weights of 4096×11008 fp32 (180 MB each, 2.52 GB in all).
 *
 * Each weight is low-rank plus noise (W = A·B/√(r·cols) + σ·E, A [rows, r], B [r, cols]), so
 * `optimize --rank 64` reconstructs it well and verification can pass. Weights are
 * generated one at a time while `saveModel` streams them to the data file: the tensors are
 * declared external with a reader that computes each payload on demand, so memory stays
 * at about one weight whatever the model size.
 *
 *   npx tsx tools/make-big-model.ts OUT_DIR [--layers 14] [--k 4096] [--n 11008] [--rank 32]
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { valueInfo } from '../models/builder.js';
import type { ExternalReader } from '../src/onnx/external.js';
import { loadModel, saveModel, type SaveResult } from '../src/onnx/file.js';
import { DATA_LOCATION_EXTERNAL, DataType, newGraph, newModel, newNode, newTensor, type TensorProto } from '../src/onnx/schema.js';
import { createRng } from '../src/util/rng.js';

export interface BigModelOptions {
  layers?: number;
  k?: number;
  n?: number;
  /** True rank of each weight before noise. */
  rank?: number;
  /** Noise standard deviation relative to a weight entry's typical size. */
  noise?: number;
  seed?: number;
  /** Progress callback (layer index, total). */
  onLayer?: (i: number, total: number) => void;
}

export interface BigModel extends SaveResult {
  /** Total bytes on disk (model + data). */
  totalBytes: number;
  layers: number;
  k: number;
  n: number;
}

/** One weight, row-major [rows, cols]: (A·B)/√(rank·cols) + noise, A/B seeded per layer. */
export function bigWeight(layer: number, rows: number, cols: number, rank: number, noise: number, seed: number): Float32Array {
  const rng = createRng((seed * 1000003 + layer * 7919) >>> 0);
  const a = new Float32Array(rows * rank);
  const b = new Float32Array(rank * cols);
  for (let i = 0; i < a.length; i++) a[i] = rng.normal();
  for (let i = 0; i < b.length; i++) b[i] = rng.normal();
  // Keeps ‖h·W‖ ≈ ‖h‖ along the chain (the activations stay O(1) over every layer).
  const scale = 1 / Math.sqrt(rank * cols);
  // Entries of A·B have standard deviation √rank; the noise is `noise` times that.
  const sigma = noise * Math.sqrt(rank) * scale;
  const w = new Float32Array(rows * cols);
  const row = new Float64Array(cols);
  for (let i = 0; i < rows; i++) {
    row.fill(0);
    for (let p = 0; p < rank; p++) {
      const x = a[i * rank + p];
      const off = p * cols;
      for (let j = 0; j < cols; j++) row[j] += x * b[off + j];
    }
    const base = i * cols;
    // Uniform noise with the same variance as N(0, σ²): cheaper than Box–Muller here.
    for (let j = 0; j < cols; j++) w[base + j] = row[j] * scale + sigma * 3.4641016 * (rng.next() - 0.5);
  }
  return w;
}

export function makeBigModel(dir: string, opts: BigModelOptions = {}): BigModel {
  const layers = opts.layers ?? 14;
  const k = opts.k ?? 4096;
  const n = opts.n ?? 11008;
  const rank = opts.rank ?? 32;
  const noise = opts.noise ?? 0.003;
  const seed = opts.seed ?? 1;
  fs.mkdirSync(dir, { recursive: true });
  const shapeOf = (i: number): [number, number] => (i % 2 === 0 ? [k, n] : [n, k]);

  const inits: TensorProto[] = [];
  const nodes = [];
  let h = 'x';
  for (let i = 0; i < layers; i++) {
    const name = `w${i}`;
    // Declared external with a virtual location: saveModel asks the reader for the payload.
    inits.push(newTensor({
      name, dims: shapeOf(i), dataType: DataType.FLOAT, dataLocation: DATA_LOCATION_EXTERNAL,
      externalData: [{ key: 'location', value: 'generated' }],
    }));
    const out = i === layers - 1 ? 'y' : `h${i}`;
    nodes.push(newNode({ opType: 'MatMul', name: `mm${i}`, input: [h, name], output: [out] }));
    h = out;
  }
  const last = shapeOf(layers - 1)[1];
  const model = newModel({
    irVersion: 8, producerName: 'onnx-lr make-big-model', opsetImport: [{ domain: '', version: 13 }],
    graph: newGraph({ name: 'big_mlp', node: nodes, initializer: inits, input: [valueInfo('x', [1, k])], output: [valueInfo('y', [1, last])] }),
  });

  let done = 0;
  const reader: ExternalReader = {
    readBytes(t: TensorProto): Uint8Array {
      const i = Number((t.name ?? '').slice(1));
      const [r, c] = shapeOf(i);
      opts.onLayer?.(done++, layers);
      const w = bigWeight(i, r, c, rank, noise, seed);
      return new Uint8Array(w.buffer, w.byteOffset, w.byteLength);
    },
    close() { /* nothing open */ },
  };
  const file = path.join(dir, 'big.onnx');
  const res = saveModel({ model, external: reader }, file, { externalData: { threshold: 1024 } });
  return { ...res, totalBytes: res.bytes + (res.externalBytes ?? 0), layers, k, n };
}

/**
 * The files of the model built in `dir` (the protobuf and the data file it names: the
 * data file's name carries a hash of its content), or undefined when it is not there.
 */
export function bigModelFiles(dir: string): { model: string; data: string; totalBytes: number } | undefined {
  const model = path.join(dir, 'big.onnx');
  if (!fs.existsSync(model)) return undefined;
  const loaded = loadModel(model);
  loaded.external.close();
  const data = loaded.dataFiles[0];
  if (data === undefined || !fs.existsSync(data)) return undefined;
  return { model, data, totalBytes: fs.statSync(model).size + fs.statSync(data).size };
}

const isMain = process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const args = process.argv.slice(2);
  const dir = args.find((a) => !a.startsWith('--'));
  if (!dir) {
    process.stderr.write('usage: npx tsx tools/make-big-model.ts OUT_DIR [--layers 14] [--k 4096] [--n 11008] [--rank 32]\n');
    process.exit(2);
  }
  const opt = (name: string): number | undefined => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? Number(args[i + 1]) : undefined;
  };
  const t0 = performance.now();
  const r = makeBigModel(dir, {
    layers: opt('layers'), k: opt('k'), n: opt('n'), rank: opt('rank'),
    onLayer: (i, total) => process.stderr.write(`\rweight ${i + 1}/${total}`),
  });
  process.stderr.write('\n');
  process.stdout.write(`wrote ${r.path} (${r.bytes} B) + ${r.externalPath} (${r.externalBytes} B) in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
}
