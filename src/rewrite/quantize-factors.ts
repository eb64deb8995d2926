/**
 * `--weights fp16|int8`: after the rewrite, the new factors (the constant weight of every
 * node of every emitted chain) are stored smaller, the graph computing as before in fp32.
 *
 * fp16:  F [..] fp32         →  Cast(F₁₆ [..] fp16, to FLOAT)
 * int8:  F [..] fp32         →  DequantizeLinear(Q [..] int8, s [C] fp32, 0 [C] int8; axis)
 *        per output channel (src/linalg/quantize.ts, symmetric: |F − Q·s| ≤ s/2), the
 *        weight-only QDQ layout ORT's quantization tools write and its runtimes read.
 * fp16 stores fp32 factors only: a factor already fp16/bf16 (a Cast-fed or fp16 model) is
 * kept. int8 also takes an fp16 model's fp16 factors, through DequantizeLinear and a Cast
 * back to fp16 (quantize-store.ts); a factor behind a Cast stays as it is. Per-channel
 * DequantizeLinear needs opset 13: an older model has its opset raised when every node
 * means the same there (quantize-opset.ts), else int8 is declined with the reason and the
 * factors stay as they were. When OUT then fails the verification, the factors are stored
 * one step wider (int8 → fp16 → as the rewrite made them) and OUT written again
 * (factorStorage here, optimize/write-verify.ts), so the stored type is the smallest that
 * keeps the whole output within the verification.
 */
import { intAttr } from '../graph/attrs.js';
import { resolveConstant } from '../graph/constants.js';
import type { Graph, Model } from '../graph/graph.js';
import type { ShapeMap } from '../graph/shapes.js';
import { DataType, newNode, type NodeProto, type TensorProto } from '../onnx/schema.js';
import { makeFloatTensor, readTensorFloat, tensorByteSize, type ExternalBytes } from '../onnx/tensor.js';
import { ensurePerChannelOpset, firstReader, INT8_SOURCE_TYPES, rewire, storeInt8 } from './quantize-store.js';

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
  /** What --weights asked for, when OUT failed the verification with it and the factors were stored wider (`mode`, or fp32 when `declined`). */
  requested?: 'fp16' | 'int8';
  /** Why: the verification's verdict with the requested factors (optimize/write-verify.ts). */
  fallback?: string;
}

/** A chain as the driver recorded it: the names of the nodes a rewrite emitted. */
export interface ChainRecord { nodes?: readonly string[]; skipped?: boolean }

/** Which inputs of a chain node hold its constant weight. */
export function weightInputs(n: NodeProto): number[] {
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
function chainFactors(model: Model, records: readonly ChainRecord[], mode: 'fp16' | 'int8'): { factors: Factor[]; kept: number } {
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
        // int8 also takes fp16 factors (an fp16 model's): DequantizeLinear then a Cast back to fp16.
        const storable = mode === 'int8' ? INT8_SOURCE_TYPES.has(ref.tensor.dataType ?? 0) : ref.tensor.dataType === DataType.FLOAT;
        if (ref.kind !== 'initializer' || ref.outer || ref.via.length > 0 || !storable || ref.tensor.dims.length === 0) {
          if (ref.tensor.dataType !== DataType.INT64) keptSeen.add(ref.name);
          continue;
        }
        factors.push({ g, name: ref.name, tensor: ref.tensor, reader: n, input: i });
      }
    }
  }
  return { factors, kept: keptSeen.size };
}

/**
 * Stores the recorded chains' fp32 factors as `mode` (see the top of the file), in place.
 * `shapes` helps raising the opset (a Softmax on its last axis stays one node).
 */
export function storeFactors(model: Model, records: readonly ChainRecord[], mode: 'fp16' | 'int8', opts: { shapes?: ShapeMap; external?: ExternalBytes } = {}): StoredWeights {
  return storeReversibly(model, records, mode, opts).weights;
}

/** Factors stored smaller that can be put back as the rewrite made them. */
export interface ReversibleStore {
  weights: StoredWeights;
  /**
   * Puts the fp32 factors back (the nodes storing them removed, their readers rewired);
   * a raised opset stays raised (exact). Call once, before any payload is released.
   */
  restore(): void;
}

/** A stored factor: the original tensor, and the value and nodes now standing for it. */
interface Undo { g: Graph; name: string; tensor: TensorProto; value: string; nodes: NodeProto[] }

/**
 * storeFactors that can be undone: the verification's fall-back (optimize/write-verify.ts)
 * stores int8 factors, and when OUT fails where fp32 factors might pass, restores the fp32
 * ones and stores them as fp16, or leaves them fp32.
 */
export function storeReversibly(model: Model, records: readonly ChainRecord[], mode: 'fp16' | 'int8', opts: { shapes?: ShapeMap; external?: ExternalBytes } = {}): ReversibleStore {
  const undo: Undo[] = [];
  const restore = (): void => {
    for (const u of undo.splice(0).reverse()) {
      for (const n of u.nodes) if (u.g.nodes.includes(n)) u.g.replaceNode(n, []);
      if (!u.g.initializer(u.name)) u.g.addInitializer(u.tensor);
      rewire(u.g, u.value, u.name);
    }
    for (const g of model.allGraphs()) g.removeUnusedInitializers();
  };
  return { weights: store(model, records, mode, opts, undo), restore };
}

