/**
 * Issue 5 on the real models: data-aware vs plain at equal parameters, and budgets
 * (met within 2% or the run says why; an error budget holds when re-measured).
 * Shapes are kept small so each run stays within seconds.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { decodeModel } from '../../src/onnx/codec.js';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import * as ort from 'onnxruntime-node';
import { readNpy } from '../../src/io/npy.js';
import { main } from '../../src/cli/main.js';
import type { Report } from '../../src/report/report.js';
import type { LayerSensitivity } from '../../src/optimize/sensitivity.js';
import { REAL } from '../helpers/models.js';
import { calibFile } from '../helpers/calib.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { machineNchwcBlock } from '../../src/verify/cpu-block.js';
import { DEFAULT_MIN_PARAMS } from '../../src/optimize/driver.js';

async function optimizeJson(...argv: string[]): Promise<{ code: number; report: Report; err: string }> {
  let out = '';
  let err = '';
  const code = await main(['optimize', ...argv, '--json'], { out: (s) => { out += s; }, err: (s) => { err += s; } });
  if (code === 2) throw new Error(err);
  return { code, report: JSON.parse(out) as Report, err };
}

/**
 * Parameters the anchored fit adds: a bias on a rewritten layer that had none (its chain's
 * last node gains a bias input), counted from the original model and the written one.
 */
function addedBiasParams(original: string, written: string, report: Report): number {
  const orig = decodeModel(new Uint8Array(readFileSync(original))).graph!;
  const out = decodeModel(new Uint8Array(readFileSync(written))).graph!;
  const numel = (name: string): number => {
    const t = out.initializer.find((x) => x.name === name);
    if (t) return t.dims.reduce((a, b) => a * b, 1);
    const c = out.node.find((n) => n.opType === 'Constant' && n.output[0] === name)?.attribute.find((a) => a.name === 'value')?.t;
    return c ? c.dims.reduce((a, b) => a * b, 1) : 0;
  };
  let added = 0;
  for (const l of report.layers.filter((x) => !x.skipped)) {
    const before = orig.node.find((n) => (n.name || n.output[0]) === l.name)!;
    if (before.opType === 'MatMul' || (before.input[2] ?? '') !== '') continue;
    const last = out.node.find((n) => n.name === l.nodes![l.nodes!.length - 1])!;
    if ((last.input[2] ?? '') !== '') added += numel(last.input[2]!);
  }
  return added;
}

// Each case runs the whole pipeline on a real model; a loaded machine can take minutes.
vi.setConfig({ testTimeout: 600_000 });

const REC_SHAPE = ['--shape', 'x:1x3x48x96'];
// Budgets measure every eligible layer in ORT: limiting them to the larger layers keeps
// each run to seconds without changing what is tested.
const BIG_LAYERS = ['--min-params', '20000'];
// A budget that saves latency considers only the layers carrying 95% of the MACs by default;
// at 48x96 rec's heaviest convs cannot be compressed within cosine 0.99, its lighter layers can.
const EVERY_LAYER = ['--heaviest', '100'];

describe('data-aware decomposition on real models', () => {
  for (const [name, shape, dims] of [
    ['rec', REC_SHAPE, [16, 3, 48, 96]],
    ['cls', ['--shape', 'x:1x3x48x192'], [16, 3, 48, 192]],
  ] as [keyof typeof REAL, string[], number[]][]) {
    it(`at equal params, the output error is no worse than plain (and lower): ${name}`, async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-da-'));
      const common = [REAL[name], path.join(dir, 'o.onnx'), ...shape, '--min-params', '0', '--no-latency'];
      const plainPlan = path.join(dir, 'plain.json');
      const plain = await optimizeJson(...common, '--rank-ratio', '0.5', '--report', plainPlan);
      // The same decisions (passes and ranks), fitted with the calibration statistics: --method
      // auto would compare the challengers by data error instead, and pick other ranks.
      const aware = await optimizeJson(...common, '--plan', plainPlan, '--calib', calibFile(dir, dims, 5));
      expect(aware.report.calibration).toMatch(/16 samples/);
      expect(aware.report.layers.some((l) => l.dataError !== undefined)).toBe(true);
      // Equal ranks → equal parameter counts, once the biases the anchored fit adds to layers
      // that had none, counted here from the written file, are set aside.
      const added = addedBiasParams(REAL[name], path.join(dir, 'o.onnx'), aware.report);
      expect(aware.report.output.params - added).toBe(plain.report.output.params);
      const e = (r: Report): number => Math.max(...r.verify!.outputs.map((o) => o.relL2));
      expect(e(aware.report)).toBeLessThan(e(plain.report));
    });
  }
});

