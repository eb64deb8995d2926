/**
 * Weight gradients in the backward graph (src/graph/weight-gradients.ts): for every Conv,
 * ConvTranspose, MatMul and Gemm form the refit meets, ⟨∂W, U⟩ computed in ORT must equal
 * d/dε ⟨v, y(W + εU)⟩ measured by central differences of forward runs in ORT with the
 * weight moved, for random v and U; the same for biases.
 */
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { buildAdjoint } from '../../src/graph/adjoint.js';
import { Model } from '../../src/graph/graph.js';
import { encodeModel } from '../../src/onnx/codec.js';
import type { ModelProto } from '../../src/onnx/schema.js';
import { makeFloatTensor, readTensorFloat } from '../../src/onnx/tensor.js';
import { runAll } from '../../src/optimize/output-error.js';
import { captureModel } from '../../src/optimize/submodel.js';
import { createRng } from '../../src/util/rng.js';
import type { Feeds, HostTensor } from '../../src/verify/tensor.js';

const rng = createRng(23);
const randn = (n: number, s = 1): number[] => Array.from({ length: n }, () => s * rng.normal());
const tensor = (dims: readonly number[], data: ArrayLike<number>): HostTensor => ({ type: 'float32', dims: [...dims], data: Float32Array.from(data) });
const dot = (a: ArrayLike<number>, b: ArrayLike<number>): number => { let s = 0; for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!; return s; };

async function run(proto: ModelProto, feed: Feeds, names?: string[]) {
  const r = await runAll({ bytes: encodeModel(names ? captureModel(proto, names) : proto) }, [feed]);
  if (!r.ok) throw new Error(r.error.message);
  return r.value[0]!;
}

/** `proto` with initializer `name` replaced by `data`. */
function withWeight(proto: ModelProto, name: string, data: ArrayLike<number>): ModelProto {
  const g = proto.graph!;
  return { ...proto, graph: { ...g, initializer: g.initializer.map((t) => (t.name === name ? makeFloatTensor(name, t.dims.map(Number), Float32Array.from(data)) : t)) } };
}

/** Checks every weight and bias gradient of the layers producing `layers` against central differences. */
async function checkWeights(proto: ModelProto, xDims: number[], layers: string[], output: string, eps = 1e-2): Promise<void> {
  const feed: Feeds = { x: tensor(xDims, randn(xDims.reduce((a, b) => a * b, 1))) };
  const names = proto.graph!.node.flatMap((n) => n.output).filter((o) => o);
  const all = await run(proto, feed, names);
  const dims = new Map<string, readonly number[]>([['x', xDims], ...Object.entries(all).map(([k, t]) => [k, t.dims] as const)]);
  const float32 = new Set(dims.keys());
  const model = new Model(proto);
  const adj = buildAdjoint(proto, model.root, { targets: layers, outputs: [output], dims, float32, weights: new Set(layers) });
  expect([...adj.uncovered]).toEqual([]);
  expect([...adj.weightGradients.keys()].sort()).toEqual([...layers].sort());
  const v = randn(all[output]!.data.length);
  const grads = await run(adj.model, { ...feed, [adj.cotangents.get(output)!]: tensor(dims.get(output)!, v) });
  let checked = 0;
  for (const [t, wg] of adj.weightGradients) {
    const node = model.root.producer(t)!;
    const pairs: [string, string][] = [[node.input[1]!, wg.weight]];
    if (wg.bias) pairs.push([node.input[2]!, wg.bias]);
    for (const [param, out] of pairs) {
      const w0 = readTensorFloat(model.root.initializer(param)!);
      const g = grads[out]!.data as Float32Array;
      expect(g).toHaveLength(w0.length);
      const u = randn(w0.length);
      const at = async (s: number) => dot(v, (await run(withWeight(proto, param, w0.map((w, i) => w + s * eps * u[i]!)), feed))[output]!.data as Float32Array);
      const fd = ((await at(1)) - (await at(-1))) / (2 * eps);
      const exact = dot(g, u);
      expect(Math.abs(fd - exact), `${param}: ${exact} against ${fd}`).toBeLessThan(1e-2 * Math.max(1, Math.abs(exact)));
      checked++;
    }
  }
  expect(checked).toBeGreaterThanOrEqual(layers.length);
}

