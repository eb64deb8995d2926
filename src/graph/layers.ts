/**
 * Finds the decomposable layers of a model (Gemm, MatMul with a constant operand, 2-D or
 * batched, Conv, ConvTranspose, Gather on a constant table, LSTM/GRU/RNN with a constant
 * input weight) and counts their parameters and MACs. A recurrent op's layer is its input weight W
 * [dirs, gates·hidden, input]: params and MACs count W's part only (the recurrent weight
 * R, the bias and the elementwise gate math are not counted).
 *
 * A weight stored as fp16/bf16 and cast to float for the op (Cast(W16) → MatMul, the usual
 * fp16-storage export) counts as a constant weight too: the layer's `weight` is the stored
 * constant and `cast` the Cast between it and the op (src/rewrite/cast-weights.ts).
 */
import { DataType, type NodeProto } from '../onnx/schema.js';
import { attrInt } from './attrs.js';
import { resolveConstant, type ConstRef } from './constants.js';
import type { Graph, Model } from './graph.js';
import type { ShapeMap } from './shapes.js';

export type WeightLocation = 'initializer' | 'constant' | 'outer-initializer' | 'outer-constant';

/** A Cast from a stored low-precision weight to the type the op computes in. */
export interface CastLink {
  /** The Cast node (its input the stored constant, through Identity nodes or not). */
  node: NodeProto;
  /** Type the op computes in: the Cast's `to` (FLOAT). */
  to: number;
  /** Type the weight is stored in: FLOAT16 or BFLOAT16. */
  stored: number;
  /** The value the op reads: the Cast's output (or an Identity of it). */
  value: string;
}

export interface LayerInfo {
  name: string;
  op: string;
  weightName: string;
  weightShape: number[];
  params: number;
  /** Multiply-accumulates for one run at the known shapes, or undefined when shapes are unknown. */
  macs: number | undefined;
  /**
   * For a layer that runs no MACs (a Gather), the positions a rewrite's per-position cost
   * is counted over: looked-up tokens (numel of the output / D). Undefined elsewhere and
   * when shapes are unknown.
   */
  positions?: number;
  where: WeightLocation;
  /** Depth of the graph holding the node: 0 = main graph. */
  subgraphDepth: number;
  /** Which input of the node is the constant weight. */
  weightInput: number;
  node: NodeProto;
  graph: Graph;
  /** The constant weight; behind a Cast (`cast`), the stored low-precision tensor. */
  weight: ConstRef;
  /** Set when the weight reaches the op through a Cast to float (fp16/bf16 storage). */
  cast?: CastLink;
}

/** The element type the layer computes in: the Cast's target for a Cast-fed weight, else the weight's type. */
export const computeElemType = (layer: Pick<LayerInfo, 'weight' | 'cast'>): number => layer.cast?.to ?? layer.weight.tensor.dataType ?? 0;

const STORED_TYPES = new Set<number>([DataType.FLOAT16, DataType.BFLOAT16]);

/**
 * A value that is an fp16/bf16 constant cast to float: Cast(to FLOAT) of a constant,
 * Identity nodes allowed on both sides of the Cast, the Cast in this graph or an enclosing one.
 */
export function castFedConstant(g: Graph, v: string): { ref: ConstRef; cast: CastLink } | undefined {
  let graph: Graph | undefined = g;
  let name = v;
  for (let guard = 0; graph && guard < 10_000; guard++) {
    const p = graph.producer(name);
    if (p) {
      if ((p.domain ?? '') !== '' || !p.input[0]) return undefined;
      if (p.opType === 'Identity') { name = p.input[0]; continue; }
      if (p.opType !== 'Cast' || attrInt(p, 'to') !== DataType.FLOAT) return undefined;
      const ref = resolveConstant(graph, p.input[0]);
      const stored = ref?.tensor.dataType ?? 0;
      return ref && STORED_TYPES.has(stored) ? { ref, cast: { node: p, to: DataType.FLOAT, stored, value: v } } : undefined;
    }
    if (graph.defines(name) || graph.isGraphInput(name)) return undefined;
    graph = graph.parent;
  }
  return undefined;
}

