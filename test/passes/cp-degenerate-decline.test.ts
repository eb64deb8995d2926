/**
 * No degenerate CP is shipped (issue 19, "Stable CP"): a CP-ALS fit whose rank-one terms
 * cancel is refitted under the sensitivity bound (cp-sensitivity.ts); when that refit does
 * not meet the bound (or does not lower the ratio), conv-cp and conv-cp4 decline the rank
 * with the reason instead of shipping it. A bound of 0.5 cannot be met by any CP of rank
 * 2 (a balanced CP's ratio is at least R^(-1/N) ≈ 0.79 for 3-way rank 2), so the passes
 * here run the real refit with that bound (stabilizeAls wrapped to pass it). A declined rank
 * is unusable to the searches: the energy search moves past it, auto's comparison and shrink
 * do not pick it, a winner that declines when made gives way to the choice it replaced, and
 * a sensitivity ladder offers no rung of it.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { cpAlsSync } from '../../src/linalg/cp-als.js';
import { degenerateReason, SENSITIVITY_LIMIT, stabilizeAls, worstStabilized } from '../../src/linalg/cp-sensitivity.js';
import { Model } from '../../src/graph/graph.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import { createRng } from '../../src/util/rng.js';
import { isSkip, type PassContext } from '../../src/rewrite/pass.js';
import { runAll } from '../../src/optimize/output-error.js';
import { measureSensitivity } from '../../src/optimize/sensitivity.js';
import { findLayers } from '../../src/graph/layers.js';
import { convCp, quickDegenerate, type ConvCpMatch } from '../../passes/conv-cp.js';
import { borderRank2 } from '../helpers/cp-kernels.js';
import { compareInOrt, convModel, cpKernel, matchOnly, opCounts, randn, windowSpec, type ConvSpec } from './conv-harness.js';

vi.mock('../../src/linalg/cp-sensitivity.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/linalg/cp-sensitivity.js')>();
  return { ...m, stabilizeAls: vi.fn(m.stabilizeAls) };
});

let real: typeof stabilizeAls;
beforeEach(async () => {
  real = (await vi.importActual<typeof import('../../src/linalg/cp-sensitivity.js')>('../../src/linalg/cp-sensitivity.js')).stabilizeAls;
  vi.mocked(stabilizeAls).mockReset().mockImplementation(real);
});
afterEach(() => { vi.restoreAllMocks(); });

const [T, S] = [6, 5];

describe('no degenerate CP is shipped', () => {
  it('stabilizeAls reports an unmet bound (bounded: false, the bound named); the reason names ratio and bound; a layer of groups reports its unbounded group', () => {
    const x = borderRank2(createRng(2), T, S, 9);
    const als = cpAlsSync({ data: x, shape: [T, S, 9] }, 2, { maxIter: 200, tol: 1e-9, seed: 2 });
    const met = real({ data: Float64Array.from(x), shape: [T, S, 9] }, als);
    expect(met?.report).toMatchObject({ bounded: true, limit: SENSITIVITY_LIMIT });
    expect(degenerateReason(2, met!.report)).toBeUndefined();
    const unmet = real({ data: Float64Array.from(x), shape: [T, S, 9] }, als, undefined, { limit: 0.5, maxSweeps: 20 });
    expect(unmet?.report).toMatchObject({ bounded: false, limit: 0.5 });
    expect(unmet!.report.ratioAfter).toBeGreaterThan(0.5);
    expect(degenerateReason(2, unmet!.report)).toMatch(/^degenerate CP at rank 2: sensitivity ratio \d+\.\d\d > 0\.5 even after the refit under the sensitivity bound/);
    // Of a bounded group with a larger ratio before and an unbounded one, the layer reports the unbounded one.
    const worst = worstStabilized([{ ...met!.report, ratioBefore: 1e6 }, unmet!.report]);
    expect(worst?.bounded).toBe(false);
  });

  it('conv-cp declines the rank with the reason (the layer is left as it was); with the real bound it ships the refitted CP', () => {
    const rng = createRng(2);
    const spec: ConvSpec = { S, T, bias: true, ...windowSpec(2, 3, 1, 1, 'sym') };
    const bytes = convModel(spec, borderRank2(rng, T, S, 9), rng);
    const opts = { method: 'cp' as const, policy: { kind: 'fixed' as const, rank: 2 }, minParams: 0, seed: 0, saves: 'params' as const };
    const shipped = new Model(decodeModel(bytes));
    const [ok] = optimizeModel(shipped, undefined, opts);
    expect(ok).toMatchObject({ pass: 'conv-cp', ranks: [2] });
    expect(ok!.note).toMatch(/refitted under the sensitivity bound: ratio \d+\.\d\d → [0-2]\.\d\d \(limit 2\), fit error/);
    vi.mocked(stabilizeAls).mockImplementation((x, als, g) => real(x, als, g, { limit: 0.5, maxSweeps: 20 }));
    const model = new Model(decodeModel(bytes));
    const [rec] = optimizeModel(model, undefined, opts);
    expect(rec!.skipped).toBe(true);
    expect(rec!.reason).toMatch(/degenerate CP at rank 2: sensitivity ratio \S+ > 0\.5 even after the refit/);
    expect(encodeModel(model.proto)).toEqual(bytes);
  });

  it('conv-cp4 declines too (grouped: any group that stays degenerate declines the layer)', () => {
    const rng = createRng(5);
    const spec: ConvSpec = { S: 2 * S, T: 2 * T, group: 2, ...windowSpec(2, 3, 1, 1, 'sym') };
    // Two groups, each a [T, S, 3, 3] kernel with cancelling structure along its channels.
    const w = new Float32Array(2 * T * S * 9);
    for (let j = 0; j < 2; j++) w.set(borderRank2(rng, T, S, 9), j * T * S * 9);
    const bytes = convModel(spec, w, rng);
    vi.mocked(stabilizeAls).mockImplementation((x, als, g) => real(x, als, g, { limit: 0.5, maxSweeps: 20 }));
    const model = new Model(decodeModel(bytes));
    const [rec] = optimizeModel(model, undefined, { method: 'cp4', policy: { kind: 'fixed', rank: 2 }, minParams: 0, seed: 0, saves: 'params' });
    expect(rec!.skipped).toBe(true);
    expect(rec!.reason).toMatch(/degenerate CP at rank 2/);
    expect(encodeModel(model.proto)).toEqual(bytes);
  });

  it('a refit that does not lower the ratio (here: no sweeps to spend) returns the ALS fit marked not bounded, and the pass would decline it', () => {
    const x = borderRank2(createRng(9), T, S, 9);
    const als = cpAlsSync({ data: x, shape: [T, S, 9] }, 2, { maxIter: 200, tol: 1e-9, seed: 9 });
    const st = real({ data: Float64Array.from(x), shape: [T, S, 9] }, als, undefined, { maxSweeps: 0 });
    expect(st?.report).toMatchObject({ bounded: false, limit: SENSITIVITY_LIMIT });
    expect(st!.report.ratioBefore).toBeGreaterThan(SENSITIVITY_LIMIT);
    expect(st!.report.ratioAfter).toBe(st!.report.ratioBefore);
    expect(st!.fit).toBe(als);
    expect(degenerateReason(2, st!.report)).toMatch(/> 2 even after the refit/);
  });
});

/**
 * Every fit of rank below `below` refitted under a bound no CP of such a rank can meet
 * (0.01 < R^(-1/3), the least ratio of a balanced rank-R 3-way CP, for R < 10⁶): the real
 * refit runs and misses it, so that rank is declined; other ranks get the real bound.
 */