describe('statistics only for the layers a run may rewrite', () => {
  it('cls with --exclude and --min-params: one statistic per eligible layer, none for the others', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-elig-'));
    const exclude = 'Conv\.4[45]$';
    const shapes = new Map([['x', [1, 3, 48, 192]]]);
    const all = findLayers(new Model(decodeModel(readFileSync(REAL.cls))), shapes);
    const eligible = all.filter((l) => !new RegExp(exclude).test(l.name) && !new RegExp(exclude).test(l.weightName) && l.params >= 4096);
    expect(eligible.length).toBeGreaterThan(0);
    expect(eligible.length).toBeLessThan(all.length / 2);
    const { report } = await optimizeJson(
      REAL.cls, path.join(dir, 'o.onnx'), '--shape', 'x:1x3x48x192', '--rank-ratio', '0.5', '--exclude', exclude,
      '--min-params', '4096', '--calib', calibFile(dir, [2, 3, 48, 192], 3), '--no-verify',
    );
    expect(report.notes).toContain(`data-aware decomposition: input statistics for ${eligible.length} layer(s)`);
  });

  it('a plan applied as it stands: statistics for exactly the layers it rewrites, the small ones too', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-plan-stats-'));
    const common = [REAL.cls, path.join(dir, 'o.onnx'), '--shape', 'x:1x3x48x192', '--no-verify', '--no-latency'];
    // The plan takes layers below the default --min-params (4096); the run applying it keeps the default filters.
    const planFile = path.join(dir, 'plan.json');
    const plain = await optimizeJson(...common, '--rank-ratio', '0.5', '--min-params', '0', '--report', planFile);
    const planned = plain.report.layers.filter((l) => !l.skipped);
    expect(planned.some((l) => l.paramsBefore < DEFAULT_MIN_PARAMS)).toBe(true);
    const { report } = await optimizeJson(...common, '--plan', planFile, '--calib', calibFile(dir, [2, 3, 48, 192], 3), '--no-anchor');
    expect(report.notes).toContain(`data-aware decomposition: input statistics for ${planned.length} layer(s)`);
    const rewritten = report.layers.filter((l) => !l.skipped);
    expect(rewritten.map((l) => l.name)).toEqual(planned.map((l) => l.name));
    // Each fit was whitened by its statistics (before, the small ones were fitted on the weights alone).
    for (const l of rewritten) expect(l.dataError, l.name).toBeDefined();
  });

  it('cls with --heaviest 5 and a budget: statistics, sensitivity and rewrites only for the 5 layers with the most MACs', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-heavy-'));
    const { report } = await optimizeJson(
      REAL.cls, path.join(dir, 'o.onnx'), '--shape', 'x:1x3x48x192', '--target-params', '0.9', '--heaviest', '5',
      '--calib', calibFile(dir, [2, 3, 48, 192], 3), '--no-verify',
    );
    // The 5 heaviest by the MACs the report gives every layer (from the learned shapes);
    // by params the SE blocks' 1x1 convs (10000 params, at 1x1 spatial size) would come first.
    const big = report.layers.filter((l) => l.paramsBefore >= 4096).sort((a, b) => b.macsBefore! - a.macsBefore!);
    // Distinct MACs at the cut, so "the 5 heaviest" is one set.
    expect(big[4]!.macsBefore).toBeGreaterThan(big[5]!.macsBefore!);
    const top = new Set(big.slice(0, 5).map((l) => l.name));
    expect(report.notes).toContain('data-aware decomposition: input statistics for 5 layer(s)');
    expect(new Set(report.sensitivity!.map((l) => l.name))).toEqual(top);
    for (const l of big.slice(5)) {
      expect(l.skipped, l.name).toBe(true);
      expect(l.reason).toBe('not among the 5 layers with the most MACs (--heaviest 5)');
    }
    expect(report.layers.filter((l) => !l.skipped).every((l) => top.has(l.name))).toBe(true);
    expect(report.layers.some((l) => !l.skipped)).toBe(true);
  });
});

