/**
 * When latency counts, auto's choice between methods is decided by measured time
 * (src/optimize/method-latency.ts): the rival that won auto's comparison on error and the
 * preferred pass's chain are timed together, and the faster is kept even when its MACs are
 * higher. The clocks here stand in for ORT (no verdict depends on the machine's speed);
 * the one real timing checks only that every chain is cut out and timed.
 */
import { describe, expect, it } from 'vitest';
import { ok } from '../../src/errors.js';
import { Model } from '../../src/graph/graph.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import type { ModelProto } from '../../src/onnx/schema.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import type { ChainsTimer } from '../../src/optimize/layer-latency.js';
import { fastestContender, preferFaster } from '../../src/optimize/method-latency.js';
import { isSkip } from '../../src/rewrite/pass.js';
import { bind } from '../../src/rewrite/registry.js';
import { createRng } from '../../src/util/rng.js';
import { passByName } from '../../passes/dispatch.js';
import { context, convLayer, convModel, cpKernel, windowSpec } from '../passes/conv-harness.js';

const [S, T, R] = [16, 16, 3];
const spec = { S, T, ...windowSpec(2, 3, 1, 1, 'sym') };

/** A conv whose kernel is an exact rank-3 CP: auto's comparison picks CP (fewer params and MACs than Tucker-2 at 3,3, same error). */
function cpConvModel(): Uint8Array {
  return convModel(spec, cpKernel(createRng(3), T, S, 9, R), createRng(0));
}

const shapesOf = (model: Model): Map<string, number[]> => {
  const n = model.root.proto.node[0]!;
  return new Map([[n.input[0]!, [1, S, ...spec.size]], [n.output[0]!, [1, T, ...spec.size]]]);
};

/** Whether a chain has a depthwise conv (CP's core). */
const depthwise = (m: ModelProto): boolean => m.graph!.node.some((n) => n.attribute.some((a) => a.name === 'group' && Number(a.i) > 1));

/** A stand-in clock: the layer 10 ms, chains with a depthwise conv `dw` ms, others 4 ms. */
const clock = (dw: number, calls: number[]): ChainsTimer => async (_m, _l, chains) => {
  calls.push(chains.length);
  return ok({ originalMs: 10, candidateMs: chains.map((c) => (depthwise(c) ? dw : 4)) });
};

