/** The enums beside the report's prose, from the very labels the optimizer writes. */
import { describe, expect, it } from 'vitest';
import { budgetLabel } from '../../src/optimize/budgeted.js';
import { policyLabel, type OptimizeOptions } from '../../src/optimize/driver.js';
import { buildReport, type ReportParts } from '../../src/report/build.js';
import { groupSkipReasons, policyKindOf, skipCodeOf, unitKindOf } from '../../src/report/kinds.js';

const opts = (policy: OptimizeOptions['policy']): OptimizeOptions => ({ method: 'auto', policy, minParams: 4096, seed: 0 });

describe('policyKindOf', () => {
  it('reads every label driver.ts and budgeted.ts make', () => {
    expect(policyKindOf(policyLabel(opts({ kind: 'energy', energy: 0.999 })))).toBe('energy');
    expect(policyKindOf(policyLabel(opts({ kind: 'energy', energy: 0.99, align: 8 })))).toBe('energy');
    expect(policyKindOf(policyLabel(opts({ kind: 'ratio', ratio: 0.5 })))).toBe('rank-ratio');
    expect(policyKindOf(policyLabel(opts({ kind: 'fixed', rank: 4 })))).toBe('rank');
    expect(policyKindOf(policyLabel(opts({ kind: 'vbmf' })))).toBe('vbmf');
    expect(policyKindOf(policyLabel({ ...opts({ kind: 'vbmf' }), plan: { version: 1, model: '', policy: '', layers: [] } }))).toBe('plan');
    expect(policyKindOf(budgetLabel({ kind: 'macs', fraction: 0.7 }))).toBe('target-macs');
    expect(policyKindOf(budgetLabel({ kind: 'latency', fraction: 0.7 }))).toBe('target-latency');
    expect(policyKindOf(budgetLabel({ kind: 'error', err2: 0.0025 }))).toBe('max-error');
    expect(policyKindOf(budgetLabel({ kind: 'error', err2: 0.01, cosine: 0.995 }))).toBe('max-error-cosine');
    expect(policyKindOf(budgetLabel({ kind: 'error', err2: 0.01, top1: 0.99 }))).toBe('max-error-top1');
  });

  it('reads the budget units budget-run.ts writes', () => {
    expect(unitKindOf('measured latency (ORT-node p50)')).toBe('latency');
    expect(unitKindOf('top-1 agreement on calibration inputs, saving macs')).toBe('macs');
    expect(unitKindOf('output rel. L2 on calibration inputs, saving latency')).toBe('latency');
    expect(unitKindOf('latency (per-layer ORT timings)')).toBe('latency');
    expect(unitKindOf('macs')).toBe('macs');
  });
});

describe('skipped layers, grouped for the summary line', () => {
  it('gives each code its real number or a phrase, never a placeholder letter', () => {
    const reasons = ['216 params < --min-params 4096', '64 params < --min-params 4096', 'energy 0.999 needs a rank above break-even',
      'measured slower in ORT at 1x240x1x1: 0.0117 ms → 0.0125 ms', 'not measurably faster at 1x8x4x4 (a rewrite must save 5%)', 'something new 12'];
    expect(groupSkipReasons(reasons)).toEqual([
      '2x fewer params than --min-params 4096', '1x energy 0.999 needs a rank above break-even',
      '2x not measured faster in ORT than the original layer', '1x something new 12',
    ]);
    expect(skipCodeOf('excluded by --exclude')).toBe('excluded');
    expect(skipCodeOf('quantized layer (QLinearConv): not decomposed')).toBe('quantized');
    expect(skipCodeOf('does not apply to grouped convs (group 4; conv-tucker2 handles them)')).toBe('unsupported');
    expect(skipCodeOf('not among the 3 layers with the most MACs (--heaviest 3)')).toBe('not-heaviest');
    // A CP declined as degenerate has its own code, the energy search's decline too (it names the break-even rank).
    expect(skipCodeOf('degenerate CP at rank 2: sensitivity ratio 3.10 > 0.5 even after the refit under the sensitivity bound (its rank-one terms cancel)')).toBe('degenerate-cp');
    expect(skipCodeOf('energy 0.999: no CP rank up to 40 both meets it and is stable (degenerate CP at rank 40: sensitivity ratio 2.50 > 2 even after the refit under the sensitivity bound (its rank-one terms cancel))')).toBe('degenerate-cp');
    expect(groupSkipReasons(['degenerate CP at rank 2: sensitivity ratio 3.10 > 0.5 …', 'degenerate CP at rank 5: sensitivity ratio 2.20 > 2 …'])).toEqual(['2x CP fits whose rank-one terms cancel (degenerate): declined, never shipped']);
  });
});

describe('the little-gain note', () => {
  const summary = { irVersion: 8, opsets: { '': 13 }, nodeCount: 3, ops: { Conv: 1 }, params: 1000 };
  const parts = (room: ReportParts['room'], after = 990): ReportParts => ({
    tool: 'onnx-lr', seed: 0, policy: 'auto, energy 0.999', input: { file: 'in.onnx', bytes: 10, ...summary },
    output: { file: 'o.onnx', summary: { ...summary, params: after } }, layers: [], seconds: 1, timings: {}, notes: [], ...(room && { room }),
    written: { bytes: 5, notes: [] },
  });
  const room = (share: number): NonNullable<ReportParts['room']> => ({ kinds: [], macs: 1, totalUs: 10, rewritableShare: share, bound: 1 / (1 - share), basis: 'time' });

  it('says why when the room bound leaves under 5%, what to try otherwise, and nothing for a run that gains', () => {
    expect(buildReport(parts(room(0.03))).notes).toEqual(['this run saved 1.0% of the params: the model has little room (the layers low-rank rewrites can shrink take 3% of its time, so at most 1.03x faster)']);
    expect(buildReport(parts(room(0.5))).notes[0]).toMatch(/^this run saved 1\.0% of the params: .*try a budget with calibration data/);
    expect(buildReport(parts(room(0.5), 900)).notes).toEqual([]);
  });
});
