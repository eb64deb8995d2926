/**
 * A small builder for synthetic ONNX models used by tests and benchmarks.
 *   const b = new ModelBuilder({ opset: 13 });
 *   const x = b.input('x', [1, 8]);
 *   const y = b.node('MatMul', [x, b.init('w', [8, 4], w)]);
 *   b.output(y);
 *   const bytes = encodeModel(b.build());
 */
import { floatAttr, intAttr, intsAttr, stringAttr } from '../src/graph/attrs.js';
import {
  AttributeType, DataType, newAttribute, newGraph, newModel, newNode, newTensor, newValueInfo,
  type AttributeProto, type GraphProto, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto,
} from '../src/onnx/schema.js';

/** A GraphProto becomes a graph attribute (If/Loop bodies). */
export type AttrValue = number | number[] | string | { float: number } | GraphProto | AttributeProto;
export type Dim = number | string;

export function valueInfo(name: string, dims?: readonly Dim[], elemType: number = DataType.FLOAT): ValueInfoProto {
  return newValueInfo({
    name,
    type: {
      tensorType: {
        elemType,
        shape: dims ? { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } : undefined,
      },
    },
  });
}

export function floatTensor(name: string, dims: readonly number[], data: ArrayLike<number>): TensorProto {
  const f = Float32Array.from(data);
  return newTensor({ name, dims: [...dims], dataType: DataType.FLOAT, rawData: new Uint8Array(f.buffer) });
}

export function int64Tensor(name: string, dims: readonly number[], data: readonly number[]): TensorProto {
  const b = BigInt64Array.from(data.map((x) => BigInt(x)));
  return newTensor({ name, dims: [...dims], dataType: DataType.INT64, rawData: new Uint8Array(b.buffer) });
}

function toAttr(name: string, v: AttrValue): AttributeProto {
  if (typeof v === 'number') return intAttr(name, v);
  if (typeof v === 'string') return stringAttr(name, v);
  if (Array.isArray(v)) return intsAttr(name, v);
  if ('float' in v) return floatAttr(name, v.float);
  if ('node' in v) return newAttribute({ name, type: AttributeType.GRAPH, g: v });
  return v;
}

export class GraphBuilder {
  readonly graph: GraphProto;
  private counter = 0;
  constructor(name = 'g') {
    this.graph = newGraph({ name });
  }

  input(name: string, dims?: readonly Dim[], elemType: number = DataType.FLOAT): string {
    this.graph.input.push(valueInfo(name, dims, elemType));
    return name;
  }

  output(name: string, dims?: readonly Dim[], elemType: number = DataType.FLOAT): string {
    this.graph.output.push(valueInfo(name, dims, elemType));
    return name;
  }

  init(name: string, dims: readonly number[], data: ArrayLike<number>): string {
    this.graph.initializer.push(floatTensor(name, dims, data));
    return name;
  }

  initInt64(name: string, dims: readonly number[], data: readonly number[]): string {
    this.graph.initializer.push(int64Tensor(name, dims, data));
    return name;
  }

  /** Adds a node; returns its first output name (or all of them with `outputs`). */
  node(opType: string, inputs: readonly string[], attrs: Record<string, AttrValue> = {}, opts: { name?: string; outputs?: number; domain?: string } = {}): string {
    return this.nodeMulti(opType, inputs, attrs, opts)[0];
  }

  nodeMulti(opType: string, inputs: readonly string[], attrs: Record<string, AttrValue> = {}, opts: { name?: string; outputs?: number; domain?: string } = {}): string[] {
    const id = this.counter++;
    const name = opts.name ?? `${opType.toLowerCase()}_${id}`;
    const outputs = Array.from({ length: opts.outputs ?? 1 }, (_, k) => `${name}_out${k}`);
    const n: NodeProto = newNode({
      opType, name, input: [...inputs], output: outputs,
      attribute: Object.entries(attrs).map(([k, v]) => toAttr(k, v)),
    });
    if (opts.domain !== undefined) n.domain = opts.domain;
    this.graph.node.push(n);
    return outputs;
  }
}

export class ModelBuilder extends GraphBuilder {
  constructor(readonly opts: { opset?: number; irVersion?: number; name?: string } = {}) {
    super(opts.name ?? 'main');
  }

  build(): ModelProto {
    return newModel({
      irVersion: this.opts.irVersion ?? 8,
      producerName: 'onnx-lr-test',
      opsetImport: [{ domain: '', version: this.opts.opset ?? 13 }],
      graph: this.graph,
    });
  }
}