describe('auto keeps the chain measured faster when latency counts', () => {
  const decide = (model: Model) => optimizeModel(model, shapesOf(model), { method: 'auto', policy: { kind: 'energy', energy: 0.999 }, minParams: 0, seed: 0, decideOnly: true });

  it('CP wins on error at fewer MACs; timed slower than Tucker-2, Tucker-2 is kept though its MACs are higher', async () => {
    const model = new Model(decodeModel(cpConvModel()));
    const [rec] = decide(model);
    expect(rec).toMatchObject({ pass: 'conv-cp', ranks: [R] });
    const before = encodeModel(model.proto);
    const calls: number[] = [];
    const out = await preferFaster(model, [rec!], { policy: { kind: 'energy', energy: 0.999 }, seed: 0, threads: 1, shapes: shapesOf(model), time: clock(9, calls) });
    // Both chains in one timing loop; the model left as it was.
    expect(calls).toEqual([2]);
    expect(encodeModel(model.proto)).toEqual(before);
    const [kept] = out.records;
    expect(kept).toMatchObject({ pass: 'conv-tucker2', method: 'tucker2', ranks: [R, R] });
    expect(kept!.macsAfter!).toBeGreaterThan(rec!.macsAfter!);
    expect(kept!.paramsAfter).toBeGreaterThan(rec!.paramsAfter);
    expect(kept!.note).toMatch(/timed in ORT: cp 3 9\.00 ms, tucker2 3,3 4\.00 ms: tucker2 kept, faster$/);
    expect(out.notes).toEqual(['auto: 1 layer(s) kept another method\'s chain, timed faster in ORT than the rival that won on error: conv (tucker2 3,3 4.00 ms, cp 3 9.00 ms)']);
    // The decision applies as a plan: Tucker-2 at 3,3 is exact on this kernel too.
    const applied = optimizeModel(new Model(decodeModel(cpConvModel())), undefined, { method: 'auto', policy: { kind: 'energy', energy: 0.999 }, minParams: 0, seed: 0 }, { version: 1, model: '', policy: 'test', layers: out.records });
    expect(applied[0]).toMatchObject({ pass: 'conv-tucker2', ranks: [R, R] });
    expect(applied[0]!.relError!).toBeLessThan(1e-4);
  });

  it('timed faster, CP stays; a record auto did not change by comparison is not timed', async () => {
    const model = new Model(decodeModel(cpConvModel()));
    const [rec] = decide(model);
    const calls: number[] = [];
    const out = await preferFaster(model, [rec!], { policy: { kind: 'energy', energy: 0.999 }, seed: 0, threads: 1, shapes: shapesOf(model), time: clock(2, calls) });
    expect(out.records[0]).toMatchObject({ pass: 'conv-cp', ranks: [R] });
    expect(out.records[0]!.note).toMatch(/timed in ORT: cp 3 2\.00 ms, tucker2 3,3 4\.00 ms$/);
    expect(out.notes).toEqual([]);
    const tucker = { ...rec!, pass: 'conv-tucker2', method: 'tucker2', ranks: [R, R] };
    const none: number[] = [];
    const same = await preferFaster(model, [tucker], { policy: { kind: 'energy', energy: 0.999 }, seed: 0, threads: 1, shapes: shapesOf(model), time: clock(2, none) });
    expect(none).toEqual([]);
    expect(same.records).toEqual([tucker]);
  });

  it('the choices a later rival replaced are timed too, and the fastest of all is kept', async () => {
    const model = new Model(decodeModel(cpConvModel()));
    const [rec] = decide(model);
    // As if spatial SVD had beaten CP's choice along the comparison: CP 3 is then a contender too.
    const svd = { ...rec!, pass: 'conv-spatial-svd', method: 'spatial-svd', ranks: [4] };
    const calls: number[] = [];
    // Chains of two convs (spatial SVD's) 6 ms, CP's depthwise one 1 ms, Tucker-2's 4 ms.
    const time: ChainsTimer = async (_m, _l, chains) => {
      calls.push(chains.length);
      return ok({ originalMs: 10, candidateMs: chains.map((c) => (depthwise(c) ? 1 : c.graph!.node.length === 2 ? 6 : 4)) });
    };
    const contenders = new Map([['conv', [{ pass: 'conv-cp', ranks: [R] }, { pass: 'conv-spatial-svd', ranks: [4] }]]]);
    const out = await preferFaster(model, [svd], { policy: { kind: 'energy', energy: 0.999 }, seed: 0, threads: 1, shapes: shapesOf(model), time, contenders });
    // Spatial SVD (the record's own, listed once), CP and Tucker-2: one loop of three chains.
    expect(calls).toEqual([3]);
    expect(out.records[0]).toMatchObject({ pass: 'conv-cp', method: 'cp', ranks: [R], paramsAfter: rec!.paramsAfter, macsAfter: rec!.macsAfter });
    expect(out.records[0]!.note).toMatch(/timed in ORT: spatial-svd 4 6\.00 ms, cp 3 1\.00 ms, tucker2 3,3 4\.00 ms: cp kept, faster$/);
  });

  it('fastestContender times every chain with the layer in ORT (real timing: only that each is timed)', async () => {
    const model = new Model(decodeModel(cpConvModel()));
    const layer = convLayer(model);
    const cx = context(model);
    const bound = (name: string) => { const b = bind(passByName(name)!, layer, cx); if (isSkip(b)) throw new Error(b.skip); return b; };
    const r = await fastestContender(model, layer, [{ bound: bound('conv-cp'), ranks: [R] }, { bound: bound('conv-tucker2'), ranks: [R, R] }, { bound: bound('conv-spatial-svd'), ranks: [4] }], cx, { threads: 1, shapes: shapesOf(model) });
    if (!r.ok) throw r.error;
    expect(r.value.ms).toHaveLength(3);
    for (const ms of [r.value.originalMs, ...r.value.ms]) expect(ms).toBeGreaterThan(0);
    expect(r.value.ms[r.value.index]).toBe(Math.min(...r.value.ms));
  });
});
