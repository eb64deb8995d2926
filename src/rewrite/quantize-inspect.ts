/**
 * The stored type of each layer's weight, for `onnx-lr inspect`: fp32 / fp16 / bf16 as
 * given to the op, fp16 / bf16 through a Cast to float (the fp16-storage export, and
 * `--weights fp16` factors), or int8 behind DequantizeLinear (weight-only QDQ, as ORT's
 * quantizer and `--weights int8` write it, optionally cast back to fp16 for an fp16
 * model). Layers findLayers lists say their type; the QDQ ones, which are not decomposable
 * (their weight is not a constant), are found here.
 */
import { attrInt } from '../graph/attrs.js';
import { resolveConstant } from '../graph/constants.js';
import type { Graph, Model } from '../graph/graph.js';
import { layerMacs, numel, type LayerInfo } from '../graph/layers.js';
import type { ShapeMap } from '../graph/shapes.js';
import { DataType, type NodeProto } from '../onnx/schema.js';
import { weightInputs } from './quantize-factors.js';

const TYPE_NAMES: Readonly<Record<number, string>> = {
  [DataType.FLOAT]: 'fp32', [DataType.FLOAT16]: 'fp16', [DataType.BFLOAT16]: 'bf16', [DataType.DOUBLE]: 'fp64',
  [DataType.INT8]: 'int8', [DataType.UINT8]: 'uint8', [DataType.INT4]: 'int4', [DataType.UINT4]: 'uint4',
};

export const typeName = (dt: number): string => TYPE_NAMES[dt] ?? `type ${dt}`;

/** A decomposable layer's stored weight type: "fp32", "fp16", "fp16 via Cast", … */
export function storedType(l: Pick<LayerInfo, 'weight' | 'cast'>): string {
  return l.cast ? `${typeName(l.cast.stored)} via Cast` : typeName(l.weight.tensor.dataType ?? 0);
}

export interface QdqLayer {
  name: string;
  op: string;
  /** The quantized tensor's dims. */
  weightShape: number[];
  params: number;
  macs: number | undefined;
  /** "int8 QDQ", "uint8 QDQ", with ", cast to fp16" when a Cast follows the DequantizeLinear. */
  stored: string;
  subgraphDepth: number;
}

const LAYER_OPS = new Set(['MatMul', 'Gemm', 'Conv', 'ConvTranspose', 'Gather', 'LSTM', 'GRU', 'RNN']);
const QUANT_TYPES = new Set<number>([DataType.INT8, DataType.UINT8, DataType.INT4, DataType.UINT4]);

/** The DequantizeLinear of a constant integer tensor behind value `v` (Identity and one Cast allowed), or undefined. */
function dequantized(g: Graph, v: string): { dq: NodeProto; dims: number[]; type: number; castTo?: number } | undefined {
  let name = v;
  let castTo: number | undefined;
  for (let guard = 0; guard < 100; guard++) {
    const p = g.producer(name);
    if (!p || (p.domain ?? '') !== '' || !p.input[0]) return undefined;
    if (p.opType === 'Identity') { name = p.input[0]; continue; }
    if (p.opType === 'Cast' && castTo === undefined) { castTo = attrInt(p, 'to'); name = p.input[0]; continue; }
    if (p.opType !== 'DequantizeLinear') return undefined;
    const q = resolveConstant(g, p.input[0]);
    const type = q?.tensor.dataType ?? 0;
    if (!q || !QUANT_TYPES.has(type)) return undefined;
    return { dq: p, dims: [...q.tensor.dims], type, ...(castTo !== undefined && { castTo }) };
  }
  return undefined;
}

/** Each layer-op node whose weight (input `index`) is a constant integer tensor behind DequantizeLinear. */
function* qdqWeights(model: Model): Generator<{ g: Graph; n: NodeProto; index: number; found: NonNullable<ReturnType<typeof dequantized>> }> {
  for (const g of model.allGraphs()) {
    for (const n of g.nodes) {
      if ((n.domain ?? '') !== '' || !LAYER_OPS.has(n.opType ?? '')) continue;
      for (const index of weightInputs(n)) {
        const v = n.input[index];
        const found = v ? dequantized(g, v) : undefined;
        if (found) { yield { g, n, index, found }; break; }
      }
    }
  }
}

/** The nodes of the QDQ layers: their shapes give the layers' MACs (graph/layer-shapes.ts shapesFor). */
export const qdqLayerNodes = (model: Model): NodeProto[] => [...qdqWeights(model)].map((w) => w.n);

/** The layers whose weight is a constant integer tensor behind DequantizeLinear. */
export function findQdqLayers(model: Model, shapes?: ShapeMap): QdqLayer[] {
  const depth = (g: Graph): number => { let d = 0; for (let p = g.parent; p; p = p.parent) d++; return d; };
  return [...qdqWeights(model)].map(({ g, n, index, found }) => ({
    name: n.name || n.output[0] || (n.opType ?? '?'), op: n.opType!, weightShape: found.dims, params: numel(found.dims),
    macs: layerMacs(n, found.dims, index, shapes),
    stored: `${typeName(found.type)} QDQ${found.castTo !== undefined && found.castTo !== DataType.FLOAT ? `, cast to ${typeName(found.castTo)}` : ''}`,
    subgraphDepth: depth(g),
  }));
}
