import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { filterReasons, optimizeModel, type OptimizeOptions } from '../../src/optimize/driver.js';
import { newNode } from '../../src/onnx/schema.js';
import { makeInt64Tensor } from '../../src/onnx/tensor.js';
import { createRng } from '../../src/util/rng.js';
import { compareModels, randomFeed } from '../helpers/ort.js';

/** A [T, S, kh, kw] kernel Σ_r a_r ∘ b_r ∘ c_r of exact CP rank R. */
function cpKernel(T: number, S: number, K: number, R: number, seed: number): Float32Array {
  const rng = createRng(seed);
  const a = Array.from({ length: T * R }, () => rng.normal());
  const b = Array.from({ length: S * R }, () => rng.normal());
  const c = Array.from({ length: K * R }, () => rng.normal());
  const w = new Float32Array(T * S * K);
  for (let t = 0; t < T; t++) for (let s = 0; s < S; s++) for (let k = 0; k < K; k++) {
    let v = 0;
    for (let r = 0; r < R; r++) v += a[t * R + r] * b[s * R + r] * c[k * R + r];
    w[(t * S + s) * K + k] = v;
  }
  return w;
}

/** Tucker-2 kernel: core [r2, r1, K] with random (full CP rank) entries, times U_T and U_S. */
function tuckerKernel(T: number, S: number, K: number, r1: number, r2: number, seed: number): Float32Array {
  const rng = createRng(seed);
  const core = Array.from({ length: r2 * r1 * K }, () => rng.normal());
  const ut = Array.from({ length: T * r2 }, () => rng.normal());
  const us = Array.from({ length: S * r1 }, () => rng.normal());
  const w = new Float32Array(T * S * K);
  for (let t = 0; t < T; t++) for (let s = 0; s < S; s++) for (let k = 0; k < K; k++) {
    let v = 0;
    for (let a = 0; a < r2; a++) for (let b = 0; b < r1; b++) v += ut[t * r2 + a] * core[(a * r1 + b) * K + k] * us[s * r1 + b];
    w[(t * S + s) * K + k] = v;
  }
  return w;
}

function convModel(w: Float32Array, T: number, S: number): Uint8Array {
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [1, S, 12, 12]);
  b.output(b.node('Conv', [x, b.init('w', [T, S, 3, 3], w)], { pads: [1, 1, 1, 1] }, { name: 'conv' }));
  return encodeModel(b.build());
}

const auto: OptimizeOptions = { method: 'auto', policy: { kind: 'energy', energy: 0.9999 }, minParams: 0, seed: 0 };

describe('--method auto on k×k convs', () => {
  it('picks CP when a CP chain of no more parameters fits at least as well', async () => {
    const bytes = convModel(cpKernel(24, 24, 9, 3, 1), 24, 24);
    const model = new Model(decodeModel(bytes));
    const [rec] = optimizeModel(model, undefined, auto);
    expect(rec.skipped).toBeUndefined();
    expect(rec.pass).toBe('conv-cp');
    expect(rec.note).toMatch(/tucker2 .* vs cp/);
    // Its exact CP rank, reconstructed as closely as the exact kernels of the other tests.
    expect(rec.ranks).toEqual([3]);
    expect(rec.relError!).toBeLessThan(1e-5);
    expect(await compareModels(bytes, encodeModel(model.proto), { x: randomFeed([1, 24, 12, 12]) })).toBeLessThan(1e-5);
  });

  it('keeps Tucker-2 when the kernel has a full Tucker core', async () => {
    const bytes = convModel(tuckerKernel(24, 24, 9, 2, 2, 2), 24, 24);
    const model = new Model(decodeModel(bytes));
    const [rec] = optimizeModel(model, undefined, auto);
    expect(rec.pass).toBe('conv-tucker2');
    expect(rec.ranks).toEqual([2, 2]);
    expect(rec.note).toMatch(/vs cp/);
    expect(await compareModels(bytes, encodeModel(model.proto), { x: randomFeed([1, 24, 12, 12]) })).toBeLessThan(1e-4);
  });
});

