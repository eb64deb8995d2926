/**
 * The backward graph (src/graph/adjoint.ts): for every operator with a rule, the gradient
 * ORT computes from it must satisfy ⟨Jᵀv, u⟩ = d/dε ⟨v, y(x + εu)⟩, the latter measured by
 * central differences of forward runs in ORT, for random v and u; models in the opsets
 * the real ones use (9 like PP-OCR rec, 11 like det, 15 like ISNet). A node without a rule
 * leaves the values upstream of it uncovered, and only those.
 */
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { buildAdjoint } from '../../src/graph/adjoint.js';
import { Model } from '../../src/graph/graph.js';
import { encodeModel } from '../../src/onnx/codec.js';
import type { ModelProto } from '../../src/onnx/schema.js';
import { runAll } from '../../src/optimize/output-error.js';
import { captureModel } from '../../src/optimize/submodel.js';
import { createRng } from '../../src/util/rng.js';
import type { Feeds, HostTensor } from '../../src/verify/tensor.js';

const rng = createRng(11);
const randn = (n: number, s = 1): number[] => Array.from({ length: n }, () => s * rng.normal());
const tensor = (dims: number[], data: ArrayLike<number>): HostTensor => ({ type: 'float32', dims, data: Float32Array.from(data) });

/** Concrete dims and float32 values of every main-graph value at `feed`. */
async function shapesAt(proto: ModelProto, feed: Feeds) {
  const names = proto.graph!.node.flatMap((n) => n.output).filter((o) => o);
  const r = await runAll({ bytes: encodeModel(captureModel(proto, names)) }, [feed]);
  if (!r.ok) throw new Error(r.error.message);
  const dims = new Map<string, readonly number[]>();
  const float32 = new Set<string>();
  for (const [k, t] of [...Object.entries(feed), ...Object.entries(r.value[0]!)]) { dims.set(k, t.dims); if (t.type === 'float32') float32.add(k); }
  return { dims, float32, outs: r.value[0]! };
}

const dot = (a: ArrayLike<number>, b: ArrayLike<number>): number => { let s = 0; for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!; return s; };

/** Checks Jᵀv against central differences along three random directions, for the input x. */
async function checkGradient(proto: ModelProto, xDims: number[], outputs: string[], eps = 1e-3): Promise<void> {
  const n = xDims.reduce((a, b) => a * b, 1);
  const x0 = randn(n);
  const feed: Feeds = { x: tensor(xDims, x0) };
  const { dims, float32, outs } = await shapesAt(proto, feed);
  const model = new Model(proto);
  const adj = buildAdjoint(proto, model.root, { targets: ['x'], outputs, dims, float32 });
  expect([...adj.uncovered]).toEqual([]);
  const v: Record<string, number[]> = {};
  const adjFeed: Feeds = { ...feed };
  for (const o of outputs) {
    v[o] = randn(outs[o]!.data.length);
    adjFeed[adj.cotangents.get(o)!] = tensor([...dims.get(o)!], v[o]!);
  }
  const r = await runAll({ bytes: encodeModel(adj.model) }, [adjFeed]);
  if (!r.ok) throw new Error(r.error.message);
  const g = r.value[0]![adj.gradients.get('x')!]!.data as Float32Array;
  expect(g).toHaveLength(n);
  for (let k = 0; k < 3; k++) {
    const u = randn(n);
    const shifted = (s: number): Feeds => ({ x: tensor(xDims, x0.map((xi, i) => xi + s * eps * u[i]!)) });
    const ys = await runAll({ bytes: encodeModel(proto) }, [shifted(1), shifted(-1)]);
    if (!ys.ok) throw new Error(ys.error.message);
    let fd = 0;
    for (const o of outputs) fd += (dot(v[o]!, ys.value[0]![o]!.data as Float32Array) - dot(v[o]!, ys.value[1]![o]!.data as Float32Array)) / (2 * eps);
    const exact = dot(g, u);
    expect(Math.abs(fd - exact)).toBeLessThan(2e-2 * Math.max(1, Math.abs(exact)));
  }
}

