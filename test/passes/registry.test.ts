/**
 * Dispatch through the registry: layers of a real model are routed by op type, `accepts`
 * and `benefit`; --method's choices and the reasons for layers no pass takes come from
 * the passes; a pass added to the list is routed and judged by its own `pays`; plan ranks
 * are checked with the pass's own names and constraints.
 */
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers, type LayerInfo } from '../../src/graph/layers.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { DataType } from '../../src/onnx/schema.js';
import { isSkip, skip, type BoundPass, type LayerPass } from '../../src/rewrite/pass.js';
import { bind, methodsOf, route, type Pass } from '../../src/rewrite/registry.js';
import { createRng } from '../../src/util/rng.js';
import { METHOD_CHOICES, PASSES, passByName, passFor } from '../../passes/dispatch.js';
import { convTucker2 } from '../../passes/conv-tucker2.js';
import * as registered from '../../passes/index.js';

const rnd = (seed: number, n: number): Float32Array => {
  const rng = createRng(seed);
  return Float32Array.from({ length: n }, () => rng.normal());
};

/** One layer of every kind findLayers knows: MatMul, Gemm, 1x1 / 3x3 / grouped Conv, ConvTranspose, Gather. */
function zoo(): Model {
  const b = new ModelBuilder({ opset: 13 });
  const v = b.input('v', [4, 32]);
  const mm = b.node('MatMul', [v, b.init('wm', [32, 48], rnd(1, 32 * 48))], {}, { name: 'mm' });
  b.output(b.node('Gemm', [mm, b.init('wg', [48, 40], rnd(2, 48 * 40))], {}, { name: 'gemm' }));
  const x = b.input('x', [1, 16, 8, 8]);
  const pw = b.node('Conv', [x, b.init('w1', [24, 16, 1, 1], rnd(3, 24 * 16))], {}, { name: 'pw' });
  const k3 = b.node('Conv', [pw, b.init('w3', [24, 24, 3, 3], rnd(4, 24 * 24 * 9))], { pads: [1, 1, 1, 1] }, { name: 'k3' });
  const gr = b.node('Conv', [k3, b.init('wgr', [24, 12, 3, 3], rnd(5, 24 * 12 * 9))], { group: 2, pads: [1, 1, 1, 1] }, { name: 'grouped' });
  b.output(b.node('ConvTranspose', [gr, b.init('wt', [24, 8, 2, 2], rnd(6, 24 * 8 * 4))], { strides: [2, 2] }, { name: 'up' }));
  const ids = b.input('ids', [3], DataType.INT64);
  b.output(b.node('Gather', [b.init('table', [100, 32], rnd(7, 3200)), ids], {}, { name: 'embed' }));
  const seq = b.input('seq', [5, 1, 16]);
  b.output(b.node('LSTM', [seq, b.init('wl', [1, 32, 16], rnd(8, 512)), b.init('rl', [1, 32, 8], rnd(9, 256))], { hidden_size: 8 }, { name: 'lstm' }));
  b.output(b.node('MatMul', [b.input('xb', [2, 4, 16]), b.init('wb', [2, 16, 24], rnd(10, 768))], {}, { name: 'bmm' }));
  return new Model(decodeModel(encodeModel(b.build())));
}

const model = zoo();
const layers = new Map(findLayers(model).map((l) => [l.name, l]));
const layer = (name: string): LayerInfo => layers.get(name)!;
/** The registry without the passes for an op (so these checks hold when a pass for it is added). */
const without = (op: string): Pass[] => PASSES.filter((p) => !p.ops.includes(op));
const routed = (name: string, method: string): string[] | string => {
  const r = route(PASSES, layer(name), method);
  return typeof r === 'string' ? r : r.map((p) => p.name);
};

