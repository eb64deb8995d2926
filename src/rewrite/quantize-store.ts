/**
 * Storing one constant weight as int8 behind DequantizeLinear (weight-only QDQ), shared by
 * `--weights int8` (the new factors, quantize-factors.ts) and int8 for every weight
 * (quantize-weights.ts):
 *
 *   W [..] fp32   →  DequantizeLinear(Q [..] int8, s [C] fp32, 0 [C] int8; axis)
 *   W [..] fp16   →  Cast(DequantizeLinear(Q, s, 0; axis), to FLOAT16)
 *
 * one scale per output channel (src/linalg/quantize.ts). An fp16 weight goes through fp32
 * because opset-13 DequantizeLinear outputs fp32 only (fp16 scales need opset 19); the Cast
 * keeps the graph computing in fp16 as before. Every reader of W then reads the new value.
 */
import { intAttr } from '../graph/attrs.js';
import type { Graph, Model } from '../graph/graph.js';
import { quantizeInt8PerChannel } from '../linalg/quantize.js';
import { DataType, newNode, newTensor, type NodeProto, type TensorProto } from '../onnx/schema.js';
import { makeFloatTensor, readTensorFloat, tensorByteSize, type ExternalBytes } from '../onnx/tensor.js';
import { opsetRaiseProblem, PER_CHANNEL_OPSET, raiseOpset } from './quantize-opset.js';
import type { ShapeMap } from '../graph/shapes.js';

/** Weight types int8 storage takes: what the op computes in is kept (fp16 through a Cast). */
export const INT8_SOURCE_TYPES: ReadonlySet<number> = new Set([DataType.FLOAT, DataType.FLOAT16]);

/** Marks the nodes this file writes: inspect tells int8 QDQ weights by it and by their shape. */
export const QDQ_DOC = 'onnx-lr: int8 weight';

/**
 * Raises the model's default opset to 13 for per-channel DequantizeLinear when it is lower
 * and that is safe. Returns the version it was raised from, `undefined` when nothing was
 * needed, or `{ problem }` when it cannot be raised (the int8 storage is then declined).
 */
export function ensurePerChannelOpset(model: Model, shapes?: ShapeMap): { from?: number; problem?: string } {
  const from = model.opsetVersion('') ?? 1;
  if (from >= PER_CHANNEL_OPSET) return {};
  const problem = opsetRaiseProblem(model);
  if (problem) return { problem };
  raiseOpset(model, shapes);
  return { from };
}

/** Points every reader of `from` in `g` (and its subgraphs, which see it) at `to`. */
export function rewire(g: Graph, from: string, to: string): void {
  for (const n of g.consumers(from)) n.input = n.input.map((x) => (x === from ? to : x));
  g.invalidate();
}

/** The first node of `g` (graph order) that reads `v`. */
export function firstReader(g: Graph, v: string): NodeProto | undefined {
  const readers = new Set(g.consumers(v));
  return g.nodes.find((n) => readers.has(n));
}

export interface Int8Stored {
  /** Parameters quantized, and bytes of the weight before and of Q, scales and zero points after. */
  params: number;
  bytesBefore: number;
  bytesAfter: number;
  /** The value the old readers read now, and the nodes that make it (for undoing, quantize-factors.ts). */
  value: string;
  nodes: NodeProto[];
}

/**
 * Replaces the constant `tensor` that value `name` of graph `g` holds (an initializer, or a
 * Constant node's output) by int8 behind DequantizeLinear along `axis`, in place. The
 * caller checks the type (INT8_SOURCE_TYPES) and the opset (ensurePerChannelOpset). The
 * old constant is left for the caller's clean-up (removeUnusedInitializers, removeDeadNodes).
 */
export function storeInt8(model: Model, g: Graph, name: string, tensor: TensorProto, axis: number, external?: ExternalBytes, doc = QDQ_DOC): Int8Stored | undefined {
  const reader = firstReader(g, name);
  if (!reader) return undefined;
  const data = readTensorFloat(tensor, external);
  const dims = [...tensor.dims];
  const p = quantizeInt8PerChannel(data, dims, axis);
  const q = newTensor({ name: model.uniqueName(`${name}/q`), dims, dataType: DataType.INT8, rawData: new Uint8Array(p.q.buffer, p.q.byteOffset, p.q.byteLength) });
  const scale = makeFloatTensor(model.uniqueName(`${name}/scale`), [p.scales.length], p.scales, DataType.FLOAT);
  const zero = newTensor({ name: model.uniqueName(`${name}/zero`), dims: [p.scales.length], dataType: DataType.INT8, rawData: new Uint8Array(p.scales.length) });
  const half = tensor.dataType === DataType.FLOAT16;
  const deq = model.uniqueName(`${name}/dq`);
  const nodes = [newNode({ opType: 'DequantizeLinear', name: model.uniqueName(`${name}/dequantize`), input: [q.name!, scale.name!, zero.name!], output: [deq], attribute: [intAttr('axis', axis)] })];
  let value = deq;
  if (half) {
    value = model.uniqueName(`${name}/dq16`);
    nodes.push(newNode({ opType: 'Cast', name: model.uniqueName(`${name}/cast16`), input: [deq], output: [value], attribute: [intAttr('to', DataType.FLOAT16)] }));
  }
  for (const n of nodes) n.docString = `${doc}: ${name} stored as int8 with one scale per output channel${half ? ', cast back to fp16' : ''}`;
  let bytesAfter = 0;
  for (const t of [q, scale, zero]) { g.addInitializer(t); bytesAfter += tensorByteSize(t); }
  g.insertBefore(reader, nodes);
  rewire(g, name, value);
  // The DequantizeLinear reads Q, not `name`: rewire touched only the old readers.
  return { params: data.length, bytesBefore: tensorByteSize(tensor), bytesAfter, value, nodes };
}
