/**
 * An error budget with calibration data widens its margin for unseen inputs by how much
 * the independent fits lean toward the data they saw: each allocation of the search is
 * fitted once more on the part of the data the anchored fit sees (part-fit.ts), and its
 * errors on the part left out and on the rest are compared with those of the fit on all
 * of it. Checked here by another route: the kept allocation applied from the command line
 * with calibration files holding only that part, and all of it, then run in ORT.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { fitOnPart } from '../../src/optimize/part-fit.js';
import type { Report } from '../../src/report/report.js';
import { createSession } from '../../src/verify/session.js';
import { toNumbers, type Feeds, type HostTensor } from '../../src/verify/tensor.js';
import { runCli } from '../helpers/cli.js';
import { calibFile } from '../helpers/calib.js';
import { REAL } from '../helpers/models.js';
import { createRng } from '../../src/util/rng.js';

vi.mock('../../src/optimize/part-fit.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/optimize/part-fit.js')>();
  return { ...m, fitOnPart: vi.fn(m.fitOnPart) };
});

const SAMPLE = [3, 48, 192];
const common = ['--shape', 'x:1x3x48x192', '--min-params', '0', '--no-verify', '--json', '--no-anchor', '--no-output-aware'];

/** Runs `model` on each feed; the first output of each. */
async function outputsOf(model: string, feeds: Feeds[]): Promise<Float64Array[]> {
  const s = await createSession({ path: model }, { graphOptimizationLevel: 'disabled' });
  if (!s.ok) throw s.error;
  try {
    const outs: Float64Array[] = [];
    for (const f of feeds) {
      const r = await s.value.run(f);
      if (!r.ok) throw r.error;
      outs.push(Float64Array.from(toNumbers(Object.values(r.value)[0]!)));
    }
    return outs;
  } finally {
    await s.value.release();
  }
}

/** A budgeted run of cls on `calib` (the part fits recorded afresh): its report and the part fits' arguments. */
async function budgetRun(out: string, calib: string, budget: string): Promise<{ report: Report; calls: Parameters<typeof fitOnPart>[] }> {
  vi.mocked(fitOnPart).mockClear();
  const r = await runCli('optimize', REAL.cls, out, ...common, '--calib', calib, '--max-error', budget, '--save', 'params');
  expect(r.code, r.err).toBe(0);
  return { report: JSON.parse(r.out) as Report, calls: vi.mocked(fitOnPart).mock.calls };
}

/** Squared relative error of `got` against `ref` over the feeds listed. */
function err2(ref: Float64Array[], got: Float64Array[], feeds: number[]): number {
  let num = 0;
  let den = 0;
  for (const k of feeds) {
    ref[k]!.forEach((r, i) => { num += (got[k]![i]! - r) ** 2; den += r * r; });
  }
  return num / den;
}

