import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { shapesFor } from '../../src/graph/layer-shapes.js';
import { summarize } from '../../src/graph/summary.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { loadModel } from '../../src/onnx/file.js';
import { runBudgeted, settleLatencyBudget } from '../../src/optimize/budget-run.js';
import { writeAndVerify } from '../../src/optimize/write-verify.js';
import type { Report } from '../../src/report/report.js';
import { optimizeModel, type OptimizeOptions } from '../../src/optimize/driver.js';
import type { Job, PipelineConfig } from '../../src/optimize/job.js';
import type { PlanFile } from '../../src/optimize/plan.js';
import { runAll } from '../../src/optimize/output-error.js';
import { createRng } from '../../src/util/rng.js';
import type { Feeds } from '../../src/verify/tensor.js';

/** Two 64×64 MatMuls whose weights have a decaying spectrum (something to allocate). */
function twoLayers(): Uint8Array {
  const rng = createRng(5);
  const weight = (): number[] => {
    const u = Array.from({ length: 64 * 8 }, () => rng.normal());
    const v = Array.from({ length: 8 * 64 }, () => rng.normal());
    return Array.from({ length: 64 * 64 }, (_, k) => {
      const i = Math.floor(k / 64), j = k % 64;
      let s = 0.01 * rng.normal();
      for (let r = 0; r < 8; r++) s += (u[i * 8 + r]! * v[r * 64 + j]!) / (r + 1);
      return s;
    });
  };
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [4, 64]);
  b.init('w1', [64, 64], weight());
  b.init('w2', [64, 64], weight());
  const h = b.node('MatMul', [x, 'w1'], {}, { name: 'mm1' });
  b.output(b.node('MatMul', [h, 'w2'], {}, { name: 'mm2' }), [4, 64]);
  return encodeModel(b.build());
}

const OPTS: OptimizeOptions = { method: 'auto', policy: { kind: 'fixed', rank: 64 }, minParams: 0, seed: 0 };

describe('a budget hands its allocation over as a value', () => {
  // An error budget reallocates (reloading the model) until the measured error fits (at this
  // budget the search measures more than one allocation: the test checks that it does).
  for (const budget of [{ kind: 'params', fraction: 0.6 }, { kind: 'error', err2: 0.04 }] as const) {
  it(`leaves the options as the user gave them (frozen here) and applies the allocation (${budget.kind})`, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-bstruct-'));
    const file = path.join(dir, 'two.onnx');
    writeFileSync(file, twoLayers());
    const loaded = loadModel(file);
    const opts = Object.freeze({ ...OPTS });
    const job: Job = { inPath: file, loaded, model: new Model(loaded.model), opts, timings: {} };
    try {
      const rng = createRng(9);
      const feeds: Feeds[] = [0, 1].map(() => ({ x: { type: 'float32', dims: [4, 64], data: Float32Array.from({ length: 256 }, () => rng.normal()) } }));
      const ref = await runAll({ path: file }, feeds);
      if (!ref.ok) throw ref.error;
      const sh = await shapesFor(loaded, job.model, {}, {});
      const cfg = {
        opts, shapes: {}, values: {}, dataAware: false,
        verify: { enabled: false, minCosine: 0.99, threads: 1, latency: false, web: false },
        save: { force: false, externalData: false },
      } satisfies PipelineConfig;
      const out = await runBudgeted(job, cfg, {
        budget, shapes: sh.shapes,
        before: summarize(loaded.model, findLayers(job.model, sh.shapes)),
        calib: { feeds, description: 'two random sets' }, reference: ref.value, run: { external: loaded.external },
      });
      // Writing the allocation (or a handle) into the options throws on frozen options.
      expect(opts).toEqual(OPTS);
      expect(out.budgetInfo.met).toBe(true);
      const done = out.records.filter((r) => !r.skipped);
      expect(done.length).toBeGreaterThan(0);
      // The records are the allocation's choices, not the options' fixed rank 64.
      for (const r of done) expect(r.ranks![0]).toBeLessThan(32);
      if (budget.kind === 'params') expect(summarize(job.loaded.model).params).toBeLessThanOrEqual(0.6 * 2 * 64 * 64);
      else expect(out.budgetInfo.attempts).toBeGreaterThan(1);
    } finally {
      job.loaded.external.close();
    }
  });
  }

  it('optimizeModel applies the plan it is handed over the one in the options', () => {
    const bytes = twoLayers();
    const planOf = (rank: number): PlanFile => ({
      version: 1, model: 'two.onnx', policy: 'test',
      layers: [{ name: 'mm1', op: 'MatMul', pass: 'matmul-svd', ranks: [rank] }, { name: 'mm2', op: 'MatMul', skipped: true, reason: 'kept' }],
    } as PlanFile);
    const run = (opts: OptimizeOptions, plan?: PlanFile): (number | undefined)[] => {
      return optimizeModel(new Model(decodeModel(bytes)), undefined, opts, plan).map((r) => r.ranks?.[0]);
    };
    expect(run({ ...OPTS, plan: planOf(3) })).toEqual([3, undefined]);
    expect(run({ ...OPTS, plan: planOf(3) }, planOf(5))).toEqual([5, undefined]);
    expect(run(OPTS, planOf(5))).toEqual([5, undefined]);
  });
});

