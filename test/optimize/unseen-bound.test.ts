/**
 * Error budgets are judged with a margin for inputs the fits never saw (output-error.ts
 * errBound): the ratio of summed error to summed energy over the calibration feeds plus
 * Student's t quantile (n − 1 degrees of freedom) standard errors of that ratio.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { writeNpy } from '../../src/io/npy.js';
import { encodeModel } from '../../src/onnx/codec.js';
import { errBound, outputErr2, spreadUnits, unseenZ } from '../../src/optimize/output-error.js';
import { renderReport, type Report } from '../../src/report/report.js';
import { createRng } from '../../src/util/rng.js';
import { samplesIn, type HostTensor } from '../../src/verify/tensor.js';
import { runCli } from '../helpers/cli.js';
import { decayingWeight } from '../helpers/kernels.js';

const t = (...v: number[]): HostTensor => ({ type: 'float32', dims: [v.length], data: Float32Array.from(v) });

describe('errBound', () => {
  it('is the pooled error with one feed, and when every feed has the same error ratio', () => {
    const ref = [{ y: t(3, 4) }];
    const got = [{ y: t(3, 5) }];
    expect(errBound(ref, got)).toBeCloseTo(outputErr2(ref, got), 12);
    // Both feeds at error ratio 1/25 (the second is the first scaled by 2).
    const ref2 = [{ y: t(3, 4) }, { y: t(6, 8) }];
    const got2 = [{ y: t(3, 5) }, { y: t(6, 10) }];
    expect(errBound(ref2, got2)).toBeCloseTo(1 / 25, 12);
  });

  it('adds t standard errors of the ratio estimate when the feeds disagree', () => {
    // Energies b = 25, 25, 100; errors a = 1, 4, 1.
    const ref = [{ y: t(3, 4) }, { y: t(0, 5) }, { y: t(6, 8) }];
    const got = [{ y: t(3, 5) }, { y: t(2, 5) }, { y: t(6, 9) }];
    const a = [1, 4, 1];
    const b = [25, 25, 100];
    const r = 6 / 150;
    const ss = a.reduce((s, ak, k) => s + (ak - r * b[k]!) ** 2, 0);
    const se = Math.sqrt(ss / (3 * 2)) / (150 / 3);
    expect(outputErr2(ref, got)).toBeCloseTo(r, 12);
    // Three feeds: the one-sided 95% t quantile with 2 degrees of freedom.
    expect(unseenZ(3)).toBeCloseTo(2.919986, 5);
    expect(errBound(ref, got)).toBeCloseTo(r + unseenZ(3) * se, 12);
    expect(errBound(ref, got)).toBeGreaterThan(r + 1.645 * se);
    expect(errBound(ref, got, { z: 0 })).toBeCloseTo(r, 12);
    // A prediction bound for m other feeds: the spread counts again for them, √(1 + n/m).
    expect(errBound(ref, got, { newFeeds: 3 })).toBeCloseTo(r + unseenZ(3) * se * Math.SQRT2, 12);
    expect(errBound(ref, got, { newFeeds: 1 })).toBeCloseTo(r + unseenZ(3) * se * 2, 12);
  });

  it('splits a feed holding a batch into its samples where the learned shapes show axis 0 is the batch', () => {
    const rows = (dims: number[], ...v: number[]): HostTensor => ({ type: 'float32', dims, data: Float32Array.from(v) });
    // The three feeds of the test above as one feed of three samples, y [3, 2] (learned [1, 2]).
    const ref = [{ y: rows([3, 2], 3, 4, 0, 5, 6, 8) }];
    const got = [{ y: rows([3, 2], 3, 5, 2, 5, 6, 9) }];
    const apart = errBound([{ y: t(3, 4) }, { y: t(0, 5) }, { y: t(6, 8) }], [{ y: t(3, 5) }, { y: t(2, 5) }, { y: t(6, 9) }]);
    const learned = new Map([['y', [1, 2]]]);
    expect(errBound(ref, got, { learned })).toBeCloseTo(apart, 12);
    expect(spreadUnits(ref, learned)).toEqual({ units: 3, samples: true });
    // Held out: m counts samples when the calibration was split, feeds otherwise.
    expect(errBound(ref, got, { learned, newFeeds: 1, newSamples: 3 })).toBeCloseTo(
      errBound([{ y: t(3, 4) }, { y: t(0, 5) }, { y: t(6, 8) }], [{ y: t(3, 5) }, { y: t(2, 5) }, { y: t(6, 9) }], { newFeeds: 3 }), 12);
    // Not split (one unit, no margin): no learned shape, one learned at another batch, or other trailing dims.
    for (const l of [undefined, new Map([['y', [3, 2]]]), new Map([['y', [1, 6]]])]) {
      expect(errBound(ref, got, { learned: l })).toBeCloseTo(outputErr2(ref, got), 12);
      expect(spreadUnits(ref, l)).toEqual({ units: 1, samples: false });
    }
    expect(samplesIn(ref[0]!.y!, [1, 2])).toBe(3);
    expect(samplesIn(ref[0]!.y!, [1, 2, 1])).toBe(1);
  });

  it('takes the worst output, and a non-finite error is infinite', () => {
    const ref = [{ y: t(3, 4), z: t(1, 0) }, { y: t(3, 4), z: t(1, 0) }];
    const got = [{ y: t(3, 4), z: t(1, 1) }, { y: t(3, 4), z: t(1, 1) }];
    expect(errBound(ref, got)).toBeCloseTo(1, 12);
    expect(errBound(ref, [{ y: t(3, NaN), z: t(1, 0) }, got[1]!])).toBe(Infinity);
  });
});

/** x [N, 64] → MatMul(W) with a slowly decaying spectrum (every rank costs some error). */
function model(dir: string): string {
  const n = 64;
  const w = decayingWeight(n, 3, 1.2);
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', ['N', n]);
  b.output(b.node('MatMul', [x, b.init('W', [n, n], w)], {}, { name: 'mm' }));
  const f = path.join(dir, 'mm.onnx');
  writeFileSync(f, encodeModel(b.build()));
  return f;
}

