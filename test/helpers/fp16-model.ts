/** A small float16 conv graph and its float32 twin, for compute-float32's tests. */
import { ModelBuilder, valueInfo } from '../../models/builder.js';
import { float16BitsToFloat32, float32ToFloat16Bits } from '../../src/onnx/half.js';
import { AttributeType, DataType, newAttribute, newTensor, type ModelProto } from '../../src/onnx/schema.js';
import { createRng } from '../../src/util/rng.js';

const rng = createRng(5);
const W = Float32Array.from({ length: 6 * 4 * 9 }, () => rng.normal() * 0.3);
const B = Float32Array.from({ length: 6 }, () => rng.normal());
/** The values as float16 stores them. */
const rounded = (a: Float32Array): Float32Array => float16BitsToFloat32(float32ToFloat16Bits(a));

/**
 * x [1,4,8,8] float32 → Conv (3x3, pads 1) → Relu → Concat with ConstantOfShape(0.5) →
 * Mul by a Constant 2 → MaxPool 2x2 → y (float32) and Sigmoid → z (float16 when `half`).
 * `half`: the float16 graph (Casts, float16 weights and value types); else the same graph
 * in float32 with the float16-rounded weights.
 */
export function fp16ConvModel(half: boolean): ModelProto {
  const b = new ModelBuilder({ opset: 17 });
  const T = half ? DataType.FLOAT16 : DataType.FLOAT;
  const tensor = (name: string, dims: number[], data: Float32Array) => (half
    ? newTensor({ name, dims, dataType: DataType.FLOAT16, rawData: new Uint8Array(float32ToFloat16Bits(data).buffer) })
    : newTensor({ name, dims, dataType: DataType.FLOAT, rawData: new Uint8Array(rounded(data).buffer) }));
  const x = b.input('x', [1, 4, 8, 8]);
  b.graph.initializer.push(tensor('w', [6, 4, 3, 3], W), tensor('b', [6], B));
  const xh = half ? b.node('Cast', [x], { to: DataType.FLOAT16 }) : x;
  const c = b.node('Conv', [xh, 'w', 'b'], { pads: [1, 1, 1, 1] }, { name: 'conv' });
  const r = b.node('Relu', [c]);
  const shape = b.initInt64('shape', [4], [1, 2, 8, 8]);
  const k = b.node('ConstantOfShape', [shape], { value: newAttribute({ name: 'value', type: AttributeType.TENSOR, t: tensor('v', [1], Float32Array.of(0.5)) }) });
  const cat = b.node('Concat', [r, k], { axis: 1 });
  const s = b.node('Constant', [], { value: newAttribute({ name: 'value', type: AttributeType.TENSOR, t: tensor('two', [1], Float32Array.of(2)) }) });
  const m = b.node('Mul', [cat, s]);
  const p = b.node('MaxPool', [m], { kernel_shape: [2, 2], strides: [2, 2] });
  const y = half ? b.node('Cast', [p], { to: DataType.FLOAT }) : p;
  const z = b.node('Sigmoid', [p]);
  b.output(y, [1, 8, 4, 4]);
  b.output(z, [1, 8, 4, 4], T);
  for (const v of [c, r, cat, m, p]) b.graph.valueInfo.push(valueInfo(v, undefined, T));
  return b.build();
}