function declineBelow(below: number): void {
  vi.mocked(stabilizeAls).mockImplementation((x, als, g) => (als.rank < below ? real(x, als, g, { limit: 0.01, maxSweeps: 20 }) : real(x, als, g)));
}

/** A [T, S, 3, 3] conv of exact CP rank 6 (orthonormal factors: Tucker-2 [6, 6] is exact too), with bias. */
function rank6(T2: number, S2: number): { bytes: Uint8Array; spec: ConvSpec } {
  const rng = createRng(8);
  const spec: ConvSpec = { S: S2, T: T2, bias: true, ...windowSpec(2, 3, 1, 1, 'sym') };
  return { bytes: convModel(spec, cpKernel(rng, T2, S2, 9, 6), rng), spec };
}

const energy = { kind: 'energy', energy: 0.999 } as const;

describe('a declined rank is unusable to the rank searches', () => {
  it('the energy search counts a declined rank as missing the energy and ends on a stable one, which ships and matches ORT', async () => {
    const { bytes, spec } = rank6(12, 10);
    const free = matchOnly(bytes, convCp).m;
    if (isSkip(free)) throw new Error(free.skip);
    expect(convCp.chooseRanks(free, energy)).toEqual([6]);
    declineBelow(8);
    const { m, model, cx } = matchOnly(bytes, convCp) as { m: ConvCpMatch; model: Model; cx: PassContext };
    const r = convCp.chooseRanks(m, energy);
    if (isSkip(r)) throw new Error(r.skip);
    // Ranks 6 and 7 meet the energy but are declined: the smallest usable rank is 8.
    expect(r).toEqual([8]);
    expect(m.weightErr2!.get(6)).toBe(Infinity);
    const applied = convCp.apply(m, r, cx);
    if (isSkip(applied)) throw new Error(applied.skip);
    expect(applied.relError).toBeLessThan(0.03);
    expect(m.fitted!.stabilized?.bounded ?? true).toBe(true);
    model.root.removeUnusedInitializers();
    const cmp = await compareInOrt(bytes, encodeModel(model.proto), spec, 8);
    expect(cmp.rel).toBeLessThan(1.5 * applied.relError + 1e-4);
  });

  it('every rank up to break-even declined: the energy search says so, the layer is left as it was with the reason, and sensitivity offers no rung, saying why', async () => {
    const rng = createRng(3);
    // 1-D conv 5→6, k = 3: break-even rank 6 (14·R < 90), every rank below 8.
    const spec: ConvSpec = { S, T, ...windowSpec(1, 3, 1, 1, 'sym') };
    const bytes = convModel(spec, borderRank2(rng, T, S, 3), rng);
    declineBelow(1e6);
    const { m } = matchOnly(bytes, convCp);
    if (isSkip(m)) throw new Error(m.skip);
    const r = convCp.chooseRanks(m, { kind: 'energy', energy: 0.9 });
    expect(isSkip(r) && r.skip).toMatch(/^energy 0\.9: no CP rank up to 6 both meets it and is stable \(degenerate CP at rank 6: sensitivity ratio \d+\.\d\d > 0\.01 even after the refit/);
    const model = new Model(decodeModel(bytes));
    const [rec] = optimizeModel(model, undefined, { method: 'cp', policy: { kind: 'energy', energy: 0.9 }, minParams: 0, seed: 0 });
    expect(rec).toMatchObject({ skipped: true });
    expect(rec!.reason).toMatch(/stable \(degenerate CP at rank 6: /);
    expect(encodeModel(model.proto)).toEqual(bytes);
    // A budget's ladder: no rung, and the reason is the decline (not "no rank below break-even").
    const feeds = [{ x: { type: 'float32' as const, dims: [1, S, ...spec.size], data: randn(createRng(4), S * spec.size[0]!) } }];
    const ref = await runAll({ bytes }, feeds);
    if (!ref.ok) throw ref.error;
    const sm = new Model(decodeModel(bytes));
    const [sens] = await measureSensitivity(sm, findLayers(sm), { method: 'cp', feeds, reference: ref.value, cx: { model: sm, rng: createRng(7), shared: new Map() } });
    expect(sens!.candidates).toEqual([]);
    expect(sens!.reason).toMatch(/degenerate CP at rank \d+: sensitivity ratio \S+ > 0\.01 even after the refit/);
  });

  it('auto: a CP declined at equal size does not compete (the note says why); the shrink after a win passes over declined ranks', () => {
    const { bytes } = rank6(16, 16);
    const run = () => optimizeModel(new Model(decodeModel(bytes)), undefined, { method: 'auto', policy: energy, minParams: 0, seed: 0 })[0]!;
    declineBelow(13);
    const lost = run();
    expect(lost).toMatchObject({ pass: 'conv-tucker2', ranks: [6, 6] });
    expect(lost.note).toMatch(/(^|; )cp 12 declined \(degenerate CP at rank 12: sensitivity ratio \S+ > 0\.01 even after the refit/);
    // Without declines CP wins at 12 and shrinks to 6 (exact); with ranks below 8 declined it ends on 8.
    declineBelow(8);
    const won = run();
    expect(won).toMatchObject({ pass: 'conv-cp', ranks: [8] });
    expect(won.note).toMatch(/tucker2 6,6 err \S+ vs cp 12 err \S+; cp 8 err \S+, the smallest within it/);
  });

  it('auto: a CP that won but declines when made gives way to the Tucker-2 it replaced, which ships and matches ORT', async () => {
    const { bytes, spec } = rank6(16, 16);
    declineBelow(8);
    // The fit made for the rewrite is a fresh one (as when the shrink's last fit was at another
    // rank), and every fit from then on stays degenerate.
    const apply = convCp.apply.bind(convCp);
    vi.spyOn(convCp, 'apply').mockImplementation((m, ranks, cx) => {
      declineBelow(1e6);
      return apply({ ...m, fitted: undefined }, ranks, cx);
    });
    const model = new Model(decodeModel(bytes));
    const [rec] = optimizeModel(model, undefined, { method: 'auto', policy: energy, minParams: 0, seed: 0 });
    expect(rec).toMatchObject({ pass: 'conv-tucker2', ranks: [6, 6] });
    expect(rec!.skipped).toBeUndefined();
    expect(rec!.note).toMatch(/; cp 8 declined \(degenerate CP at rank 8: sensitivity ratio \S+ > 0\.01 even after the refit/);
    expect(opCounts(model.proto)).toEqual({ Conv: 3 });
    model.root.removeUnusedInitializers();
    const cmp = await compareInOrt(bytes, encodeModel(model.proto), spec, 8);
    expect(cmp.rel).toBeLessThan(1e-4);
  });
});

describe('a plan whose CP declines when made', () => {
  const planOf = (file?: string) => ({
    version: 1 as const, model: 'm', policy: 'plan', ...(file !== undefined && { file }),
    layers: [{ name: 'conv', op: 'Conv', where: 'main graph', ms: 0, weightShape: [16, 16, 3, 3], paramsBefore: 2304, paramsAfter: 392, pass: 'conv-cp', method: 'cp', ranks: [8] }],
  });

  it('made in the run (a budget, the latency screen): gives way to Tucker-2 at no more params, which ships and matches ORT; a plan file is applied exactly (left, with the reason)', async () => {
    const { bytes, spec } = rank6(16, 16);
    declineBelow(1e6);
    const opts = { method: 'auto' as const, policy: energy, minParams: 0, seed: 0 };
    const model = new Model(decodeModel(bytes));
    const [rec] = optimizeModel(model, undefined, opts, planOf());
    expect(rec).toMatchObject({ pass: 'conv-tucker2' });
    expect(rec!.skipped).toBeUndefined();
    // CP rank 8 keeps 8·(16+16+9) = 328 params; Tucker-2 at that share, no more.
    expect(rec!.paramsAfter).toBeLessThanOrEqual(8 * (16 + 16 + 9));
    expect(rec!.note).toMatch(/^cp 8 declined \(degenerate CP at rank 8: sensitivity ratio \S+ > 0\.01 even after the refit.*\); tucker2 \d+,\d+ at no more params instead$/);
    expect(opCounts(model.proto)).toEqual({ Conv: 3 });
    model.root.removeUnusedInitializers();
    // The very model a plan of Tucker-2 at those ranks writes, and it runs in ORT.
    const direct = new Model(decodeModel(bytes));
    optimizeModel(direct, undefined, opts, { ...planOf(), layers: [{ ...planOf().layers[0]!, pass: 'conv-tucker2', method: 'tucker2', ranks: rec!.ranks! }] });
    direct.root.removeUnusedInitializers();
    expect(encodeModel(model.proto)).toEqual(encodeModel(direct.proto));
    const cmp = await compareInOrt(bytes, encodeModel(model.proto), spec, 8);
    expect(cmp.rel).toBeLessThan(1);

    const exact = new Model(decodeModel(bytes));
    const [left] = optimizeModel(exact, undefined, opts, planOf('plan.json'));
    expect(left!.skipped).toBe(true);
    expect(left!.reason).toMatch(/^degenerate CP at rank 8/);
    expect(encodeModel(exact.proto)).toEqual(bytes);
  });
});

describe('quick fits (sensitivity\'s rival rungs) are not offered when degenerate', () => {
  it('conv-cp with quickFits declines a fit whose terms cancel (built, it would be refitted or declined); a stable quick fit is applied; the check conv-cp4 shares', () => {
    const rng = createRng(2);
    const spec: ConvSpec = { S: 5, T: 6, bias: true, ...windowSpec(2, 3, 1, 1, 'sym') };
    const { m, cx } = matchOnly(convModel(spec, borderRank2(rng, 6, 5, 9), rng), convCp);
    if (isSkip(m)) throw new Error(m.skip);
    const quick = convCp.apply(m, [2], { ...cx, quickFits: true });
    expect(isSkip(quick) && quick.skip).toMatch(/^degenerate CP at rank 2 \(quick fit, sensitivity ratio \d+\.\d\d > 2\): not offered/);
    // A well-conditioned kernel (exact CP rank 3): its quick fit is applied.
    const exact = matchOnly(convModel(spec, cpKernel(createRng(3), 6, 5, 9, 3), createRng(3)), convCp);
    if (isSkip(exact.m)) throw new Error(exact.m.skip);
    expect(isSkip(convCp.apply(exact.m, [3], { ...exact.cx, quickFits: true }))).toBe(false);
    // The shared check: only quick fits, only above the limit.
    const cx2 = { ...cx, quickFits: true };
    expect(quickDegenerate({ rank: 4, sensitivity: { ss: 1, norm: 1, ratio: SENSITIVITY_LIMIT * 1.5 } }, cx2)?.skip).toMatch(/rank 4 \(quick fit/);
    expect(quickDegenerate({ rank: 4, sensitivity: { ss: 1, norm: 1, ratio: SENSITIVITY_LIMIT * 1.5 } }, cx)).toBeUndefined();
    expect(quickDegenerate({ rank: 4, sensitivity: { ss: 1, norm: 1, ratio: 0.9 } }, cx2)).toBeUndefined();
  });
});
