/**
 * Budgets over every method's candidates (issue 19): under auto, with `rivals`, a conv
 * offers the rungs of the passes that compete with Tucker-2 (CP, spatial SVD, TT, CP-4), so
 * a budget picks, per layer, the method that saves most per unit of error. Off by default
 * (sensitivity.ts `rivals`); the CLI turns it on with --all-methods.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { main } from '../../src/cli/main.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { runAll } from '../../src/optimize/output-error.js';
import { measureSensitivity, RIVAL_RUNGS } from '../../src/optimize/sensitivity.js';
import { allocate } from '../../src/optimize/budget.js';
import { planFromAllocation } from '../../src/optimize/budgeted.js';
import type { ChainsTimer } from '../../src/optimize/layer-latency.js';
import { ok } from '../../src/errors.js';
import type { Report } from '../../src/report/report.js';
import { createRng, type Rng } from '../../src/util/rng.js';
import type { Feeds, HostTensor } from '../../src/verify/tensor.js';
import { randn, tuckerKernel } from '../passes/conv-harness.js';

const S = 32;
const T = 32;

/**
 * A [T, S, 3, 3] kernel whose [S·kh, kw·T] reshape has rank r (W[t,s,y,x] = Σ_q P[s,y,q]·Q[q,x,t]):
 * its channel unfoldings have full rank (Tucker-2 does not pay) but spatial SVD at rank r is exact.
 */
function spatialKernel(rng: Rng, r: number): Float32Array {
  const P = randn(rng, S * 3 * r);
  const Q = randn(rng, r * 3 * T);
  const w = new Float32Array(T * S * 9);
  for (let t = 0; t < T; t++) for (let s = 0; s < S; s++) for (let y = 0; y < 3; y++) for (let x = 0; x < 3; x++) {
    let v = 0;
    for (let q = 0; q < r; q++) v += P[(s * 3 + y) * r + q]! * Q[(q * 3 + x) * T + t]!;
    w[((t * S + s) * 3 + y) * 3 + x] = v / Math.sqrt(r);
  }
  return w;
}

/** x → conv 'spatial' (rank-16 spatial structure) → Relu → conv 'tucker' (Tucker ranks 8, 8) → y. */
function twoConvs(): Uint8Array {
  const rng = createRng(19);
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [1, S, 12, 12]);
  const h = b.node('Conv', [x, b.init('w1', [T, S, 3, 3], spatialKernel(rng, 16)), b.init('b1', [T], randn(rng, T))], { pads: [1, 1, 1, 1] }, { name: 'spatial' });
  const r = b.node('Relu', [h], {}, { name: 'relu' });
  const tk = tuckerKernel(rng, T, S, 1, 9, 8, 8).map((v) => v / 8);
  b.output(b.node('Conv', [r, b.init('w2', [T, S, 3, 3], tk), b.init('b2', [T], randn(rng, T))], { pads: [1, 1, 1, 1] }, { name: 'tucker' }));
  return encodeModel(b.build());
}

const feedsOf = (seed: number, n: number): Feeds[] => {
  const rng = createRng(seed);
  return Array.from({ length: n }, () => ({ x: { type: 'float32', dims: [1, S, 12, 12], data: randn(rng, S * 144) } satisfies HostTensor }));
};

/** Sensitivity of both convs measured with `method` (other methods' rungs when `rivals`; every rung run when `allRungs`). */
async function sensitivityOf(bytes: Uint8Array, feeds: Feeds[], method: 'auto' | 'tucker2', rivals?: boolean, allRungs?: boolean) {
  const ref = await runAll({ bytes }, feeds);
  if (!ref.ok) throw ref.error;
  const model = new Model(decodeModel(bytes));
  for (const g of model.allGraphs()) g.topoSort();
  const cx = { model, rng: createRng(7), shared: new Map() };
  return measureSensitivity(model, findLayers(model), { method, feeds, reference: ref.value, cx, ...(rivals === undefined ? {} : { rivals }), ...(allRungs && { allRungs }) });
}

