/**
 * Constant weights that no layer holds: every node that reads a float constant with at
 * least two dims above 1 (a matrix or more: a learned table, a kernel, a positional
 * embedding), directly or through Cast/Identity, and that is neither a layer (findLayers)
 * nor a quantized layer. Issue 20 asks the report to account for every op holding a
 * constant weight; these are the ones no pass can take, each with why. Vectors and
 * scalars (biases, norm scales, shape and index constants) are not weights in this sense.
 * Pure: reads the graph only.
 */
import type { ConstRef } from './constants.js';
import type { Model } from './graph.js';
import { constantOrCastFed, numel, type LayerInfo } from './layers.js';
import { DataType, type NodeProto } from '../onnx/schema.js';

export interface OtherWeight {
  /** The node (its name, else its first output). */
  name: string;
  op: string;
  /** The constant's name and dims (the stored tensor when it goes through a Cast). */
  weightName: string;
  weightShape: number[];
  params: number;
  /** Nesting depth of the node's graph (0 = main graph). */
  subgraphDepth: number;
  reason: string;
}

const FLOATS = new Set<number>([DataType.FLOAT, DataType.FLOAT16, DataType.DOUBLE, DataType.BFLOAT16]);
/** Ops that only pass a constant on (their consumer is what reads it), or make one. */
const PASS_ON = new Set(['Cast', 'Identity', 'Constant', 'DequantizeLinear', 'QuantizeLinear']);

const isMatrix = (dims: readonly number[]): boolean => dims.filter((d) => d > 1).length >= 2;

/** Why no rewrite takes this node's constant weight. */
function reasonFor(n: NodeProto, dims: readonly number[], constInputs: number): string {
  const op = n.opType ?? '?';
  const domain = n.domain ?? '';
  if (domain !== '' && domain !== 'ai.onnx') return `${domain} ${op} with a constant weight: no rewrite applies to ops outside the ONNX domain`;
  if ((op === 'MatMul' || op === 'Gemm') && constInputs >= 2) return 'both operands are constants: not a layer (ONNX Runtime folds it), no rewrite applies to it';
  if (op === 'Gather') return `Gather on a table of rank ${dims.length}: the embedding rewrite applies to 2-D tables [V, D] only`;
  if (op === 'LSTM' || op === 'GRU' || op === 'RNN') return `${op} input weight [${dims.join(', ')}] is not [dirs, G·H, I]: no rewrite applies to it`;
  return `${op} reads a constant weight [${dims.join(', ')}]: no rewrite applies to ${op}`;
}

/**
 * Every node outside `layers` and `quantized` (node names) that reads a float constant of
 * two or more dims above 1, one entry per node (its largest such constant).
 */
export function findOtherWeights(model: Model, layers: readonly LayerInfo[], quantized: ReadonlySet<string> = new Set()): OtherWeight[] {
  const taken = new Set(layers.map((l) => l.node));
  const out: OtherWeight[] = [];
  for (const g of model.allGraphs()) {
    let depth = 0;
    for (let p = g.parent; p; p = p.parent) depth++;
    for (const n of g.nodes) {
      if (taken.has(n) || PASS_ON.has(n.opType ?? '')) continue;
      const name = n.name || n.output[0] || (n.opType ?? '?');
      if (quantized.has(name)) continue;
      let best: ConstRef | undefined;
      let constInputs = 0;
      for (const v of n.input) {
        const c = v ? constantOrCastFed(g, v) : undefined;
        if (!c) continue;
        constInputs++;
        const dims = c.tensor.dims.map(Number);
        if (!FLOATS.has(c.tensor.dataType ?? 0) || !isMatrix(dims)) continue;
        if (!best || numel(dims) > numel(best.tensor.dims.map(Number))) best = c;
      }
      if (!best) continue;
      const dims = best.tensor.dims.map(Number);
      out.push({ name, op: n.opType ?? '?', weightName: best.name, weightShape: dims, params: numel(dims), subgraphDepth: depth, reason: reasonFor(n, dims, constInputs) });
    }
  }
  return out;
}