describe('error budgets: the independent fits\' lean', () => {
  it('is measured on each allocation fitted on the first of two feeds, and widens the kept one\'s margin by exactly that', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-lean-'));
    const partDir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-lean-part-'));
    // 16 seeded samples (two feeds of 8), and a file of their first 8 (the same draws of the same seed).
    const all = calibFile(dir, [16, ...SAMPLE], 11);
    const part = calibFile(partDir, [8, ...SAMPLE], 11);
    const { report, calls } = await budgetRun(path.join(dir, 'budget.onnx'), all, '0.2');
    // One part fit per allocation the search measured, the last one the kept allocation.
    expect(calls).toHaveLength(report.budget!.attempts);
    for (const c of calls) expect(c[1].label).toBe('1 of 2 calibration feeds');
    const [plan] = calls[calls.length - 1]!;
    const ranksOf = (layers: readonly { name: string; skipped?: boolean; ranks?: number[] }[]): string => layers.filter((l) => !l.skipped).map((l) => `${l.name}:${l.ranks!.join('x')}`).sort().join('|');
    expect(plan.layers.some((l) => !l.skipped)).toBe(true);
    expect(ranksOf(plan.layers)).toBe(ranksOf(report.layers));
    const partOuts = await vi.mocked(fitOnPart).mock.results[calls.length - 1]!.value as Record<string, HostTensor>[] | undefined;
    expect(partOuts).toHaveLength(2);

    // The same plan applied from the command line, on the first 8 samples' statistics and on all 16.
    const planFile = path.join(dir, 'first.plan.json');
    writeFileSync(planFile, JSON.stringify({ ...plan, sensitivity: undefined }));
    const apply = async (calib: string, out: string): Promise<string> => {
      const a = await runCli('optimize', REAL.cls, out, ...common, '--calib', calib, '--plan', planFile);
      expect(a.code, a.err).toBe(0);
      return out;
    };
    const onPart = await apply(part, path.join(dir, 'part.onnx'));
    const onAll = await apply(all, path.join(dir, 'all.onnx'));
    // The two feeds, as the run split the 16 samples.
    const rng = createRng(11);
    const data = Float32Array.from({ length: 16 * 3 * 48 * 192 }, () => rng.normal());
    const per = 8 * 3 * 48 * 192;
    const feeds: Feeds[] = [0, 1].map((k) => ({ x: { type: 'float32', dims: [8, ...SAMPLE], data: data.subarray(k * per, (k + 1) * per) } }));
    const ref = await outputsOf(REAL.cls, feeds);
    const p = await outputsOf(onPart, feeds);
    const a = await outputsOf(onAll, feeds);
    // The run's part fit is the plan fitted on the first feed alone.
    partOuts!.forEach((o, k) => {
      const got = toNumbers(Object.values(o)[0]!);
      const scale = Math.max(...p[k]!.map(Math.abs));
      p[k]!.forEach((v, i) => expect(Math.abs(got[i]! - v)).toBeLessThan(1e-4 * scale));
    });
    const lean = (err2(ref, p, [1]) / err2(ref, a, [1])) / (err2(ref, p, [0]) / err2(ref, a, [0]));
    const note = report.notes.find((n) => n.startsWith('independent fits: '));
    expect(note, report.notes.join('\n')).toBeDefined();
    const b = report.budget!;
    if (lean > 1.001) {
      const widened = Number(/widened ([\d.]+)×/.exec(note!)![1]);
      expect(widened).toBeCloseTo(Math.sqrt(lean), 2);
      // The margin the budget was judged with carries the widening: at least the measured error times it.
      expect(b.unseenError!).toBeGreaterThanOrEqual(b.measuredError! * Math.sqrt(lean) * 0.999);
    } else {
      expect(note).toMatch(/no lean/);
    }
    expect(b.unseenError!).toBeLessThanOrEqual(0.2);
    expect(b.met).toBe(true);
  });

  it('one feed of 8 samples: the part fitted is its first 6', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-lean-one-'));
    const one = calibFile(dir, [8, ...SAMPLE], 12);
    const { report, calls } = await budgetRun(path.join(dir, 'one.onnx'), one, '0.2');
    expect(calls).toHaveLength(report.budget!.attempts);
    for (const [, split] of calls) {
      expect(split.label).toBe('6 of 8 calibration samples');
      expect(split.fitFeeds.map((f) => f.x!.dims)).toEqual([[6, ...SAMPLE]]);
    }
    expect(report.notes.find((n) => /^independent fits: .*fitted on 6 of 8 calibration samples alone/.test(n)), report.notes.join('\n')).toBeDefined();
  });

  it('a top-1 budget has no margin to widen: nothing is measured', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-lean-top1-'));
    const calib = calibFile(dir, [16, ...SAMPLE], 13);
    const { report, calls } = await budgetRun(path.join(dir, 'top1.onnx'), calib, 'top1:0.9');
    expect(calls).toHaveLength(0);
    expect(report.notes.some((n) => n.startsWith('independent fits: '))).toBe(false);
  });
});