describe('vector-Jacobian products in ORT against central differences', () => {
  it('convolutions and pooling (opset 15): strided padded Conv, BatchNorm, Relu, grouped dilated conv, strided SAME_UPPER conv, HardSwish, Clip, MaxPool with ceil_mode, AveragePool, GlobalAveragePool, Sigmoid', async () => {
    const b = new ModelBuilder({ opset: 15 });
    const x = b.input('x', [1, 4, 9, 9]);
    let h = b.node('Conv', [x, b.init('w1', [6, 4, 3, 3], randn(216, 0.3)), b.init('b1', [6], randn(6))], { strides: [2, 2], pads: [1, 1, 1, 1] });
    h = b.node('BatchNormalization', [h, b.init('s', [6], randn(6)), b.init('bb', [6], randn(6)), b.init('m', [6], randn(6)), b.init('var', [6], randn(6).map(Math.abs))], { epsilon: { float: 1e-3 } });
    h = b.node('Relu', [h]);
    h = b.node('Conv', [h, b.init('w2', [6, 3, 3, 3], randn(162, 0.3))], { group: 2, dilations: [2, 2], pads: [2, 1, 2, 2] });
    h = b.node('Conv', [h, b.init('w3', [6, 6, 3, 3], randn(324, 0.3))], { strides: [2, 2], auto_pad: 'SAME_UPPER' });
    h = b.node('HardSwish', [h]);
    h = b.node('Clip', [h, b.init('lo', [], [-0.5]), b.init('hi', [], [0.8])]);
    const p = b.node('MaxPool', [h], { kernel_shape: [2, 2], strides: [2, 2], ceil_mode: 1 });
    const a = b.node('AveragePool', [h], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], count_include_pad: 1 });
    const gp = b.node('GlobalAveragePool', [a]);
    b.output(b.node('Sigmoid', [b.node('Add', [p, gp])]));
    const proto = b.build();
    await checkGradient(proto, [1, 4, 9, 9], [proto.graph!.output[0]!.name!]);
  });

  it('resizes, concat, slice, pad and softmax (opset 15): linear half_pixel by sizes, nearest asymmetric floor by scales', async () => {
    const b = new ModelBuilder({ opset: 15 });
    const x = b.input('x', [1, 3, 5, 6]);
    const up = b.node('Resize', [x, '', '', b.initInt64('sizes', [4], [1, 3, 11, 14])], { mode: 'linear', coordinate_transformation_mode: 'half_pixel' });
    const c = b.node('Conv', [x, b.init('w', [2, 3, 1, 1], randn(6))]);
    const nn = b.node('Resize', [c, '', b.init('scales', [4], [1, 1, 2, 2])], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' });
    const sl = b.node('Slice', [up, b.initInt64('st', [2], [1, 0]), b.initInt64('en', [2], [11, 13]), b.initInt64('ax', [2], [2, 3])]);
    const cat = b.node('Concat', [sl, b.node('Pad', [nn, b.initInt64('pads', [8], [0, 0, 0, 1, 0, 0, 0, 0])])], { axis: 1 });
    const ac = b.node('Resize', [cat, '', '', b.initInt64('sizes2', [4], [1, 5, 4, 4])], { mode: 'linear', coordinate_transformation_mode: 'align_corners' });
    b.output(b.node('Softmax', [ac], { axis: 1 }));
    const proto = b.build();
    await checkGradient(proto, [1, 3, 5, 6], [proto.graph!.output[0]!.name!]);
  });

  it('attention and a spelled-out LayerNorm (opset 9, as PP-OCR rec): MatMuls of two activations, Transpose, Reshape, Slice and Squeeze by attributes, Softmax, Div, Pow, Sqrt, ReduceMean, Gemm, HardSigmoid, Tanh; two outputs', async () => {
    const b = new ModelBuilder({ opset: 9 });
    const x = b.input('x', [1, 5, 8]);
    const qkv = b.node('MatMul', [x, b.init('wqkv', [8, 24], randn(192, 0.3))]);
    const r = b.node('Transpose', [b.node('Reshape', [qkv, b.initInt64('shp', [5], [1, 5, 3, 2, 4])])], { perm: [2, 0, 3, 1, 4] });
    const part = (i: number): string => b.node('Squeeze', [b.node('Slice', [r], { axes: [0], starts: [i], ends: [i + 1] })], { axes: [0] });
    const [q, k, v] = [part(0), part(1), part(2)];
    const att = b.node('Softmax', [b.node('Div', [b.node('MatMul', [q, b.node('Transpose', [k], { perm: [0, 1, 3, 2] })]), b.init('scale', [], [2])])], { axis: 3 });
    const o = b.node('Reshape', [b.node('Transpose', [b.node('MatMul', [att, v])], { perm: [0, 2, 1, 3] }), b.initInt64('shp2', [3], [1, 5, 8])]);
    const res = b.node('Add', [o, x]);
    const mean = b.node('ReduceMean', [res], { axes: [-1] });
    const d = b.node('Sub', [res, mean]);
    const varr = b.node('ReduceMean', [b.node('Pow', [d, b.init('two', [], [2])])], { axes: [-1] });
    const ln = b.node('Div', [d, b.node('Sqrt', [b.node('Add', [varr, b.init('e', [], [1e-5])])])]);
    const flat = b.node('Reshape', [ln, b.initInt64('shp3', [2], [5, 8])]);
    const y1 = b.node('Tanh', [b.node('Gemm', [flat, b.init('wg', [3, 8], randn(24)), b.init('bg', [3], randn(3))], { transB: 1 })]);
    const y2 = b.node('HardSigmoid', [b.node('Mul', [ln, b.init('gam', [8], randn(8))])], { alpha: { float: 0.3 } });
    b.output(y1);
    b.output(y2);
    await checkGradient(b.build(), [1, 5, 8], [y1, y2]);
  });

  it('det-style ops (opset 11): ConvTranspose, a squeeze-excite Mul broadcast from [N,C,1,1], nearest Resize by scales, Split, Where, Expand, LeakyRelu, Erf, Exp, Reciprocal, Neg, Sum', async () => {
    const b = new ModelBuilder({ opset: 11 });
    const x = b.input('x', [1, 4, 4, 4]);
    const ct = b.node('ConvTranspose', [x, b.init('wt', [4, 4, 2, 2], randn(64, 0.3))], { strides: [2, 2] });
    const se = b.node('HardSigmoid', [b.node('Conv', [b.node('GlobalAveragePool', [ct]), b.init('ws', [4, 4, 1, 1], randn(16))])]);
    const m = b.node('Mul', [ct, se]);
    const rs = b.node('Resize', [x, b.init('roi', [0], []), b.init('sc', [4], [1, 1, 2, 2])], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' });
    const [s1, s2] = b.nodeMulti('Split', [b.node('Add', [m, rs])], { axis: 1, split: [1, 3] }, { outputs: 2 });
    const w = b.node('Where', [b.node('Greater', [s2, b.init('z', [], [0])]), s2, b.node('LeakyRelu', [s2], { alpha: { float: 0.1 } })]);
    const e = b.node('Expand', [s1, b.initInt64('es', [4], [1, 3, 8, 8])]);
    const y = b.node('Sum', [b.node('Erf', [w]), b.node('Exp', [b.node('Neg', [e])]), b.node('Reciprocal', [b.node('Add', [w, b.init('three', [], [3])])])]);
    b.output(y);
    await checkGradient(b.build(), [1, 4, 4, 4], [y]);
  });

  it('Upsample (opset 9, nearest) and a plain AveragePool with kernel = stride', async () => {
    const b = new ModelBuilder({ opset: 9 });
    const x = b.input('x', [1, 2, 6, 4]);
    const a = b.node('AveragePool', [x], { kernel_shape: [3, 2], strides: [3, 2] });
    const y = b.node('Upsample', [b.node('Relu', [a]), b.init('sc', [4], [1, 1, 2, 3])], { mode: 'nearest' });
    b.output(y);
    await checkGradient(b.build(), [1, 2, 6, 4], [y]);
  });
});