describe('sensitivity offers every method\'s rungs under auto when asked (rivals)', () => {
  it('the spatial layer offers an exact spatial SVD; the Tucker layer offers Tucker-2\'s rungs first, as --method tucker2 and as without rivals', async () => {
    const bytes = twoConvs();
    const feeds = feedsOf(3, 2);
    const [spatial, tucker] = await sensitivityOf(bytes, feeds, 'auto', true);
    // On the spatial layer Tucker-2 pays only at its inaccurate rungs; spatial SVD is exact
    // at rank 16 and above, at most RIVAL_RUNGS rungs, its most accurate run in ORT.
    const sv = spatial!.candidates.filter((c) => c.pass === 'conv-spatial-svd');
    expect(sv.length).toBeGreaterThan(0);
    expect(sv.length).toBeLessThanOrEqual(RIVAL_RUNGS);
    expect(sv[sv.length - 1]!.measured).toBe(true);
    const exact = sv.filter((c) => c.ranks[0]! >= 16);
    expect(exact.length).toBeGreaterThan(0);
    const t2best = Math.min(...spatial!.candidates.filter((c) => c.pass === 'conv-tucker2').map((c) => c.outErr2));
    for (const c of exact) {
      expect(c.layerError!).toBeLessThan(1e-5);
      expect(c.outErr2).toBeLessThan(1e-6 * t2best);
    }
    // The Tucker layer: Tucker-2's rungs first, the same as with --method tucker2 (rival fits
    // draw from their own random stream); every other rung is better than the rungs before it
    // in error or in a cost.
    const [, alone] = await sensitivityOf(bytes, feeds, 'tucker2');
    const t2 = tucker!.candidates.filter((c) => c.pass === 'conv-tucker2');
    expect(t2).toEqual(alone!.candidates);
    expect(tucker!.candidates.slice(0, t2.length)).toEqual(t2);
    tucker!.candidates.slice(t2.length).forEach((c, j) => {
      expect(Number.isFinite(c.outErr2)).toBe(true);
      const before = tucker!.candidates.slice(0, t2.length + j);
      expect(before.some((d) => d.outErr2 <= c.outErr2 && d.after.params <= c.after.params && d.after.macsPerPosition <= c.after.macsPerPosition)).toBe(false);
    });
    // By default (and under --method X) a layer offers its preferred pass's rungs only.
    const [sp0, tk0] = await sensitivityOf(bytes, feeds, 'auto');
    expect(tk0!.candidates).toEqual(t2);
    expect(sp0!.candidates.every((c) => c.pass === 'conv-tucker2')).toBe(true);
  }, 240_000);

  it('every rival rung is run through the model, the cheap one too: the error is the one running every rung measures', async () => {
    // Predicted from the rival's most accurate rung, a cheap rung came out up to 3x
    // optimistic (PP-OCRv4 rec: CP 30 on p2o.Conv.36 predicted 0.00221, measured 0.00686).
    const bytes = twoConvs();
    const feeds = feedsOf(3, 2);
    const byDefault = await sensitivityOf(bytes, feeds, 'auto', true);
    const reference = await sensitivityOf(bytes, feeds, 'auto', true, true);
    const rivalRungs = (l: (typeof byDefault)[number]) => l.candidates.filter((c) => c.pass !== 'conv-tucker2');
    let cheap = 0;
    let compared = 0;
    byDefault.forEach((layer, j) => {
      const rungs = rivalRungs(layer);
      for (const c of rungs) {
        expect(c.measured, `${layer.name} ${c.pass} ${c.ranks.join(',')}`).toBe(true);
        const ref = rivalRungs(reference[j]!).find((d) => d.pass === c.pass && d.ranks.join(',') === c.ranks.join(','));
        // Rival fits draw from their own random stream: the same fits, the same measured error.
        if (ref) { expect(c.outErr2).toBe(ref.outErr2); compared++; }
        // A cheap rung: another rung of the same method is more accurate.
        if (rungs.some((d) => d.pass === c.pass && d.ranks[0]! > c.ranks[0]!)) cheap++;
      }
    });
    expect(cheap).toBeGreaterThan(0);
    expect(compared).toBeGreaterThan(cheap);
  }, 240_000);
});