describe('dispatch through the registry', () => {
  it('finds every layer kind in the fixture', () => {
    expect([...layers.values()].map((l) => l.op).sort()).toEqual(['Conv', 'Conv', 'Conv', 'ConvTranspose', 'Gather', 'Gemm', 'LSTM', 'MatMul', 'MatMul']);
  });

  it('routes by op type, accepts and benefit under every method choice', () => {
    expect(routed('mm', 'auto')).toEqual(['matmul-svd']);
    expect(routed('gemm', 'svd')).toEqual(['gemm-svd']);
    // conv1x1-svd takes only 1x1 group-1 convs and is preferred there; on kxk Tucker-2 leads and CP may challenge.
    expect(routed('pw', 'auto')).toEqual(['conv1x1-svd', 'conv-tucker2', 'conv-cp']);
    expect(routed('k3', 'auto')).toEqual(['conv-tucker2', 'conv-cp', 'conv-spatial-svd', 'conv-tt', 'conv-cp4']);
    // The split passes take grouped convs per group too (issue 19).
    expect(routed('grouped', 'auto')).toEqual(['conv-tucker2', 'conv-cp', 'conv-spatial-svd', 'conv-tt', 'conv-cp4']);
    expect(routed('pw', 'tucker2')).toEqual(['conv-tucker2']);
    expect(routed('k3', 'cp')).toEqual(['conv-cp']);
  });

  it('says why a layer has no pass: the op (no pass takes it), or the method (none of its passes does or accepts)', () => {
    expect(route(without('ConvTranspose'), layer('up'), 'auto')).toBe('ConvTranspose is not decomposed yet');
    expect(route(without('Gather'), layer('embed'), 'svd')).toBe('Gather is not decomposed yet');
    expect(routed('gemm', 'tucker2')).toBe('--method tucker2 does not apply to Gemm');
    expect(routed('mm', 'cp')).toBe('--method cp does not apply to MatMul');
    expect(routed('k3', 'svd')).toBe('--method svd applies to 1x1 convs only');
    expect(routed('grouped', 'svd')).toBe('--method svd applies to 1x1 convs only');
  });

  it('every registered pass is reachable: some layer of an op it takes is routed to it under its method', () => {
    for (const p of PASSES) {
      const reached = [...layers.values()].some((l) => {
        const r = route(PASSES, l, p.method);
        return typeof r !== 'string' && r.includes(p);
      });
      expect(reached, p.name).toBe(true);
    }
    expect(new Set(PASSES.map((p) => p.name)).size).toBe(PASSES.length);
    expect(PASSES.every((p) => passByName(p.name) === p)).toBe(true);
  });

  it('registers every line of passes/index.ts, in the order of declared benefit whatever the lines\' order', () => {
    const listed = Object.values(registered) as Pass[];
    expect(PASSES.map((p) => p.name).sort()).toEqual(listed.map((p) => p.name).sort());
    for (let i = 1; i < PASSES.length; i++) expect(PASSES[i - 1]!.benefit).toBeGreaterThanOrEqual(PASSES[i]!.benefit);
  });

  it('derives --method choices from the passes', () => {
    expect(METHOD_CHOICES).toEqual(['auto', ...new Set(PASSES.map((p) => p.method))]);
    expect(METHOD_CHOICES.slice(0, 4)).toEqual(['auto', 'svd', 'tucker2', 'cp']);
  });
});

/** A stand-in embedding pass: a Gather runs no MACs, so it must pay on parameters alone. */
function gatherPass(name: string, benefit: number, pays?: boolean): LayerPass<{ rows: number; cols: number }> {
  return {
    name, method: 'svd', ops: ['Gather'], benefit,
    accepts: (l) => (l.weightShape.length === 2 ? true : skip('needs a 2-D table')),
    match: (l) => ({ rows: l.weightShape[0]!, cols: l.weightShape[1]! }),
    chooseRanks: () => [4],
    cost: (m, r) => ({ before: { params: m.rows * m.cols, macsPerPosition: 0 }, after: { params: r[0]! * (m.rows + m.cols), macsPerPosition: 0 } }),
    ...(pays ? { pays: (c) => c.after.params < c.before.params } : {}),
    apply: () => skip('stand-in'),
    rankLimits: (m) => [Math.min(m.rows, m.cols)],
    compose: () => 'stand-in',
  };
}

