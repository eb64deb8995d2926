/**
 * Small node factories used by the passes, aware of the model's opset: Gemm's C input is
 * optional only from opset 11, and before opset 7 a broadcast C needs `broadcast=1`.
 */
import { intAttr, floatAttr } from '../graph/attrs.js';
import { DataType, newNode, type NodeProto } from '../onnx/schema.js';
import { makeFloatTensor } from '../onnx/tensor.js';
import type { Graph } from '../graph/graph.js';
import type { PassContext } from './pass.js';

export interface Emitted { nodes: NodeProto[] }

/** Y = op(A)·op(B) without bias: MatMul when nothing is transposed, else Gemm. */
export function emitProduct(
  cx: PassContext, g: Graph, name: string, a: string, b: string, out: string,
  opts: { transA?: boolean; transB?: boolean; dataType: number },
): NodeProto[] {
  if (!opts.transA && !opts.transB) return [newNode({ opType: 'MatMul', name, input: [a, b], output: [out] })];
  const opset = cx.model.opsetVersion('') ?? 13;
  const attrs = [];
  if (opts.transA) attrs.push(intAttr('transA', 1));
  if (opts.transB) attrs.push(intAttr('transB', 1));
  const inputs = [a, b];
  if (opset < 11) {
    // C is required before opset 11: a zero scalar (broadcast) stands in for "no bias".
    const zero = cx.model.uniqueName(`${name}/zero`);
    g.addInitializer(makeFloatTensor(zero, [1], new Float32Array(1), opts.dataType));
    inputs.push(zero);
    attrs.push(floatAttr('beta', 0));
    if (opset < 7) attrs.push(intAttr('broadcast', 1));
  }
  return [newNode({ opType: 'Gemm', name, input: inputs, output: [out], attribute: attrs })];
}

export const FLOAT_TYPES = new Set<number>([DataType.FLOAT, DataType.FLOAT16, DataType.BFLOAT16, DataType.DOUBLE]);

export function docString(pass: string, detail: string): string {
  return `onnx-lr: ${pass}: ${detail}`;
}

/** ", data-aware output error 1.2e-3" for doc strings, or nothing. */
export function dataNote(dataError: number | undefined): string {
  return dataError === undefined ? '' : `, data-aware: output rel. error ${dataError.toExponential(2)} on calibration data`;
}