describe('a budget picks the method per layer', () => {
  it('spatial SVD (or CP) on the layer of spatial structure, Tucker-2 on the other; applied as a plan, checked in ORT; plans round-trip through the CLI', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-methods-'));
    const inp = path.join(dir, 'in.onnx');
    const bytes = twoConvs();
    writeFileSync(inp, bytes);
    const feeds = feedsOf(3, 2);
    const sens = await sensitivityOf(bytes, feeds, 'auto', true);
    const params = sens.reduce((a, l) => a + l.before.params, 0);
    const err2 = 0.01 ** 2;
    const alloc = allocate(sens, { kind: 'error', err2 }, params, 'params');
    expect(alloc.met).toBe(true);
    expect(['conv-spatial-svd', 'conv-cp']).toContain(alloc.choices.get('spatial')!.pass);
    expect(alloc.choices.get('tucker')!.pass).toBe('conv-tucker2');
    // Without other methods' rungs the spatial layer cannot be compressed within the budget.
    const alone = allocate(await sensitivityOf(bytes, feeds, 'auto'), { kind: 'error', err2 }, params, 'params');
    expect(alone.choices.has('spatial')).toBe(false);
    expect(alloc.after).toBeLessThan(alone.after);
    // The allocation as a plan, written and applied by the CLI exactly.
    const plan = planFromAllocation('in.onnx', 'budget', sens, alloc);
    const planPath = path.join(dir, 'plan.json');
    writeFileSync(planPath, JSON.stringify(plan));
    const run = async (args: string[]): Promise<{ code: number; out: string; err: string }> => {
      let out = '';
      let err = '';
      const code = await main(args, { out: (t) => { out += t; }, err: (t) => { err += t; } });
      return { code, out, err };
    };
    const outp = path.join(dir, 'out.onnx');
    const a = await run(['optimize', inp, outp, '--plan', planPath, '--min-params', '0', '--save', 'params', '--no-latency', '--json']);
    expect(a.code, a.err).toBe(0);
    const report = JSON.parse(a.out) as Report;
    const by = new Map(report.layers.map((l) => [l.name, l]));
    expect(by.get('spatial')!.pass).toBe(alloc.choices.get('spatial')!.pass);
    expect(by.get('spatial')!.ranks).toEqual(alloc.choices.get('spatial')!.ranks);
    expect(by.get('tucker')!.method).toBe('tucker2');
    expect(report.verify!.pass).toBe(true);
    // In ORT, on inputs the sensitivity did not see: within about the budget.
    const held = feedsOf(11, 2);
    const ref = await runAll({ path: inp }, held);
    const got = await runAll({ path: outp }, held);
    if (!ref.ok || !got.ok) throw new Error('ORT run failed');
    let num = 0;
    let den = 0;
    ref.value.forEach((r, k) => {
      const key = Object.keys(r)[0]!;
      const y = r[key]!.data as Float32Array;
      const z = got.value[k]![key]!.data as Float32Array;
      for (let i = 0; i < y.length; i++) { num += (y[i]! - z[i]!) ** 2; den += y[i]! ** 2; }
    });
    expect(Math.sqrt(num / den)).toBeLessThan(0.02);
    // A plan written before candidates carried their layer error and how it was obtained
    // still loads, as a budget's cache: the budget re-allocates from it to the same choices.
    const old = JSON.parse(JSON.stringify(plan)) as { sensitivity: { candidates: Record<string, unknown>[] }[] };
    for (const l of old.sensitivity) for (const c of l.candidates) { delete c.layerError; delete c.measured; delete c.predictedErr2; }
    const oldPath = path.join(dir, 'old-plan.json');
    writeFileSync(oldPath, JSON.stringify(old));
    const c = await run(['optimize', inp, path.join(dir, 'out3.onnx'), '--max-error', '0.01', '--save', 'params', '--no-latency', '--min-params', '0', '--plan', oldPath, '--json']);
    expect(c.err).not.toMatch(/internal error/);
    expect(c.code, c.err).toBe(0);
    const r3 = JSON.parse(c.out) as Report;
    expect(r3.layers.find((l) => l.name === 'spatial')!.pass).toBe(alloc.choices.get('spatial')!.pass);
    expect(r3.layers.find((l) => l.name === 'tucker')!.pass).toBe('conv-tucker2');
    expect(readFileSync(path.join(dir, 'out3.onnx')).length).toBeGreaterThan(0);
  }, 300_000);

  it('through the CLI: --all-methods lets the budget take spatial SVD (or CP) on the spatial layer, which it leaves without', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-all-methods-'));
    const inp = path.join(dir, 'in.onnx');
    writeFileSync(inp, twoConvs());
    const run = async (extra: string[]): Promise<Report> => {
      let out = '';
      let err = '';
      const code = await main(['optimize', inp, path.join(dir, `out${extra.length}.onnx`), '--max-error', '0.01', '--save', 'params', '--no-latency', '--min-params', '0', '--json', ...extra],
        { out: (t) => { out += t; }, err: (t) => { err += t; } });
      expect(code, err).toBe(0);
      return JSON.parse(out) as Report;
    };
    const spatialOf = (r: Report) => r.layers.find((l) => l.name === 'spatial')!;
    const all = await run(['--all-methods']);
    expect(['conv-spatial-svd', 'conv-cp']).toContain(spatialOf(all).pass);
    expect(all.verify!.pass).toBe(true);
    const without = await run([]);
    expect(spatialOf(without).skipped).toBe(true);
    expect(all.output.params).toBeLessThan(without.output.params);
  }, 300_000);
});

