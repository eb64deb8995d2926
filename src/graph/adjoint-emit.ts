/**
 * Node factories for a backward graph appended to a model: the nodes must use the forms
 * the model's opset has (ReduceSum's axes became an input at 13, Slice's at 10, Pad's at
 * 11, the other reductions' at 18; ScatterElements replaced Scatter at 11).
 */
import { DataType, newNode, type AttributeProto, type TensorProto } from '../onnx/schema.js';
import { makeFloatTensor, makeInt64Tensor } from '../onnx/tensor.js';
import { intAttr, intsAttr } from './attrs.js';

export type Reduction = 'ReduceSum' | 'ReduceSumSquare' | 'ReduceMean';

export class AdjointEmitter {
  readonly nodes: ReturnType<typeof newNode>[] = [];
  readonly initializers: TensorProto[] = [];
  private count = 0;

  constructor(readonly opset: number, private readonly taken: ReadonlySet<string>) {}

  /** A value name not used in the model. */
  fresh(hint: string): string {
    for (;;) {
      const n = `onnx-lr/adjoint/${hint}/${this.count++}`;
      if (!this.taken.has(n)) return n;
    }
  }

  op(opType: string, input: readonly string[], attribute: AttributeProto[] = [], outputs = 1): string[] {
    const output = Array.from({ length: outputs }, () => this.fresh(opType));
    this.nodes.push(newNode({ opType, name: this.fresh(`${opType}_node`), input: [...input], output, attribute }));
    return output;
  }

  one(opType: string, input: readonly string[], attribute: AttributeProto[] = []): string {
    return this.op(opType, input, attribute)[0]!;
  }

  f32(values: ArrayLike<number>, dims: readonly number[] = []): string {
    const name = this.fresh('const');
    this.initializers.push(makeFloatTensor(name, dims, Float32Array.from(values)));
    return name;
  }

  i64(values: readonly number[], dims: readonly number[] = [values.length]): string {
    const name = this.fresh('const');
    this.initializers.push(makeInt64Tensor(name, dims, values));
    return name;
  }

  toFloat(x: string): string {
    return this.one('Cast', [x], [intAttr('to', DataType.FLOAT)]);
  }

  mul(a: string, b: string): string { return this.one('Mul', [a, b]); }

  reshape(x: string, dims: readonly number[]): string {
    return this.one('Reshape', [x, this.i64(dims)]);
  }

  /** A reduction over `axes`, or over every axis when `axes` is undefined. */
  reduce(op: Reduction, x: string, axes: readonly number[] | undefined, keepdims: boolean): string {
    const keep = intAttr('keepdims', keepdims ? 1 : 0);
    if (!axes) return this.one(op, [x], [keep]);
    const asInput = op === 'ReduceSum' ? this.opset >= 13 : this.opset >= 18;
    return asInput ? this.one(op, [x, this.i64(axes)], [keep]) : this.one(op, [x], [intsAttr('axes', axes), keep]);
  }

  slice(x: string, starts: readonly number[], ends: readonly number[], axes: readonly number[]): string {
    if (this.opset < 10) return this.one('Slice', [x], [intsAttr('starts', starts), intsAttr('ends', ends), intsAttr('axes', axes)]);
    return this.one('Slice', [x, this.i64(starts), this.i64(ends), this.i64(axes)]);
  }

  /** Zero padding, pads = [begin…, end…] over every axis. */
  pad(x: string, pads: readonly number[]): string {
    if (this.opset < 11) return this.one('Pad', [x], [intsAttr('pads', pads)]);
    return this.one('Pad', [x, this.i64(pads)]);
  }

  scatter(data: string, indices: string, updates: string, axis: number): string {
    return this.one(this.opset < 11 ? 'Scatter' : 'ScatterElements', [data, indices, updates], [intAttr('axis', axis)]);
  }
}