/** A constant read directly, or stored fp16/bf16 behind a Cast to float (castFedConstant): the stored tensor. */
export function constantOrCastFed(g: Graph, v: string): ConstRef | undefined {
  return resolveConstant(g, v) ?? castFedConstant(g, v)?.ref;
}

/** Elements of a tensor of these dims. */
export const numel = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

function depthOf(g: Graph): number {
  let d = 0;
  for (let p = g.parent; p; p = p.parent) d++;
  return d;
}

/** Which input holds the constant weight, or undefined when the node is not decomposable. */
function weightInputOf(n: NodeProto, g: Graph): { index: number; ref: ConstRef; cast?: CastLink } | undefined {
  const tryIn = (i: number): { index: number; ref: ConstRef; cast?: CastLink } | undefined => {
    const v = n.input[i];
    if (!v) return undefined;
    const ref = resolveConstant(g, v);
    if (ref) return { index: i, ref };
    const c = castFedConstant(g, v);
    return c && { index: i, ...c };
  };
  switch (n.opType) {
    case 'Conv': case 'ConvTranspose': return tryIn(1);
    case 'Gemm': {
      const b = tryIn(1);
      if (b && b.ref.tensor.dims.length === 2) return b;
      const a = tryIn(0);
      return a && a.ref.tensor.dims.length === 2 ? a : undefined;
    }
    case 'MatMul': {
      // 2-D weights, and batched ones [B…, K, N] (3-D or more: one matrix per slice).
      const b = tryIn(1);
      if (b && b.ref.tensor.dims.length >= 2 && !tryIn(0)) return b;
      const a = tryIn(0);
      return a && a.ref.tensor.dims.length >= 2 && !tryIn(1) ? a : undefined;
    }
    case 'Gather': {
      const t = tryIn(0);
      return t && t.ref.tensor.dims.length === 2 ? t : undefined;
    }
    case 'LSTM': case 'GRU': case 'RNN': {
      const w = tryIn(1);
      return w && w.ref.tensor.dims.length === 3 ? w : undefined;
    }
    default: return undefined;
  }
}

/** MACs of one layer given the known shapes; `weightInput` says which input is the constant. */
export function layerMacs(n: NodeProto, weightShape: readonly number[], weightInput: number, shapes: ShapeMap | undefined): number | undefined {
  if (!shapes) return undefined;
  const out = n.output[0] ? shapes.get(n.output[0]) : undefined;
  switch (n.opType) {
    case 'Conv':
      // Each output element reads (S/g)·k… weights.
      return out ? numel(out) * numel(weightShape.slice(1)) : undefined;
    case 'ConvTranspose': {
      // Each input element scatters into (T/g)·k… outputs; the weight is [S, T/g, k…].
      const x = n.input[0] ? shapes.get(n.input[0]) : undefined;
      return x ? numel(x) * numel(weightShape.slice(1)) : undefined;
    }
    case 'Gemm': case 'MatMul': {
      if (!out) return undefined;
      if (weightShape.length > 2 && n.opType === 'MatMul') {
        // Batched [B…, K, N] (right) or [B…, M, K] (left): each output entry still costs K.
        return numel(out) * weightShape[weightShape.length - (weightInput === 1 ? 2 : 1)]!;
      }
      if (weightShape.length !== 2) return undefined;
      // Y has one entry per (row, column); each costs K multiplies.
      const trans = n.opType === 'Gemm' ? attrInt(n, weightInput === 1 ? 'transB' : 'transA', 0) : 0;
      const k = weightInput === 1 ? (trans ? weightShape[1] : weightShape[0]) : (trans ? weightShape[0] : weightShape[1]);
      return numel(out) * k;
    }
    case 'Gather': return 0;
    case 'LSTM': case 'GRU': case 'RNN': {
      // X is [seq, batch, I] (or [batch, seq, I]): each of its seq·batch input vectors meets
      // every direction's gates·hidden rows of W, I MACs each: numel(X)·dirs·gates·hidden.
      const x = n.input[0] ? shapes.get(n.input[0]) : undefined;
      return x && weightShape.length === 3 ? numel(x) * weightShape[0]! * weightShape[1]! : undefined;
    }
    default: return undefined;
  }
}