describe('when latency counts, measured chain times decide between methods', () => {
  it('a chain timed faster wins though its MACs are higher; saving MACs, the fewer MACs win', async () => {
    const bytes = twoConvs();
    const feeds = feedsOf(3, 1);
    const ref = await runAll({ bytes }, feeds);
    if (!ref.ok) throw ref.error;
    const model = new Model(decodeModel(bytes));
    for (const g of model.allGraphs()) g.topoSort();
    const layers = findLayers(model).filter((l) => l.name === 'tucker');
    const shapes = new Map<string, number[]>([['x', [1, S, 12, 12]], ...findLayers(model).map((l) => [l.node.output[0]!, [1, T, 12, 12]] as [string, number[]]), ['relu', [1, T, 12, 12]]]);
    for (const n of model.root.proto.node) for (const o of n.output) shapes.set(o, [1, T, 12, 12]);
    // A stand-in clock (not ORT, so nothing depends on the machine): the layer 10 ms, a
    // two-conv chain (spatial SVD) 2 ms, any longer chain 9 ms. Every method's chains of
    // the layer are handed over in one call.
    const calls: number[] = [];
    let fourConvChains = 0;
    const clock: ChainsTimer = async (_m, _layer, chains) => {
      calls.push(chains.length);
      fourConvChains += chains.filter((c) => c.graph!.node.filter((n) => n.opType === 'Conv').length === 4).length;
      return ok({ originalMs: 10, candidateMs: chains.map((c) => (c.graph!.node.filter((n) => n.opType === 'Conv').length === 2 ? 2 : 9)) });
    };
    const cx = { model, rng: createRng(7), shared: new Map() };
    const [sens] = await measureSensitivity(model, layers, { method: 'auto', feeds, reference: ref.value, cx, latency: { threads: 1, shapes, time: clock }, rivals: true });
    expect(calls.length).toBe(1);
    const passes = new Set(sens!.candidates.map((c) => c.pass));
    expect(passes.has('conv-tucker2')).toBe(true);
    expect(passes.has('conv-spatial-svd')).toBe(true);
    // The passes measured slower than their MACs say (TT, CP-4: four-conv chains) offer rungs
    // too and are timed: the clock decides (a rung no better than one kept is dropped).
    expect(fourConvChains).toBeGreaterThan(0);
    expect(passes.has('conv-tt')).toBe(true);
    expect(sens!.candidates.every((c) => c.ms !== undefined)).toBe(true);
    // An error budget the whole ladder fits in: saving latency picks the fastest chain,
    // spatial SVD, whose MACs are above those of a Tucker-2 rung of no more error; saving
    // MACs picks a chain of fewer MACs.
    const budget = { kind: 'error', err2: 1 } as const;
    const byMs = allocate([sens!], budget, 10, 'latency').choices.get('tucker')!;
    const byMacs = allocate([sens!], budget, sens!.before.macsPerPosition, 'macs').choices.get('tucker')!;
    expect(byMs.pass).toBe('conv-spatial-svd');
    expect(byMacs.after.macsPerPosition).toBeLessThan(byMs.after.macsPerPosition);
    expect(sens!.candidates.some((c) => c.pass === 'conv-tucker2' && c.after.macsPerPosition < byMs.after.macsPerPosition && c.outErr2 <= byMs.outErr2)).toBe(true);
  }, 120_000);
});