describe('weight gradients in ORT against central differences', () => {
  it('Convs: strided and padded with a bias, grouped and dilated, depthwise SAME_UPPER strided (rows the stride leaves unread), 1-D', async () => {
    const b = new ModelBuilder({ opset: 15 });
    const x = b.input('x', [2, 4, 10, 9]);
    const c1 = b.node('Conv', [x, b.init('w1', [6, 4, 3, 3], randn(216, 0.3)), b.init('b1', [6], randn(6))], { strides: [2, 2], pads: [1, 0, 1, 2] });
    const c2 = b.node('Conv', [b.node('Tanh', [c1]), b.init('w2', [6, 3, 3, 2], randn(108, 0.3)), b.init('b2', [6], randn(6))], { group: 2, dilations: [2, 1], pads: [2, 1, 1, 0] });
    const c3 = b.node('Conv', [c2, b.init('w3', [6, 1, 3, 3], randn(54, 0.3))], { group: 6, strides: [2, 2], auto_pad: 'SAME_UPPER' });
    const flat = b.node('Reshape', [c3, b.initInt64('sh', [3], [2, 6, -1])]);
    const c4 = b.node('Conv', [flat, b.init('w4', [5, 6, 2], randn(60, 0.3)), b.init('b4', [5], randn(5))], { strides: [2], pads: [1, 0] });
    b.output(b.node('Sigmoid', [c4]));
    const proto = b.build();
    await checkWeights(proto, [2, 4, 10, 9], [c1, c2, c3, c4], proto.graph!.output[0]!.name!);
  });

  it('ConvTransposes: strided with output_padding and a bias, grouped and dilated with uneven pads, 1-D', async () => {
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [2, 4, 5, 6]);
    const t1 = b.node('ConvTranspose', [x, b.init('v1', [4, 6, 3, 3], randn(216, 0.3)), b.init('d1', [6], randn(6))], { strides: [2, 2], pads: [1, 0, 1, 1], output_padding: [1, 0] });
    const t2 = b.node('ConvTranspose', [b.node('Tanh', [t1]), b.init('v2', [6, 2, 2, 3], randn(72, 0.3))], { group: 3, dilations: [2, 1], pads: [0, 1, 1, 0] });
    const flat = b.node('Reshape', [t2, b.initInt64('sh', [3], [2, 6, -1])]);
    const t3 = b.node('ConvTranspose', [flat, b.init('v3', [6, 3, 2], randn(36, 0.3)), b.init('d3', [3], randn(3))], { strides: [3] });
    b.output(b.node('Sigmoid', [t3]));
    const proto = b.build();
    await checkWeights(proto, [2, 4, 5, 6], [t1, t2, t3], proto.graph!.output[0]!.name!);
  });

  it('MatMul on a 3-D input, Gemm with transA and transB and a bias of one row, Gemm in opset 9 (C required)', async () => {
    for (const opset of [9, 13]) {
      const b = new ModelBuilder({ opset });
      const x = b.input('x', [2, 3, 5]);
      const m = b.node('MatMul', [x, b.init('wm', [5, 4], randn(20, 0.5))]);
      const f = b.node('Reshape', [b.node('Tanh', [m]), b.initInt64('sh', [2], [6, 4])]);
      const g1 = b.node('Gemm', [f, b.init('wg', [3, 4], randn(12, 0.5)), b.init('cg', [3], randn(3))], { transB: 1, alpha: { float: 0.7 }, beta: { float: 1.5 } });
      const t = b.node('Transpose', [g1], { perm: [1, 0] });
      const g2 = b.node('Gemm', [t, b.init('wh', [3, 2], randn(6, 0.5)), b.init('ch', [1, 2], randn(2))], { transA: 1 });
      b.output(b.node('Tanh', [g2]));
      const proto = b.build();
      await checkWeights(proto, [2, 3, 5], [m, g1, g2], proto.graph!.output[0]!.name!);
    }
  });

  it('a Gemm whose C is a column [M, 1] with as many rows as columns: its weight gradient, no bias gradient (it sums the other way)', async () => {
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [4, 3]);
    const y = b.node('Gemm', [x, b.init('w', [3, 4], randn(12, 0.5)), b.init('c', [4, 1], randn(4))]);
    b.output(b.node('Tanh', [y]));
    const proto = b.build();
    await checkWeights(proto, [4, 3], [y], proto.graph!.output[0]!.name!);
    const dims = new Map<string, readonly number[]>([['x', [4, 3]], [y, [4, 4]], [proto.graph!.output[0]!.name!, [4, 4]]]);
    const adj = buildAdjoint(proto, new Model(proto).root, { targets: [y], outputs: [proto.graph!.output[0]!.name!], dims, float32: new Set(dims.keys()), weights: new Set([y]) });
    expect(adj.weightGradients.get(y)!.bias).toBeUndefined();
  });
});