function store(model: Model, records: readonly ChainRecord[], mode: 'fp16' | 'int8', opts: { shapes?: ShapeMap; external?: ExternalBytes }, undo: Undo[]): StoredWeights {
  const { factors, kept } = chainFactors(model, records, mode);
  const out: StoredWeights = { mode, factors: 0, params: 0, bytesBefore: 0, bytesAfter: 0, kept };
  if (factors.length === 0) return out;
  if (mode === 'int8') {
    const raised = ensurePerChannelOpset(model, opts.shapes);
    if (raised.problem) return { ...out, kept: kept + factors.length, declined: `int8 factors need per-channel DequantizeLinear (opset 13): ${raised.problem}; the factors stay as they were` };
    if (raised.from !== undefined) out.opsetFrom = raised.from;
  }
  for (const f of factors) {
    if (mode === 'int8') {
      const axis = outputAxis(f.reader, f.input, f.tensor.dims.length);
      const s = storeInt8(model, f.g, f.name, f.tensor, axis, opts.external, `onnx-lr: --weights int8: factor`);
      if (!s) continue;
      undo.push({ g: f.g, name: f.name, tensor: f.tensor, value: s.value, nodes: s.nodes });
      out.factors++;
      out.params += s.params;
      out.bytesBefore += s.bytesBefore;
      out.bytesAfter += s.bytesAfter;
      continue;
    }
    const data = readTensorFloat(f.tensor, opts.external);
    const dims = [...f.tensor.dims];
    const reader = firstReader(f.g, f.name);
    if (!reader) continue;
    out.bytesBefore += tensorByteSize(f.tensor);
    out.factors++;
    out.params += data.length;
    const made: TensorProto[] = [];
    const value = model.uniqueName(`${f.name}/f32`);
    const stored = makeFloatTensor(model.uniqueName(`${f.name}/fp16`), dims, data, DataType.FLOAT16);
    made.push(stored);
    const node = newNode({ opType: 'Cast', name: model.uniqueName(`${f.name}/cast`), input: [stored.name!], output: [value], attribute: [intAttr('to', DataType.FLOAT)] });
    node.docString = `onnx-lr: --weights fp16: factor ${f.name} stored as fp16`;
    for (const t of made) { f.g.addInitializer(t); out.bytesAfter += tensorByteSize(t); }
    f.g.insertBefore(reader, [node]);
    undo.push({ g: f.g, name: f.name, tensor: f.tensor, value, nodes: [node] });
    // Every reader of the fp32 factor now reads the Cast's / DequantizeLinear's output.
    rewire(f.g, f.name, value);
  }
  for (const g of model.allGraphs()) g.removeUnusedInitializers();
  return out;
}

const kib = (b: number): string => `${(b / 1024).toFixed(1)} KiB`;

/** What --weights did, in one line for the report's notes. */
export function weightsNote(w: StoredWeights): string {
  const head = `--weights ${w.requested ?? w.mode}`;
  if (w.declined) return `${head}: ${w.declined}`;
  if (w.fallback) return `${head}: ${w.fallback}: ${weightsNote({ ...w, requested: undefined, fallback: undefined }).replace(/^--weights \w+: /, '')}`;
  const kept = w.kept > 0 ? `; ${w.kept} factor(s) already stored fp16/bf16 kept as they were` : '';
  if (w.factors === 0) return `${head}: no fp32 factors to store${kept}`;
  const as = w.mode === 'fp16' ? 'fp16 behind a Cast' : 'int8 with one scale per output channel (DequantizeLinear)';
  const opset = w.opsetFrom !== undefined ? `; the default opset was raised from ${w.opsetFrom} to 13 for per-channel DequantizeLinear (ops whose meaning changed rewritten to their opset-13 form)` : '';
  return `${head}: ${w.factors} new factor tensor(s), ${w.params} params, stored as ${as}: ${kib(w.bytesBefore)} -> ${kib(w.bytesAfter)}${kept}${opset}`;
}

/**
 * The factors as --weights stored them, with the fall-back the verification takes when OUT
 * fails (optimize/write-verify.ts): int8 → fp16 → fp32, each step restoring the fp32
 * factors first. `weights` is the report's record and is updated in place, so a report
 * that holds it shows what OUT finally stores.
 */
export interface FactorStorage {
  readonly weights: StoredWeights;
  /** What is stored now: 'fp32' once fallen back all the way (or when storing was declined). */
  readonly mode: WeightsMode;
  /** Stores the factors one step wider; `why` is what the verification said. Returns the new mode. */
  widen(why: string): WeightsMode;
}

export function factorStorage(model: Model, records: readonly ChainRecord[], mode: 'fp16' | 'int8', opts: { shapes?: ShapeMap; external?: ExternalBytes } = {}): FactorStorage {
  let current = storeReversibly(model, records, mode, opts);
  const weights = current.weights;
  let now: WeightsMode = weights.declined || weights.factors === 0 ? 'fp32' : mode;
  const replace = (w: StoredWeights): void => {
    for (const k of Object.keys(weights) as (keyof StoredWeights)[]) delete weights[k];
    Object.assign(weights, w);
  };
  return {
    weights,
    get mode() { return now; },
    widen(why) {
      if (now === 'fp32') return now;
      const kept = weights.kept;
      current.restore();
      const fallback = `${weights.fallback ? `${weights.fallback.replace(/; stored as fp16 instead$/, '')}, then ` : 'OUT failed the verification '}with ${now} factors (${why})`;
      if (now === 'int8') {
        current = storeReversibly(model, records, 'fp16', opts);
        now = current.weights.factors > 0 ? 'fp16' : 'fp32';
      } else {
        now = 'fp32';
      }
      replace(now === 'fp16'
        ? { ...current.weights, requested: mode, fallback: `${fallback}; stored as fp16 instead` }
        : { mode, factors: 0, params: 0, bytesBefore: 0, bytesAfter: 0, kept, requested: mode, fallback: `${fallback}; the factors are kept as the rewrite made them`, declined: `${fallback}; the factors are kept as the rewrite made them` });
      return now;
    },
  };
}