type BudgetInfo = NonNullable<Report['budget']>;
const allocated = (): BudgetInfo => ({ kind: 'latency', target: 0.8, achieved: 0.7, met: true, unit: 'latency (per-layer ORT timings)', attempts: 1, predictedError: 0, measuredError: 0 });
const ms = (p50: number): { p10: number; p50: number; p90: number } => ({ p10: p50, p50, p90: p50 });

describe('a latency budget is judged in one place', () => {
  it('the budget settles on the measured ratio, with 2% slack, as a new value', () => {
    const given = allocated();
    const met = settleLatencyBudget(given, { kind: 'latency', fraction: 0.8 }, { originalMs: ms(10), optimizedMs: ms(8.1) });
    expect(met).toMatchObject({ achieved: 8.1 / 10, met: true, unit: 'measured latency (ORT-node p50)' });
    // The allocation's outcome is not written to.
    expect(given).toEqual(allocated());
    const missed = settleLatencyBudget(allocated(), { kind: 'latency', fraction: 0.8 }, { originalMs: ms(10), optimizedMs: ms(9) });
    expect(missed.met).toBe(false);
    expect(missed.why).toBe('measured latency ratio 0.900 > target 0.8 (allocated by per-layer timings; their sum met the target: layer times do not add up exactly)');
    const params: BudgetInfo = { ...allocated(), kind: 'params' };
    expect(settleLatencyBudget(params, { kind: 'params', fraction: 0.8 }, { originalMs: ms(10), optimizedMs: ms(9) })).toEqual({ ...allocated(), kind: 'params' });
  });

  it('writing and verifying only measure: they return OUT\'s size, the verification and the latency', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-wvstruct-'));
    const file = path.join(dir, 'two.onnx');
    writeFileSync(file, twoLayers());
    const loaded = loadModel(file);
    const job: Job = { inPath: file, loaded, model: new Model(loaded.model), opts: OPTS, timings: {} };
    const out = path.join(dir, 'out.onnx');
    try {
      const cfg = {
        opts: OPTS, budget: { kind: 'latency', fraction: 0.8 }, shapes: {}, values: {}, dataAware: false,
        verify: { enabled: true, minCosine: 0.99, threads: 1, latency: true, web: false },
        save: { force: false, externalData: false },
      } satisfies PipelineConfig;
      const w = await writeAndVerify(job, cfg, out, undefined);
      expect(Object.keys(w).sort()).toEqual(['bytes', 'inputs', 'latency', 'notes', 'pass', 'verify']);
      expect(w.pass).toBe(true);
      expect(w.bytes).toBe(statSync(out).size);
      expect(w.latency!.runs).toBeGreaterThan(0);
      expect(w.inputs).toBe('seeded random inputs');
    } finally {
      job.loaded.external.close();
    }
  });
});
