/**
 * `--weights fp16|int8`: after the rewrite, the new factors (the constant weight of every
 * node of every emitted chain) are stored smaller, the graph computing as before in fp32.
 *
 * fp16:  F [..] fp32         →  Cast(F₁₆ [..] fp16, to FLOAT)
 * int8:  F [..] fp32         →  DequantizeLinear(Q [..] int8, s [C] fp32, 0 [C] int8; axis)
 *        per output channel (src/linalg/quantize.ts, symmetric: |F − Q·s| ≤ s/2), the
 *        weight-only QDQ layout ORT's quantization tools write and its runtimes read.
 * Only fp32 factors are stored: a factor already fp16/bf16 (a Cast-fed or fp16 model) is
 * kept. Per-channel DequantizeLinear needs opset 13: an older model has its opset raised
 * when every node means the same there (quantize-opset.ts), else int8 is declined with
 * the reason and the factors stay fp32. Whether the result is accurate enough is the
 * verification's to judge, as for any rewrite.
 */
import { intAttr } from '../graph/attrs.js';
import { resolveConstant } from '../graph/constants.js';
import type { Graph, Model } from '../graph/graph.js';
import type { ShapeMap } from '../graph/shapes.js';
import { quantizeInt8PerChannel } from '../linalg/quantize.js';
import { DataType, newNode, newTensor, type NodeProto, type TensorProto } from '../onnx/schema.js';
import { makeFloatTensor, readTensorFloat, tensorByteSize, type ExternalBytes } from '../onnx/tensor.js';
import { opsetRaiseProblem, PER_CHANNEL_OPSET, raiseOpset } from './quantize-opset.js';

export type WeightsMode = 'fp32' | 'fp16' | 'int8';
export const WEIGHTS_MODES: readonly WeightsMode[] = ['fp32', 'fp16', 'int8'];

/** What --weights did, for the report. */
export interface StoredWeights {
  mode: 'fp16' | 'int8';
  /** Factor tensors stored in the mode's type, and their parameters. */
  factors: number;
  params: number;
  /** Their bytes as fp32 and as stored (scales and zero points included). */
  bytesBefore: number;
  bytesAfter: number;
  /** Factors left as they were (already fp16/bf16, or not a plain initializer of their chain's graph). */
  kept: number;
  /** The default opset was raised from this version to 13 for per-channel DequantizeLinear. */
  opsetFrom?: number;
  /** Why the factors were not stored in the mode's type (int8 on a model whose opset cannot be raised). */
  declined?: string;
}

/** A chain as the driver recorded it: the names of the nodes a rewrite emitted. */
export interface ChainRecord { nodes?: readonly string[]; skipped?: boolean }

/** Which inputs of a chain node hold its constant weight. */
function weightInputs(n: NodeProto): number[] {
  switch (n.opType) {
    case 'MatMul': case 'Gemm': return [0, 1];
    case 'Conv': case 'ConvTranspose': return [1];
    case 'Gather': return [0];
    case 'LSTM': case 'GRU': case 'RNN': return [1];
    default: return [];
  }
}

/** The output-channel axis of a weight of `rank` read at input `i` of `n` (one scale per output). */
export function outputAxis(n: NodeProto, i: number, rank: number): number {
  const attr = (name: string): number => Number(n.attribute.find((a) => a.name === name)?.i ?? 0);
  switch (n.opType) {
    case 'MatMul': return i === 1 ? rank - 1 : Math.max(0, rank - 2);
    case 'Gemm': return i === 1 ? (attr('transB') ? 0 : 1) : (attr('transA') ? 1 : 0);
    case 'ConvTranspose': return 1;
    case 'LSTM': case 'GRU': case 'RNN': return 1;
    default: return 0;
  }
}

interface Factor { g: Graph; name: string; tensor: TensorProto; reader: NodeProto; input: number }

/** The fp32 factor initializers of the recorded chains, each once, and how many others were kept. */
function chainFactors(model: Model, records: readonly ChainRecord[]): { factors: Factor[]; kept: number } {
  const byName = new Map<string, { g: Graph; n: NodeProto }>();
  for (const g of model.allGraphs()) for (const n of g.nodes) if (n.name) byName.set(n.name, { g, n });
  const factors: Factor[] = [];
  const seen = new Set<TensorProto>();
  const keptSeen = new Set<string>();
  for (const r of records) {
    if (r.skipped || !r.nodes) continue;
    for (const name of r.nodes) {
      const found = byName.get(name);
      if (!found) continue;
      const { g, n } = found;
      for (const i of weightInputs(n)) {
        const v = n.input[i];
        if (!v) continue;
        const ref = resolveConstant(g, v);
        if (!ref) {
          // A factor behind a Cast (stored fp16/bf16 like the weight it replaced) stays so.
          if (g.producer(v)?.opType === 'Cast') keptSeen.add(v);
          continue;
        }
        if (seen.has(ref.tensor)) continue;
        seen.add(ref.tensor);
        if (ref.kind !== 'initializer' || ref.outer || ref.via.length > 0 || ref.tensor.dataType !== DataType.FLOAT || ref.tensor.dims.length === 0) {
          if (ref.tensor.dataType !== DataType.INT64) keptSeen.add(ref.name);
          continue;
        }
        factors.push({ g, name: ref.name, tensor: ref.tensor, reader: n, input: i });
      }
    }
  }
  return { factors, kept: keptSeen.size };
}