describe('whitening damping on a real model', () => {
  // Undamped, every SVD layer of rec fitted to 8 samples divided by directions those
  // samples barely excite; compressed together, the layers above pushed the inputs into
  // them and data-aware came out little or no better than plain (rel. L2 0.49–0.73,
  // depending on the samples, vs 0.76). Damped: 0.36 (these samples).
  it('rec, all SVD layers at rank ratio 0.5, 8 calibration samples: data-aware well below plain', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-damp-'));
    const common = [REAL.rec, path.join(dir, 'o.onnx'), '--shape', 'x:1x3x48x320', '--rank-ratio', '0.5', '--method', 'svd', '--no-latency'];
    const plain = await optimizeJson(...common);
    const aware = await optimizeJson(...common, '--calib', calibFile(dir, [8, 3, 48, 320], 11));
    const e = (r: Report): number => Math.max(...r.verify!.outputs.map((o) => o.relL2));
    // Equal ranks; the anchored fit adds biases to layers that had none.
    expect(aware.report.output.params - plain.report.output.params).toBe(addedBiasParams(REAL.rec, path.join(dir, 'o.onnx'), aware.report));
    expect(e(aware.report)).toBeLessThan(0.6 * e(plain.report));
  });
});

describe('budgets on a real model', () => {
  it('--target-params is met within 2%', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-b-'));
    const { report } = await optimizeJson(REAL.rec, path.join(dir, 'o.onnx'), ...REC_SHAPE, '--target-params', '0.8', ...BIG_LAYERS, '--no-latency', '--no-verify');
    const b = report.budget!;
    expect(b.kind).toBe('params');
    expect(b.met).toBe(true);
    expect(b.why).toBeUndefined();
    const ratio = report.output.params / report.input.params;
    expect(ratio).toBeLessThanOrEqual(0.8 * 1.02);
    expect(b.achieved).toBeCloseTo(ratio, 9);
  });

  it('--max-error holds when the output error is re-measured, and verification agrees', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-b-'));
    const { code, report } = await optimizeJson(REAL.rec, path.join(dir, 'o.onnx'), ...REC_SHAPE, '--max-error', 'cosine:0.995', ...BIG_LAYERS, '--no-latency');
    const b = report.budget!;
    expect(b.met).toBe(true);
    expect(b.measuredError).toBeLessThanOrEqual(Math.sqrt(2 * 0.005) + 1e-9);
    // The header names the cosine the user asked for, with its rel. L2 equivalent.
    expect(report.policy).toBe('min output cosine 0.995 (max output error (rel. L2) 0.100)');
    expect(report.output.params).toBeLessThan(report.input.params);
    // Verification judges at the cosine asked for, on inputs the budget never saw: the
    // verdict and the exit code agree, and the held-out cosine is near the budget's.
    expect(report.verify!.minCosine).toBe(0.995);
    const worst = Math.min(...report.verify!.outputs.map((o) => o.cosine));
    expect(report.verify!.pass).toBe(worst >= 0.995);
    expect(code).toBe(report.verify!.pass ? 0 : 1);
    expect(worst).toBeGreaterThan(0.985);
  });

  it('--max-error top1:P holds on the calibration inputs when checked independently in ORT', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-b-'));
    const dims = [16, 3, 48, 192];
    const calib = calibFile(dir, dims, 11);
    const out = path.join(dir, 'o.onnx');
    const { report } = await optimizeJson(REAL.cls, out, '--shape', 'x:1x3x48x192', '--max-error', 'top1:0.9', '--calib', calib, '--no-data-aware', '--no-latency', '--no-verify');
    const b = report.budget!;
    expect(b.kind).toBe('error');
    expect(b.unit).toMatch(/top-1/);
    expect(b.target).toBe(0.9);
    expect(b.met).toBe(true);
    expect(report.output.params).toBeLessThan(report.input.params);
    // Recount the agreement here, sample by sample, from the two files.
    const [a, o] = await Promise.all([REAL.cls, out].map((f) => ort.InferenceSession.create(f)));
    const npy = readNpy(calib);
    if (!npy.ok) throw npy.error;
    const data = npy.value.data as Float32Array;
    const per = data.length / dims[0]!;
    let agree = 0;
    for (let i = 0; i < dims[0]!; i++) {
      const x = new ort.Tensor('float32', data.slice(i * per, (i + 1) * per), [1, ...dims.slice(1)]);
      const [ya, yo] = [await a.run({ x }), await o.run({ x })].map((r) => r[Object.keys(r)[0]!]!.data as Float32Array);
      const arg = (y: Float32Array) => y.indexOf(Math.max(...y));
      if (arg(ya!) === arg(yo!)) agree++;
    }
    expect(agree / dims[0]!).toBeGreaterThanOrEqual(0.9);
    expect(b.achieved).toBeCloseTo(agree / dims[0]!, 9);
  });

  it('--stages 3: the target is approached stage by stage, factored layers are split again without adding nodes', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-b-'));
    const out = path.join(dir, 'o.onnx');
    const { report } = await optimizeJson(REAL.cls, out, '--shape', 'x:1x3x48x192', '--target-params', '0.75', '--stages', '3', '--no-latency');
    const b = report.budget!;
    expect(b.met).toBe(true);
    expect(report.output.params / report.input.params).toBeLessThanOrEqual(0.75 * 1.02);
    const st = b.stages!;
    expect(st.map((x) => x.stage)).toEqual([1, 2, 3]);
    // Each stage keeps less than the one before, and a stage stops near its own target.
    for (let i = 1; i < 3; i++) expect(st[i]!.params!).toBeLessThanOrEqual(st[i - 1]!.params!);
    expect(st[0]!.params!).toBeGreaterThan(st[2]!.params!);
    expect(st[0]!.params!).toBeGreaterThan(0.8);
    // One chain per rewritten layer, nothing left of earlier stages.
    const m = decodeModel(new Uint8Array(readFileSync(out)));
    const chains = report.layers.filter((l) => !l.skipped);
    const lrNodes = m.graph!.node.filter((n) => (n.docString ?? '').startsWith('onnx-lr:'));
    expect(lrNodes.map((n) => n.name).sort()).toEqual(chains.flatMap((l) => l.nodes!).sort());
    expect(m.graph!.node.some((n) => /merged_w/.test(n.input.join()))).toBe(false);
    // Three stages to 75% of the parameters still pass the default check (cosine 0.9907 here).
    expect(report.verify!.pass).toBe(true);
    expect(report.verify!.outputs[0]!.cosine).toBeGreaterThanOrEqual(0.99);
  });

  it('--target-latency: candidates are timed per layer, only faster ones are kept, and the result is re-measured', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-b-'));
    const { report } = await optimizeJson(REAL.rec, path.join(dir, 'o.onnx'), ...REC_SHAPE, '--target-latency', '0.9', ...BIG_LAYERS);
    const b = report.budget!;
    expect(b.kind).toBe('latency');
    expect(b.unit).toMatch(/latency/);
    // Some rewrites were kept, each one at a candidate measured faster than its layer (the
    // run's own measurements: whether ORT is faster on this machine now is the benchmarks' job).
    const kept = report.layers.filter((l) => !l.skipped);
    expect(kept.length).toBeGreaterThan(0);
    for (const l of kept) {
      const s = report.sensitivity!.find((x) => x.name === l.name)!;
      const c = s.candidates.find((x) => x.ranks.join() === l.ranks!.join())!;
      expect(c, l.name).toBeDefined();
      expect(c.ms!, l.name).toBeLessThan(s.ms!);
    }
    // Re-measured end to end (interleaved runs), and the budget reads that measurement.
    expect(report.latency!.runs).toBeGreaterThanOrEqual(20);
    expect(b.achieved).toBeCloseTo(report.latency!.optimizedMs.p50 / report.latency!.originalMs.p50, 6);
  });

  it('--max-error with --save latency: the error holds, and candidates are timed in ORT', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-b-'));
    const reportFile = path.join(dir, 'report.json');
    // The budget as a plan first: every measured layer and kept candidate carries its ORT
    // time (each kept one ran faster than the layer in its own interleaved timing).
    // Every rung is measured (--measure-all-rungs): which candidates run faster depends on the
    // machine, and an error search over predicted rungs may then miss a loose budget (issue 18).
    let planOut = '';
    const code = await main(['plan', REAL.rec, ...REC_SHAPE, '--max-error', 'cosine:0.99', '--save', 'latency', ...BIG_LAYERS, ...EVERY_LAYER, '--measure-all-rungs'], { out: (t) => { planOut += t; }, err: () => {} });
    expect(code).toBe(0);
    const sens = (JSON.parse(planOut) as { sensitivity: LayerSensitivity[] }).sensitivity;
    const timed = sens.filter((l) => l.candidates.length > 0);
    expect(timed.length).toBeGreaterThan(0);
    for (const l of timed) {
      expect(l.ms).toBeGreaterThan(0);
      for (const c of l.candidates) expect(c.ms).toBeGreaterThan(0);
    }
    // Optimize with the same budget takes the plan's measurements (measuring every layer
    // in ORT once is what makes this test slow) and holds the error.
    const planFile = path.join(dir, 'plan.json');
    writeFileSync(planFile, planOut);
    const { report } = await optimizeJson(REAL.rec, path.join(dir, 'o.onnx'), ...REC_SHAPE, '--max-error', 'cosine:0.99', '--save', 'latency', ...BIG_LAYERS, ...EVERY_LAYER, '--no-latency', '--report', reportFile, '--plan', planFile);
    expect(report.sensitivity).toEqual(sens);
    const b = report.budget!;
    expect(b.unit).toBe('output rel. L2 on calibration inputs, saving latency');
    expect(b.met).toBe(true);
    expect(b.measuredError).toBeLessThanOrEqual(Math.sqrt(2 * 0.01) + 1e-9);
    expect(report.layers.some((l) => !l.skipped)).toBe(true);
    // Timed candidates come on this CPU's conv block grid by default (16 with AVX-512, 8
    // with AVX2): every rank a multiple of it unless capped at a full dimension of the weight.
    const block = machineNchwcBlock() ?? 1;
    if (block > 1) expect(report.notes.some((n) => n.includes(`rounded up to multiples of ${block}`))).toBe(true);
    for (const l of report.layers.filter((x) => !x.skipped)) {
      for (const r of l.ranks!) expect(r % block === 0 || l.weightShape.includes(r), `${l.name} rank ${r}`).toBe(true);
    }
    expect(report.sensitivity!.every((l) => (l.align ?? 1) === block)).toBe(true);

    // The optimize report serves as a plan: a looser budget reuses its measurements. ORT
    // timings never repeat exactly, so equal ones mean nothing was measured again.
    const cached = report.sensitivity!;
    expect(cached.some((l) => l.candidates.length > 0 && l.ms! > 0)).toBe(true);
    const again = await optimizeJson(REAL.rec, path.join(dir, 'b.onnx'), ...REC_SHAPE, '--max-error', 'cosine:0.98', '--save', 'latency', ...BIG_LAYERS, ...EVERY_LAYER, '--no-verify', '--plan', reportFile);
    expect(again.report.sensitivity).toEqual(cached);
    expect(again.report.budget!.met).toBe(true);
    expect(again.report.budget!.measuredError).toBeLessThanOrEqual(Math.sqrt(2 * 0.02) + 1e-9);
    // A plan that lacks a layer the filters now take (as one made with a smaller --heaviest)
    // has it measured and added; the cached ones are kept as they were.
    const lacking = cached.find((l) => l.candidates.length > 0)!;
    const partial = path.join(dir, 'partial.json');
    writeFileSync(partial, JSON.stringify({ ...report, sensitivity: cached.filter((l) => l !== lacking) }));
    const merged = (await optimizeJson(REAL.rec, path.join(dir, 'd.onnx'), ...REC_SHAPE, '--max-error', 'cosine:0.98', '--save', 'latency', ...BIG_LAYERS, ...EVERY_LAYER, '--no-verify', '--plan', partial)).report.sensitivity!;
    expect(merged.map((l) => l.name)).toEqual(cached.map((l) => l.name));
    for (const l of merged) if (l.name !== lacking.name) expect(l).toEqual(cached.find((c) => c.name === l.name));
    const remeasured = merged.find((l) => l.name === lacking.name)!;
    expect(remeasured.candidates.length).toBeGreaterThan(0);
    expect(remeasured.ms).toBeGreaterThan(0);
    expect(remeasured.ms).not.toBe(lacking.ms);
    // And a layer the filters now leave out is dropped from the measurements it is allocated over.
    const narrowed = await optimizeJson(REAL.rec, path.join(dir, 'e.onnx'), ...REC_SHAPE, '--max-error', 'cosine:0.98', '--save', 'latency', ...BIG_LAYERS, ...EVERY_LAYER, '--no-verify', '--plan', reportFile,
      '--exclude', `^${lacking.name.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`);
    expect(narrowed.report.sensitivity!.map((l) => l.name)).toEqual(cached.filter((l) => l !== lacking).map((l) => l.name));
    expect(narrowed.report.layers.find((l) => l.name === lacking.name)!.skipped).toBe(true);
    // Measurements made at other candidate ranks are not reused: with --align 1 every layer
    // is measured again, off the grid.
    const unaligned = (await optimizeJson(REAL.rec, path.join(dir, 'f.onnx'), ...REC_SHAPE, '--max-error', 'cosine:0.98', '--save', 'latency', ...BIG_LAYERS, ...EVERY_LAYER, '--no-verify', '--plan', reportFile, '--align', '1')).report;
    expect(unaligned.notes.some((n) => /rounded up to multiples/.test(n))).toBe(false);
    const fresh = unaligned.sensitivity!;
    expect(fresh.map((l) => l.name)).toEqual(cached.map((l) => l.name));
    // A reused entry would carry the cached grid (align = this CPU's block): none does, and each was timed
    // anew (equal medians of two timings can happen on a 16 µs layer, so they prove nothing).
    expect(cached.filter((x) => x.candidates.length > 0).every((c) => (c.align ?? 1) === block)).toBe(true);
    for (const l of fresh.filter((x) => x.candidates.length > 0)) {
      expect(l.align).toBeUndefined();
      expect(l.ms).toBeGreaterThan(0);
    }
    expect(fresh.some((l) => l.candidates.some((c) => c.ranks.some((r) => r % 16 !== 0)))).toBe(true);
    // Measurements without timings cannot serve a latency allocation.
    const untimed = path.join(dir, 'untimed.json');
    writeFileSync(untimed, JSON.stringify({ ...report, sensitivity: cached.map(({ ms: _, ...l }) => ({ ...l, candidates: l.candidates.map(({ ms: __, ...c }) => c) })) }));
    await expect(optimizeJson(REAL.rec, path.join(dir, 'c.onnx'), ...REC_SHAPE, '--max-error', 'cosine:0.99', '--save', 'latency', ...BIG_LAYERS, ...EVERY_LAYER, '--no-verify', '--plan', untimed))
      .rejects.toThrow(/carry no ORT timings/);
  });

  it('--save is refused with a budget that names its unit, and with a unit it does not know', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-b-'));
    const o = path.join(dir, 'o.onnx');
    await expect(optimizeJson(REAL.cls, o, '--target-params', '0.5', '--save', 'latency')).rejects.toThrow(/--save goes with --max-error or no budget/);
    await expect(optimizeJson(REAL.cls, o, '--max-error', '0.1', '--save', 'speed')).rejects.toThrow(/--save expects params, macs or latency/);
  });
});
