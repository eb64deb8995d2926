/**
 * An error budget with --calib searches its allocation with independent fits and fits
 * only the allocation it keeps anchored (anchored waves cost model runs per wave): the
 * written model must be exactly that allocation fitted anchored from the original.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { withoutRunMetadata } from '../helpers/metadata.js';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { optimizeAnchored } from '../../src/optimize/anchored.js';
import type { Report } from '../../src/report/report.js';
import { runCli } from '../helpers/cli.js';
import { REAL } from '../helpers/models.js';
import { calibFile } from '../helpers/calib.js';

vi.mock('../../src/optimize/anchored.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/optimize/anchored.js')>();
  return { ...m, optimizeAnchored: vi.fn(m.optimizeAnchored) };
});

describe('error budgets with --calib', () => {
  it('write the kept allocation fitted anchored: the same bytes as applying it as a plan', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-anchor-budget-'));
    const dims = [4, 3, 48, 192];
    const calib = calibFile(dir, dims, 5);
    const common = ['--shape', 'x:1x3x48x192', '--calib', calib, '--min-params', '0', '--no-verify', '--json'];
    const run = async (out: string, ...extra: string[]): Promise<{ report: Report; err: string }> => {
      const r = await runCli('optimize', REAL.cls, out, ...common, ...extra);
      expect(r.code, r.err).toBe(0);
      return { report: JSON.parse(r.out) as Report, err: r.err };
    };
    const budgetOut = path.join(dir, 'budget.onnx');
    vi.mocked(optimizeAnchored).mockClear();
    const { report } = await run(budgetOut, '--max-error', '0.2', '--save', 'params');
    const b = report.budget!;
    expect(b.met, b.why).toBe(true);
    // Several allocations were tried, and only the kept one was fitted anchored.
    expect(b.attempts).toBeGreaterThan(1);
    expect(vi.mocked(optimizeAnchored)).toHaveBeenCalledTimes(1);
    expect(report.layers.some((l) => !l.skipped)).toBe(true);
    expect(report.notes.some((n) => /^anchored fitting: \d+ layer\(s\)/.test(n))).toBe(true);
    // The measured error is the anchored model's, and within the budget.
    expect(b.measuredError!).toBeLessThanOrEqual(0.2);
    // The same decisions applied as a plan, anchored, from the original: byte-identical.
    const planFile = path.join(dir, 'plan.json');
    writeFileSync(planFile, JSON.stringify({ ...report, sensitivity: undefined }));
    const planOut = path.join(dir, 'plan.onnx');
    await run(planOut, '--plan', planFile);
    // The runs' own metadata (command, policy) differ; what they computed does not.
    expect(withoutRunMetadata(budgetOut).equals(withoutRunMetadata(planOut))).toBe(true);
    // …and not what the independent fit of the same plan writes.
    const indOut = path.join(dir, 'independent.onnx');
    await run(indOut, '--plan', planFile, '--no-anchor');
    expect(withoutRunMetadata(budgetOut).equals(withoutRunMetadata(indOut))).toBe(false);
  });
});