describe('quantized layers', () => {
  it('are listed as skipped with a reason and left untouched', () => {
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [1, 8, 6, 6]);
    b.graph.initializer.push({ ...makeInt64Tensor('unused', [1], [0]) });
    // DequantizeLinear → Conv, and a ConvInteger.
    b.graph.initializer.push({ name: 'wq', dims: [8, 8, 3, 3], dataType: 3, rawData: new Uint8Array(8 * 8 * 9), stringData: [], externalData: [], metadataProps: [] });
    b.init('scale', [], [0.1]);
    const w = b.node('DequantizeLinear', ['wq', 'scale'], {}, { name: 'dq' });
    const y = b.node('Conv', [x, w], { pads: [1, 1, 1, 1] }, { name: 'qconv' });
    b.graph.node.push(newNode({ opType: 'ConvInteger', name: 'cint', input: ['xq', 'wq'], output: ['yi'] }));
    b.output(y);
    const model = new Model(b.build());
    const recs = optimizeModel(model, undefined, { ...auto, policy: { kind: 'fixed', rank: 1 } });
    const q = recs.filter((r) => r.where === 'quantized');
    expect(q.map((r) => r.name).sort()).toEqual(['cint', 'qconv']);
    expect(q.every((r) => r.skipped && /quantized/.test(r.reason!))).toBe(true);
    expect(model.root.nodes.map((n) => n.name)).toContain('qconv');
  });
});

describe('constant weights that are not layers', () => {
  it('are reported as skipped with why, without changing the totals', () => {
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [1, 6, 8]);
    const pos = b.node('Add', [x, b.init('pos', [1, 6, 8], new Float32Array(48).fill(0.1))], {}, { name: 'add_pos' });
    b.output(b.node('Einsum', [pos, b.init('heads', [8, 4, 2], new Float32Array(64).fill(0.2))], { equation: 'btd,dhk->bthk' }, { name: 'einsum' }));
    const recs = optimizeModel(new Model(b.build()), undefined, { method: 'auto', policy: { kind: 'fixed', rank: 1 }, minParams: 0, seed: 0 });
    const others = recs.filter((r) => r.where === 'not a layer');
    expect(others.map((r) => [r.name, r.skipped, r.reason])).toEqual([
      ['add_pos', true, 'Add reads a constant weight [1, 6, 8]: no rewrite applies to Add'],
      ['einsum', true, 'Einsum reads a constant weight [8, 4, 2]: no rewrite applies to Einsum'],
    ]);
    expect(others.every((r) => r.paramsBefore === 0 && r.paramsAfter === 0)).toBe(true);
  });
});

describe('layer filters', () => {
  const layer = (name: string, params: number, macs?: number, op = 'MatMul') => ({ name, op, weightName: `${name}.w`, weightShape: [params, 1], params, macs }) as unknown as import('../../src/graph/layers.js').LayerInfo;

  it('--heaviest keeps the N layers with the most MACs, after --exclude and --min-params; ties keep model order', () => {
    const ls = [layer('a', 5000, 10), layer('b', 9000, 40), layer('c', 100, 99), layer('d', 6000, 40), layer('skip', 8000, 1000), layer('e', 7000, 30), layer('up', 9000, 500, 'Einsum')];
    const out = filterReasons(ls, { exclude: /skip/, minParams: 4096, heaviest: 2, method: 'auto' });
    // No pass takes an Einsum: it is not ranked (the driver gives its own reason).
    expect(out.has(ls[6])).toBe(false);
    expect(out.get(ls[4])).toBe('excluded by --exclude');
    expect(out.get(ls[2])).toMatch(/--min-params/);
    // b and d tie on MACs: both kept (first two by MACs), e and a left.
    expect(ls.filter((l) => !out.has(l) && l.op === 'MatMul').map((l) => l.name)).toEqual(['b', 'd']);
    expect(out.get(ls[5])).toBe('not among the 2 layers with the most MACs (--heaviest 2)');
    // Without MACs for every layer, params rank them.
    const noMacs = [layer('a', 5000), layer('b', 9000, 40), layer('e', 7000, 30)];
    const out2 = filterReasons(noMacs, { minParams: 0, heaviest: 1, method: 'auto' });
    expect(noMacs.filter((l) => !out2.has(l)).map((l) => l.name)).toEqual(['b']);
    expect(out2.get(noMacs[0])).toMatch(/most params/);
    expect(filterReasons(ls, { minParams: 0, heaviest: 99, method: 'auto' }).size).toBe(0);
  });
});
