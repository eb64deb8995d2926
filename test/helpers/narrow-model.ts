/** A small model with narrow conv heads, for the narrow-reorder tests. */
import { ModelBuilder } from '../../models/builder.js';
import { float32ToFloat16Bits } from '../../src/onnx/half.js';
import { DataType, newTensor, type ModelProto } from '../../src/onnx/schema.js';
import { createRng } from '../../src/util/rng.js';

/**
 * x [1,32,16,16] → head: Conv 32→1 3x3 → Resize ×4 (linear) → Sigmoid → mask, and the
 * head's logits also an output; Conv 32→4 → Relu → Add with itself → quad; Conv 32→2 read
 * only by a Conv 2→16 → deep; Conv 32→12 → Relu → wide12; Conv 32→32 → Relu → full.
 * `half`: the head's weight stored float16 behind a Cast; `size`: H and W (default 16).
 */
export function narrowModel(o: { opset?: number; half?: boolean; size?: number } = {}): ModelProto {
  const rng = createRng(11);
  const weights = (n: number): Float32Array => Float32Array.from({ length: n }, () => rng.normal() * 0.2);
  const S = o.size ?? 16;
  const b = new ModelBuilder({ opset: o.opset ?? 13 });
  const x = b.input('x', [1, 32, S, S]);
  const conv = (name: string, input: string, cout: number, cin = 32): string => b.node('Conv', [input, b.init(`${name}_w`, [cout, cin, 3, 3], weights(cout * cin * 9)), b.init(`${name}_b`, [cout], weights(cout))], { pads: [1, 1, 1, 1] }, { name });
  let head: string;
  if (o.half) {
    const w = weights(32 * 9);
    b.graph.initializer.push(newTensor({ name: 'head_w16', dims: [1, 32, 3, 3], dataType: DataType.FLOAT16, rawData: new Uint8Array(float32ToFloat16Bits(w).buffer) }));
    const wc = b.node('Cast', ['head_w16'], { to: DataType.FLOAT });
    head = b.node('Conv', [x, wc, b.init('head_b', [1], [0.1])], { pads: [1, 1, 1, 1] }, { name: 'head' });
  } else {
    head = conv('head', x, 1);
  }
  // At an opset before Resize (10) the model is only read, never run (narrowSites refuses opset < 5).
  const up = b.node('Resize', [head, '', b.init('scales', [4], [1, 1, 4, 4])], { mode: 'linear', coordinate_transformation_mode: 'half_pixel' });
  b.output(b.node('Sigmoid', [up]), [1, 1, 4 * S, 4 * S]);
  b.output(head, [1, 1, S, S]);
  const quad = b.node('Relu', [conv('quad', x, 4)]);
  b.output(b.node('Add', [quad, quad]), [1, 4, S, S]);
  b.output(conv('deep2', conv('deep', x, 2), 16, 2), [1, 16, S, S]);
  b.output(b.node('Relu', [conv('wide12', x, 12)]), [1, 12, S, S]);
  b.output(b.node('Relu', [conv('full', x, 32)]), [1, 32, S, S]);
  return b.build();
}


/** The same model cut down to its 32-channel conv and Relu: no narrow conv at all. */
export function wideModel(): ModelProto {
  const m = narrowModel();
  const g = m.graph!;
  g.node = g.node.filter((n) => n.name === 'full' || (n.opType === 'Relu' && n.input[0] === 'full_out0'));
  g.output = g.output.filter((o) => g.node.some((n) => n.output.includes(o.name!)));
  return m;
}
