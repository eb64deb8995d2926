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
import { optimizeModel } from '../../src/optimize/driver.js';
import type { Report } from '../../src/report/report.js';
import { runCli } from '../helpers/cli.js';
import { REAL } from '../helpers/models.js';
import { calibFile } from '../helpers/calib.js';

vi.mock('../../src/optimize/anchored.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/optimize/anchored.js')>();
  return { ...m, optimizeAnchored: vi.fn(m.optimizeAnchored) };
});

describe('error budgets with --calib', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-anchor-budget-'));
  const dims = [16, 3, 48, 192];
  const calib = calibFile(dir, dims, 5);
  const common = ['--shape', 'x:1x3x48x192', '--calib', calib, '--min-params', '0', '--no-verify', '--json'];
  const run = async (out: string, ...extra: string[]): Promise<{ report: Report; err: string }> => {
    const r = await runCli('optimize', REAL.cls, out, ...common, ...extra);
    expect(r.code, r.err).toBe(0);
    return { report: JSON.parse(r.out) as Report, err: r.err };
  };
  /** The budget run's decisions as a plan file, and what applying it independently writes. */
  const independentOf = async (report: Report, name: string): Promise<string> => {
    const planFile = path.join(dir, `${name}.plan.json`);
    writeFileSync(planFile, JSON.stringify({ ...report, sensitivity: undefined }));
    const out = path.join(dir, `${name}.independent.onnx`);
    await run(out, '--plan', planFile, '--no-anchor');
    return out;
  };
  const same = (a: string, b: string): boolean => withoutRunMetadata(a).equals(withoutRunMetadata(b));

  it('fit the kept allocation anchored without the last feed, and keep it only when it does better there than the independent fit', async () => {
    const budgetOut = path.join(dir, 'budget.onnx');
    vi.mocked(optimizeAnchored).mockClear();
    const { report } = await run(budgetOut, '--max-error', '0.2', '--save', 'params');
    const b = report.budget!;
    expect(b.met, b.why).toBe(true);
    // Several allocations were tried, and only the kept one was fitted anchored, on the first of the 2 feeds (8 samples each).
    expect(b.attempts).toBeGreaterThan(1);
    // First a probe (only the last wave anchored); every wave only when the probe did better on the feed left out.
    const calls = vi.mocked(optimizeAnchored).mock.calls;
    expect(calls[0]![3].lastWaveOnly).toBe(true);
    expect(calls.every((c) => c[3].feeds.length === 1)).toBe(true);
    const probeLost = report.notes.find((n) => /a probe, on 1 of 2 calibration feeds\) did no better on the rest/.test(n));
    expect(calls).toHaveLength(probeLost ? 1 : 2);
    if (!probeLost) expect(calls[1]![3].lastWaveOnly).toBeUndefined();
    expect(report.layers.some((l) => !l.skipped)).toBe(true);
    expect(b.measuredError!).toBeLessThanOrEqual(0.2);
    const independent = await independentOf(report, 'budget');
    const kept = report.notes.find((n) => n.startsWith('anchored fitting: fitted on 1 of 2 calibration feeds'));
    const dropped = report.notes.find((n) => /fitted on 1 of 2 calibration feeds, did no better on the rest/.test(n));
    // Its margin for unseen inputs widened by how much more it leans toward the feed it saw, it can miss the budget.
    const missed = report.notes.find((n) => /^the anchored fit of the kept allocation missed the budget/.test(n));
    // Exactly one of the four outcomes, and the model is the one it names.
    expect([kept, dropped, probeLost, missed].filter(Boolean), report.notes.join('\n')).toHaveLength(1);
    const num = (re: RegExp, n: string): number => Number(re.exec(n)![1]);
    if (kept) {
      expect(num(/rel\. L2 ([\d.e-]+) against/, kept)).toBeLessThan(num(/against ([\d.e-]+) for/, kept));
      expect(report.notes.some((n) => /^anchored fitting: \d+ layer\(s\)/.test(n))).toBe(true);
      expect(same(budgetOut, independent)).toBe(false);
    } else if (missed) {
      expect(same(budgetOut, independent)).toBe(true);
    } else {
      const n = (dropped ?? probeLost)!;
      expect(num(/rest \(rel\. L2 ([\d.e-]+)\)/, n)).toBeGreaterThanOrEqual(num(/independent fit \(([\d.e-]+)\)/, n));
      expect(same(budgetOut, independent)).toBe(true);
    }
  });

  it('one feed of 8 samples: the anchored fit leaves its last 2 samples out, and is kept only when it does better there and meets the budget with its margin widened', async () => {
    // Its own folder: calibFile always writes calib.npy, which the other tests read.
    const one = calibFile(mkdtempSync(path.join(tmpdir(), 'onnx-lr-one-feed-')), [8, 3, 48, 192], 6);
    const out = path.join(dir, 'one-feed.onnx');
    vi.mocked(optimizeAnchored).mockClear();
    const r = await runCli('optimize', REAL.cls, out, ...common.map((a) => (a === calib ? one : a)), '--max-error', '0.2', '--save', 'params');
    expect(r.code, r.err).toBe(0);
    const report = JSON.parse(r.out) as Report;
    expect(report.budget!.met, report.budget!.why).toBe(true);
    const calls = vi.mocked(optimizeAnchored).mock.calls;
    expect(calls.length).toBeGreaterThanOrEqual(1);
    // Every anchored fit saw the first 6 samples only, in one feed.
    for (const c of calls) {
      expect(c[3].feeds).toHaveLength(1);
      expect(c[3].feeds[0]!.x!.dims).toEqual([6, 3, 48, 192]);
      expect(c[3].otherFeeds).toBe(true);
    }
    const notes = report.notes.join('\n');
    const kept = report.notes.find((n) => n.startsWith('anchored fitting: fitted on 6 of 8 calibration samples; on the rest'));
    const other = report.notes.find((n) => /(a probe, on 6 of 8 calibration samples\) did no better on the rest|fitted on 6 of 8 calibration samples, did no better on the rest|^the anchored fit of the kept allocation missed the budget)/.test(n));
    expect([kept, other].filter(Boolean), notes).toHaveLength(1);
    // Widened or not, the margin reported is the one the kept fit was judged with.
    const b = report.budget!;
    expect(b.unseenError!).toBeGreaterThanOrEqual(b.measuredError!);
    expect(b.unseenError!).toBeLessThanOrEqual(0.2);
  });

  it('--no-anchor --activation-fit: the kept allocation is refitted through its activations (no probe) without the last feed, kept only when it does better there', async () => {
    const out = path.join(dir, 'through.onnx');
    vi.mocked(optimizeAnchored).mockClear();
    const { report } = await run(out, '--max-error', '0.2', '--save', 'params', '--no-anchor', '--activation-fit');
    expect(report.budget!.met, report.budget!.why).toBe(true);
    const calls = vi.mocked(optimizeAnchored).mock.calls;
    expect(calls).toHaveLength(1);
    expect(calls[0]![3]).toMatchObject({ independent: true, throughActivations: true });
    expect(calls[0]![3].lastWaveOnly).toBeUndefined();
    expect(calls[0]![3].feeds).toHaveLength(1);
    const kept = report.notes.find((n) => n.startsWith('fits through the activation: fitted on 1 of 2 calibration feeds'));
    const dropped = report.notes.find((n) => /^the fit through the activations of the kept allocation, fitted on 1 of 2 calibration feeds, did no better/.test(n));
    // None of the kept allocation's convs refitted: the fit was the independent one, and the note says so.
    const none = report.notes.find((n) => /^fits through the activation: (0 of \d+ conv\(s\)|no conv to rewrite)/.test(n));
    expect([kept, dropped, none].filter(Boolean), report.notes.join('\n')).toHaveLength(1);
    expect(report.notes.some((n) => /anchored/.test(n))).toBe(false);
    expect(same(out, await independentOf(report, 'through'))).toBe(!kept);
  });

  it('a probe no better on the left-out feed stops there: no wave is fitted anchored, the written model is the independent fit', async () => {
    // A stand-in probe that is the independent fit itself: equal on the left-out feed, so anchoring stops.
    vi.mocked(optimizeAnchored).mockClear();
    vi.mocked(optimizeAnchored).mockImplementationOnce(async (model, shapes, opts, _inp, plan, run) => ({ records: optimizeModel(model, shapes, opts, plan, run), notes: [], waves: 3, refitted: 0 }));
    const out = path.join(dir, 'same-probe.onnx');
    const { report } = await run(out, '--max-error', '0.2', '--save', 'params');
    expect(vi.mocked(optimizeAnchored)).toHaveBeenCalledTimes(1);
    expect(report.notes.find((n) => /^anchored fitting: only the last of 3 wave\(s\) fitted anchored \(a probe, on 1 of 2 calibration feeds\) did no better/.test(n)), report.notes.join('\n')).toBeDefined();
    expect(report.budget!.met).toBe(true);
    expect(same(out, await independentOf(report, 'same-probe'))).toBe(true);
  });

  it('--activation-fit when the probe lost: the independent fits refitted through their activations, kept only when they do better on the left-out feed', async () => {
    const probeLoses = async (...[model, shapes, opts, , plan, run]: Parameters<typeof optimizeAnchored>) => ({ records: optimizeModel(model, shapes, opts, plan, run), notes: [], waves: 3, refitted: 0 });
    // Real refits: cls's convs read by a Relu alone are on pooled vectors (too few samples), so none is refitted.
    vi.mocked(optimizeAnchored).mockClear();
    vi.mocked(optimizeAnchored).mockImplementationOnce(probeLoses);
    const out = path.join(dir, 'probe-lost-through.onnx');
    const { report } = await run(out, '--max-error', '0.2', '--save', 'params', '--activation-fit');
    const calls = vi.mocked(optimizeAnchored).mock.calls;
    expect(calls).toHaveLength(2);
    expect(calls[1]![3]).toMatchObject({ independent: true, throughActivations: true });
    expect(calls[1]![3].feeds).toHaveLength(1);
    expect(report.notes.find((n) => /a probe, on 1 of 2 calibration feeds\) did no better .*every layer keeps its independent fit$/.test(n)), report.notes.join('\n')).toBeDefined();
    expect(report.notes.find((n) => /^fits through the activation: 0 of \d+ conv\(s\)/.test(n)), report.notes.join('\n')).toBeDefined();
    expect(same(out, await independentOf(report, 'probe-lost-through'))).toBe(true);
    // A stand-in refit that wins on the left-out feed (it leaves the model as it was: no error anywhere) is adopted.
    vi.mocked(optimizeAnchored).mockClear();
    vi.mocked(optimizeAnchored)
      .mockImplementationOnce(probeLoses)
      .mockImplementationOnce(async (model, shapes, opts, _inp, plan, r) => ({ records: optimizeModel(model, shapes, { ...opts, decideOnly: true }, plan, r), notes: ['(stand-in refit)'], waves: 1, refitted: 1 }));
    const won = path.join(dir, 'probe-lost-through-won.onnx');
    const w = await run(won, '--max-error', '0.2', '--save', 'params', '--activation-fit');
    expect(vi.mocked(optimizeAnchored)).toHaveBeenCalledTimes(2);
    expect(w.report.notes).toContainEqual(expect.stringMatching(/a probe, on 1 of 2 calibration feeds\) did no better .*the independent fits were refitted through their activations instead$/));
    expect(w.report.notes).toContain('(stand-in refit)');
    expect(w.report.notes).toContainEqual(expect.stringMatching(/^fits through the activation: fitted on 1 of 2 calibration feeds; on the rest, rel\. L2 0\.00+ against [\d.]+ for the independent fit$/));
    expect(w.report.budget!.measuredError).toBe(0);
    expect(same(won, await independentOf(report, 'probe-lost-through-won'))).toBe(false);
  });

  it('an anchored fit no better on the left-out feed is dropped: the written model is the independent fit', async () => {
    // A stand-in probe that wins (it leaves the model as it was: no error on any feed), then a
    // stand-in full fit that is the independent fit itself: equal on the left-out feed, so not kept.
    vi.mocked(optimizeAnchored).mockClear();
    vi.mocked(optimizeAnchored)
      .mockImplementationOnce(async (model, shapes, opts, _inp, plan, run) => ({ records: optimizeModel(model, shapes, { ...opts, decideOnly: true }, plan, run), notes: [], waves: 3, refitted: 0 }))
      .mockImplementationOnce(async (model, shapes, opts, _inp, plan, run) => ({ records: optimizeModel(model, shapes, opts, plan, run), notes: [], waves: 3, refitted: 0 }));
    const out = path.join(dir, 'same-fit.onnx');
    const { report } = await run(out, '--max-error', '0.2', '--save', 'params');
    expect(vi.mocked(optimizeAnchored)).toHaveBeenCalledTimes(2);
    const note = report.notes.find((n) => /fitted on 1 of 2 calibration feeds, did no better on the rest/.test(n));
    expect(note, report.notes.join('\n')).toBeDefined();
    expect(report.budget!.met).toBe(true);
    expect(same(out, await independentOf(report, 'same-fit'))).toBe(true);
  });
});
