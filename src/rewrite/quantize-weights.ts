/**
 * int8 for every weight, without any low-rank rewrite: the constant weight of each layer
 * findLayers lists (Conv, ConvTranspose, Gemm, MatMul, Gather tables, LSTM/GRU/RNN input
 * weights) stored as int8 with one scale per output channel behind DequantizeLinear
 * (quantize-store.ts), the weight-only QDQ that ORT's quantizer writes. The baseline the
 * bench compares low-rank and low-rank + int8 factors against (tools/bench-weights.ts);
 * `only` restricts it (e.g. to the chain nodes a rewrite emitted, as --weights int8 does).
 *
 * Left as they are, each with its reason: weights of an enclosing graph, weights behind
 * Identity nodes or a Cast (stored fp16/bf16 for an fp32 op), types other than fp32/fp16,
 * scalars, and every weight when the model's opset cannot be raised to 13.
 */
import { findLayers, type LayerInfo } from '../graph/layers.js';
import type { Model } from '../graph/graph.js';
import type { ShapeMap } from '../graph/shapes.js';
import { DataType, type TensorProto } from '../onnx/schema.js';
import type { ExternalBytes } from '../onnx/tensor.js';
import { outputAxis } from './quantize-factors.js';
import { ensurePerChannelOpset, INT8_SOURCE_TYPES, storeInt8 } from './quantize-store.js';

export interface QuantizedWeights {
  /** Weight tensors stored as int8, their parameters, and their bytes before and after. */
  tensors: number;
  params: number;
  bytesBefore: number;
  bytesAfter: number;
  /** Layers whose weight was left as it was, with why. */
  kept: { name: string; reason: string }[];
  /** The default opset was raised from this version to 13. */
  opsetFrom?: number;
  /** Why nothing was quantized (an opset that cannot be raised). */
  declined?: string;
}

/** Stores every eligible layer weight of `model` (those `only` accepts) as int8 QDQ, in place (see the top of the file). */
export function quantizeAllWeights(model: Model, opts: { shapes?: ShapeMap; external?: ExternalBytes; only?: (l: LayerInfo) => boolean } = {}): QuantizedWeights {
  const out: QuantizedWeights = { tensors: 0, params: 0, bytesBefore: 0, bytesAfter: 0, kept: [] };
  const layers = findLayers(model, opts.shapes).filter((l) => opts.only?.(l) ?? true);
  const eligible = layers.filter((l) => {
    const why = l.cast ? `stored ${l.cast.stored === DataType.BFLOAT16 ? 'bf16' : 'fp16'} behind a Cast`
      : l.weight.outer ? 'a weight of an enclosing graph'
        : l.weight.via.length > 0 ? 'a weight behind Identity nodes'
          : !INT8_SOURCE_TYPES.has(l.weight.tensor.dataType ?? 0) ? `weight type ${l.weight.tensor.dataType} is not fp32 or fp16`
            : l.weightShape.length === 0 ? 'a scalar weight' : undefined;
    if (why) out.kept.push({ name: l.name, reason: why });
    return !why;
  });
  if (eligible.length === 0) return out;
  const raised = ensurePerChannelOpset(model, opts.shapes);
  if (raised.problem) {
    out.kept.push(...eligible.map((l) => ({ name: l.name, reason: 'opset cannot be raised to 13' })));
    return { ...out, declined: `int8 weights need per-channel DequantizeLinear (opset 13): ${raised.problem}` };
  }
  if (raised.from !== undefined) out.opsetFrom = raised.from;
  // A weight read by several layers is stored once (scales along the first reader's output axis).
  const done = new Set<TensorProto>();
  for (const l of eligible) {
    if (done.has(l.weight.tensor)) continue;
    done.add(l.weight.tensor);
    const axis = outputAxis(l.node, l.weightInput, l.weightShape.length);
    const s = storeInt8(model, l.weight.graph, l.weight.name, l.weight.tensor, axis, opts.external);
    if (!s) continue;
    out.tensors++;
    out.params += s.params;
    out.bytesBefore += s.bytesBefore;
    out.bytesAfter += s.bytesAfter;
    // A Constant node read by nothing now goes (other dead nodes of the model stay as they were).
    const c = l.weight.node;
    if (c && l.weight.graph.consumers(l.weight.name).length === 0 && !l.weight.graph.isGraphOutput(l.weight.name)) l.weight.graph.replaceNode(c, []);
  }
  for (const g of model.allGraphs()) g.removeUnusedInitializers();
  return out;
}