/** Rows a Gather looks up in one run: numel of its output over the row length D, else of its indices. */
function gatherPositions(n: NodeProto, weightShape: readonly number[], shapes: ShapeMap | undefined): number | undefined {
  const out = n.output[0] ? shapes?.get(n.output[0]) : undefined;
  const d = weightShape[1];
  if (out && d) return numel(out) / d;
  const idx = n.input[1] ? shapes?.get(n.input[1]) : undefined;
  return idx ? numel(idx) : undefined;
}

export function findLayers(model: Model, shapes?: ShapeMap): LayerInfo[] {
  const layers: LayerInfo[] = [];
  for (const g of model.allGraphs()) {
    for (const n of g.nodes) {
      if ((n.domain ?? '') !== '' && n.domain !== 'ai.onnx') continue;
      const w = weightInputOf(n, g);
      if (!w) continue;
      const weightShape = [...w.ref.tensor.dims];
      const where: WeightLocation = `${w.ref.outer ? 'outer-' : ''}${w.ref.kind}` as WeightLocation;
      const macs = layerMacs(n, weightShape, w.index, shapes);
      const positions = n.opType === 'Gather' ? gatherPositions(n, weightShape, shapes) : undefined;
      layers.push({
        name: n.name || n.output[0] || (n.opType ?? '?'),
        op: n.opType ?? '',
        weightName: w.ref.name,
        weightShape,
        params: numel(weightShape),
        macs,
        ...(positions !== undefined && { positions }),
        where,
        subgraphDepth: depthOf(g),
        weightInput: w.index,
        node: n,
        graph: g,
        weight: w.ref,
        ...(w.cast ? { cast: w.cast } : {}),
      });
    }
  }
  return layers;
}

const QUANTIZED_OPS = new Set(['ConvInteger', 'MatMulInteger', 'QLinearConv', 'QLinearMatMul', 'DynamicQuantizeLinear']);

/** The inputs of each op type that may hold a (dequantized) weight. */
const QDQ_WEIGHT_INPUTS: Readonly<Record<string, readonly number[]>> = {
  Conv: [1], ConvTranspose: [1], MatMul: [0, 1], Gemm: [0, 1], Gather: [0], LSTM: [1, 2], GRU: [1, 2], RNN: [1, 2],
};

/**
 * Quantized layers: integer convs/matmuls, and float ones whose weight is dequantized at
 * run time (DequantizeLinear → Conv). They are reported and left alone: decomposing
 * would need re-quantizing the factors.
 */
export function findQuantizedLayers(model: Model): { name: string; op: string; reason: string }[] {
  const out: { name: string; op: string; reason: string }[] = [];
  for (const g of model.allGraphs()) {
    for (const n of g.nodes) {
      const name = n.name || n.output[0] || (n.opType ?? '?');
      if (QUANTIZED_OPS.has(n.opType ?? '') && n.opType !== 'DynamicQuantizeLinear') {
        out.push({ name, op: n.opType!, reason: `quantized layer (${n.opType}): not decomposed` });
        continue;
      }
      const wIn = QDQ_WEIGHT_INPUTS[n.opType ?? ''];
      if (!wIn) continue;
      for (const i of wIn) {
        let p = n.input[i] ? g.producer(n.input[i]) : undefined;
        // An fp16 model's int8 weight reads DequantizeLinear → Cast(fp16) → op.
        let cast = false;
        while (p && (p.opType === 'Identity' || p.opType === 'Cast') && p.input[0]) {
          cast ||= p.opType === 'Cast';
          p = g.producer(p.input[0]);
        }
        if (p?.opType === 'DequantizeLinear' && p.input[0] && resolveConstant(g, p.input[0])) {
          out.push({ name, op: n.opType!, reason: `quantized weight (DequantizeLinear → ${cast ? 'Cast → ' : ''}${n.opType}): not decomposed` });
          break;
        }
      }
    }
  }
  return out;
}