/** Points every reader of `from` in `g` (and its subgraphs, which see it) at `to`. */
function rewire(g: Graph, from: string, to: string): void {
  for (const n of g.consumers(from)) {
    n.input = n.input.map((x) => (x === from ? to : x));
  }
  g.invalidate();
}

/** The first node of `g` (graph order) that reads `v`. */
function firstReader(g: Graph, v: string): NodeProto | undefined {
  const readers = new Set(g.consumers(v));
  return g.nodes.find((n) => readers.has(n));
}

/**
 * Stores the recorded chains' fp32 factors as `mode` (see the top of the file), in place.
 * `shapes` helps raising the opset (a Softmax on its last axis stays one node).
 */
export function storeFactors(model: Model, records: readonly ChainRecord[], mode: 'fp16' | 'int8', opts: { shapes?: ShapeMap; external?: ExternalBytes } = {}): StoredWeights {
  const { factors, kept } = chainFactors(model, records);
  const out: StoredWeights = { mode, factors: 0, params: 0, bytesBefore: 0, bytesAfter: 0, kept };
  if (factors.length === 0) return out;
  if (mode === 'int8') {
    const from = model.opsetVersion('') ?? 1;
    if (from < PER_CHANNEL_OPSET) {
      const problem = opsetRaiseProblem(model);
      if (problem) return { ...out, kept: kept + factors.length, declined: `int8 factors need per-channel DequantizeLinear (opset 13): ${problem}; the factors stay fp32` };
      raiseOpset(model, opts.shapes);
      out.opsetFrom = from;
    }
  }
  for (const f of factors) {
    const data = readTensorFloat(f.tensor, opts.external);
    const dims = [...f.tensor.dims];
    const reader = firstReader(f.g, f.name);
    if (!reader) continue;
    out.bytesBefore += tensorByteSize(f.tensor);
    out.factors++;
    out.params += data.length;
    const made: TensorProto[] = [];
    let node: NodeProto;
    const value = model.uniqueName(`${f.name}/${mode === 'fp16' ? 'f32' : 'dq'}`);
    if (mode === 'fp16') {
      const stored = makeFloatTensor(model.uniqueName(`${f.name}/fp16`), dims, data, DataType.FLOAT16);
      made.push(stored);
      node = newNode({ opType: 'Cast', name: model.uniqueName(`${f.name}/cast`), input: [stored.name!], output: [value], attribute: [intAttr('to', DataType.FLOAT)] });
    } else {
      const axis = outputAxis(f.reader, f.input, dims.length);
      const p = quantizeInt8PerChannel(data, dims, axis);
      const q = newTensor({ name: model.uniqueName(`${f.name}/q`), dims, dataType: DataType.INT8, rawData: new Uint8Array(p.q.buffer, p.q.byteOffset, p.q.byteLength) });
      const scale = makeFloatTensor(model.uniqueName(`${f.name}/scale`), [p.scales.length], p.scales, DataType.FLOAT);
      const zero = newTensor({ name: model.uniqueName(`${f.name}/zero`), dims: [p.scales.length], dataType: DataType.INT8, rawData: new Uint8Array(p.scales.length) });
      made.push(q, scale, zero);
      node = newNode({ opType: 'DequantizeLinear', name: model.uniqueName(`${f.name}/dequantize`), input: [q.name!, scale.name!, zero.name!], output: [value], attribute: [intAttr('axis', axis)] });
    }
    node.docString = `onnx-lr: --weights ${mode}: factor ${f.name} stored as ${mode === 'fp16' ? 'fp16' : 'int8 with one scale per output channel'}`;
    for (const t of made) { f.g.addInitializer(t); out.bytesAfter += tensorByteSize(t); }
    f.g.insertBefore(reader, [node]);
    // Every reader of the fp32 factor now reads the Cast's / DequantizeLinear's output.
    rewire(f.g, f.name, value);
  }
  for (const g of model.allGraphs()) g.removeUnusedInitializers();
  return out;
}

const kib = (b: number): string => `${(b / 1024).toFixed(1)} KiB`;

/** What --weights did, in one line for the report's notes. */
export function weightsNote(w: StoredWeights): string {
  const head = `--weights ${w.mode}`;
  if (w.declined) return `${head}: ${w.declined}`;
  const kept = w.kept > 0 ? `; ${w.kept} factor(s) already stored fp16/bf16 kept as they were` : '';
  if (w.factors === 0) return `${head}: no fp32 factors to store${kept}`;
  const as = w.mode === 'fp16' ? 'fp16 behind a Cast' : 'int8 with one scale per output channel (DequantizeLinear)';
  const opset = w.opsetFrom !== undefined ? `; the default opset was raised from ${w.opsetFrom} to 13 for per-channel DequantizeLinear (ops whose meaning changed rewritten to their opset-13 form)` : '';
  return `${head}: ${w.factors} new factor tensor(s), ${w.params} params, stored as ${as}: ${kib(w.bytesBefore)} -> ${kib(w.bytesAfter)}${kept}${opset}`;
}