/** Rows whose scale varies from feed to feed, so the feeds' error ratios differ. */
function samples(file: string, rows: number, seed: number): void {
  const rng = createRng(seed);
  const data = new Float32Array(rows * 64);
  for (let r = 0; r < rows; r++) {
    const mix = rng.next();
    for (let c = 0; c < 64; c++) data[r * 64 + c] = rng.normal() * (c < 8 ? 1 + 3 * mix : 1);
  }
  writeNpy(file, { dtype: 'f4', shape: [rows, 64], data });
}

describe('an error budget with several calibration feeds', () => {
  it('is judged by the bound for unseen inputs, which the report shows beside the calibration error', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-unseen-'));
    const m = model(dir);
    samples(path.join(dir, 'calib.npy'), 64, 1);
    samples(path.join(dir, 'held.npy'), 32, 2);
    const r = await runCli('optimize', m, path.join(dir, 'o.onnx'), '--max-error', '0.1', '--min-params', '0', '--no-latency',
      '--calib', path.join(dir, 'calib.npy'), '--verify-data', path.join(dir, 'held.npy'), '--min-cosine', '0.99', '--json');
    expect(r.code, r.err).toBe(0);
    const rep = JSON.parse(r.out) as Report;
    const b = rep.budget!;
    // 64 rows in 8 runs of 8: the spread is over the 64 samples (each run's output split along its batch axis).
    // (With 32 rows of 64 dims the fits lean so far toward them (part-fit.ts) that no rank meets the budget.)
    expect(b.feeds).toBe(8);
    expect(b.samples).toBe(64);
    expect(b.heldOutSamples).toBe(16); // --verify-samples: 16 by default
    expect(b.met).toBe(true);
    // The rewrite happened, and was judged at its bound, not at the calibration error alone.
    expect(rep.layers.find((l) => l.name === 'mm')!.paramsAfter).toBeLessThan(64 * 64);
    expect(b.unseenError!).toBeGreaterThan(b.measuredError);
    expect(b.unseenError!).toBeLessThanOrEqual(0.1);
    // New rows from the same distribution stay within the budget.
    expect(rep.verify!.outputs[0]!.relL2).toBeLessThanOrEqual(0.1);
    // The held-out feeds verification ran.
    expect(b.heldOutFeeds).toBe(rep.verify!.runs);
    expect(renderReport(rep)).toContain(`judged at ${b.unseenError!.toPrecision(3)} (a 95% bound for the 16 held-out sample(s) verified from the spread over 64 calibration samples in 8 feed(s))`);
    // Without --verify-data the bound is for the error to expect on unseen inputs.
    const r2 = await runCli('optimize', m, path.join(dir, 'o2.onnx'), '--max-error', '0.1', '--min-params', '0', '--no-latency', '--calib', path.join(dir, 'calib.npy'), '--json');
    expect(r2.code, r2.err).toBe(0);
    const rep2 = JSON.parse(r2.out) as Report;
    expect(rep2.budget!.heldOutFeeds).toBeUndefined();
    expect(renderReport(rep2)).toContain(`judged at ${rep2.budget!.unseenError!.toPrecision(3)} (a 95% bound for unseen inputs from the spread over 64 calibration samples in 8 feed(s))`);
  });
});