describe('normalisations (opset 17)', () => {
  it('LayerNormalization over the last axis and over the last two, InstanceNormalization', async () => {
    const b = new ModelBuilder({ opset: 17 });
    const x = b.input('x', [2, 3, 4, 5]);
    const ln1 = b.node('LayerNormalization', [x, b.init('g1', [5], randn(5)), b.init('b1', [5], randn(5))], { epsilon: { float: 1e-3 } });
    const ln2 = b.node('LayerNormalization', [b.node('Tanh', [ln1]), b.init('g2', [4, 5], randn(20))], { axis: 2 });
    const y = b.node('InstanceNormalization', [b.node('Sigmoid', [ln2]), b.init('g3', [3], randn(3)), b.init('b3', [3], randn(3))]);
    b.output(b.node('Mul', [y, b.init('w', [3, 1, 1], randn(3))]));
    const proto = b.build();
    await checkGradient(proto, [2, 3, 4, 5], [proto.graph!.output[0]!.name!]);
  });
});

describe('where the backward graph stops', () => {
  it('a node without a rule uncovers the targets upstream of it and only those', async () => {
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [1, 2, 3, 3]);
    const c1 = b.node('Conv', [x, b.init('w1', [2, 2, 1, 1], randn(4))], {}, { name: 'c1' });
    const lrn = b.node('LRN', [c1], { size: 3 });
    const c2 = b.node('Conv', [lrn, b.init('w2', [2, 2, 1, 1], randn(4))], {}, { name: 'c2' });
    b.output(b.node('Relu', [c2]));
    const proto = b.build();
    const { dims, float32 } = await shapesAt(proto, { x: tensor([1, 2, 3, 3], randn(18)) });
    const adj = buildAdjoint(proto, new Model(proto).root, { targets: [c1, c2], outputs: [proto.graph!.output[0]!.name!], dims, float32 });
    expect([...adj.uncovered.keys()]).toEqual([c1]);
    expect(adj.uncovered.get(c1)).toMatch(/no gradient through LRN/);
    expect([...adj.gradients.keys()]).toEqual([c2]);
  });

  it('a target that is not float32 gets no gradient, with the reason', () => {
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [1, 2]);
    b.output(b.node('Relu', [x]));
    const proto = b.build();
    const adj = buildAdjoint(proto, new Model(proto).root, { targets: ['x'], outputs: [proto.graph!.output[0]!.name!], dims: new Map([['x', [1, 2]]]), float32: new Set() });
    expect(adj.uncovered.get('x')).toMatch(/^its output is not float32/);
    expect(adj.gradients.size).toBe(0);
  });

  it('a model below opset 9 gets no gradients, with the reason', () => {
    const b = new ModelBuilder({ opset: 8 });
    const x = b.input('x', [1, 2]);
    b.output(b.node('Relu', [x]));
    const proto = b.build();
    const adj = buildAdjoint(proto, new Model(proto).root, { targets: ['x'], outputs: [proto.graph!.output[0]!.name!], dims: new Map([['x', [1, 2]]]), float32: new Set(['x']) });
    expect(adj.uncovered.get('x')).toMatch(/opset 8/);
  });
});