describe('a pass added to the list', () => {
  const cx = { model, rng: createRng(0), shared: new Map() };

  it('takes the ops no pass took, and the higher benefit leads (ties keep list order)', () => {
    const a = gatherPass('gather-a', 1);
    const b = gatherPass('gather-b', 1);
    const c = gatherPass('gather-c', 5);
    const list: Pass[] = [...without('Gather'), a, b, c];
    expect(route(list, layer('embed'), 'auto')).toEqual([c, a, b]);
    expect(route(list, layer('embed'), 'tucker2')).toBe('--method tucker2 does not apply to Gather');
    expect(route(list, layer('k3'), 'auto')).toEqual(route(PASSES, layer('k3'), 'auto'));
    expect(methodsOf([...PASSES, { ...a, method: 'embed' }])).toEqual([...METHOD_CHOICES.slice(1), 'embed']);
  });

  it('is judged by its own pays: the default rule needs fewer MACs, which a Gather cannot have', () => {
    const bindTo = (p: Pass): BoundPass => {
      const b = bind(p, layer('embed'), cx);
      if (isSkip(b)) throw new Error(b.skip);
      return b;
    };
    const withDefault = bindTo(gatherPass('gather-default', 1));
    const own = bindTo(gatherPass('gather-own', 1, true));
    const c = own.cost([4]);
    expect(c.after.params).toBeLessThan(c.before.params);
    expect(withDefault.pays(c)).toBe(false);
    expect(own.pays(c)).toBe(true);
    expect(own.name).toBe('gather-own');
  });
});

describe('bound passes', () => {
  const cx = { model, rng: createRng(0), shared: new Map() };

  it('check plan ranks with the pass\'s names, limits and constraints', () => {
    const t = bind(convTucker2, layer('k3'), cx);
    if (isSkip(t)) throw new Error(t.skip);
    expect(t.rankProblem([4, 4])).toBeUndefined();
    expect(t.rankProblem([4])).toBe('1 rank(s) [4], but conv-tucker2 takes 2');
    expect(t.rankProblem([0, 4])).toBe('r1 (input side) 0 is out of range: valid ranks are 1 to 24');
    expect(t.rankProblem([1, 12])).toBe('ranks [1, 12] need r1 ≤ r2·9 and r2 ≤ r1·9 (the kernel has 9 taps)');
    const m = bind(passFor(layer('mm'), 'auto') as Pass, layer('mm'), cx);
    if (isSkip(m)) throw new Error(m.skip);
    expect(m.rankProblem([2.5])).toBe('rank 2.5 is out of range: valid ranks are 1 to 32');
  });

  it('carry the match: costs and ranks come from the matched layer', () => {
    const pw = bind(passFor(layer('pw'), 'auto') as Pass, layer('pw'), cx);
    if (isSkip(pw)) throw new Error(pw.skip);
    expect(pw.name).toBe('conv1x1-svd');
    expect(pw.cost([8])).toEqual({ before: { params: 24 * 16, macsPerPosition: 24 * 16 }, after: { params: 8 * 40, macsPerPosition: 8 * 40 } });
    expect(pw.pays(pw.cost([8]))).toBe(true);
    expect(pw.pays(pw.cost([12]))).toBe(false);
  });

  it('decline with the pass\'s reason when the match does', () => {
    // Under --method tucker2 a 1x1 conv reaches conv-tucker2, whose match declines it.
    const r = bind(passFor(layer('pw'), 'tucker2') as Pass, layer('pw'), cx);
    expect(r).toEqual({ skip: '1x1 kernel: a matrix, conv1x1-svd handles it' });
  });
});
