import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { summarize } from '../../src/graph/summary.js';
import { loadModel } from '../../src/onnx/file.js';
import type { OptimizeOptions } from '../../src/optimize/driver.js';
import { runOptimize, type PipelineConfig } from '../../src/optimize/pipeline.js';
import { buildReport, type ReportParts } from '../../src/report/build.js';
import type { LayerRecord } from '../../src/report/records.js';
import { CLS } from '../verify/models.js';

/** The report's keys in the order --report has always written them (JSON keeps insertion order). */
const ORDER = ['schemaVersion', 'tool', 'seed', 'policy', 'policyKind', 'input', 'output', 'layers', 'seconds', 'timings', 'room', 'narrowReorder', 'notes', 'calibration', 'calibrationKind', 'calibrationSamples', 'budget', 'sensitivity', 'verify', 'inputs', 'latency', 'latencyWeb'];
const keysOf = (o: object): string[] => Object.entries(o).filter(([, v]) => v !== undefined).map(([k]) => k);
const inOrder = (keys: string[]): string[] => ORDER.filter((k) => keys.includes(k));

const summary = { irVersion: 8, opsets: { 'ai.onnx': 13 }, nodeCount: 3, ops: { Conv: 1 }, params: 100, macs: 999, fingerprint: 'f' };
const layer = (name: string, macsAfter: number, reason?: string): LayerRecord => ({
  name, op: 'Conv', weightShape: [4, 4, 1, 1], where: 'initializer', paramsBefore: 16, paramsAfter: 16, macsBefore: 100, macsAfter, ms: 0,
  ...(reason !== undefined && { skipped: true, reason }),
});
const budget = { kind: 'params', unit: 'params', target: 0.5, achieved: 0.7, met: false, why: 'too few layers', predictedError: 0, measuredError: 0, attempts: 1 };
const parts = (more: Partial<ReportParts> = {}): ReportParts => ({
  tool: 'onnx-lr', seed: 0, policy: 'p', input: { file: 'in.onnx', bytes: 10, ...summary }, output: { file: 'out.onnx', summary: { ...summary, macs: undefined } },
  layers: [layer('a', 40), layer('b', 100, 'weight has NaN')], seconds: 2, timings: { shapes: 1 }, notes: ['first'], budget, ...more,
});

describe('buildReport', () => {
  it('derives OUT\'s MACs and the closing notes, in the order the report always had', () => {
    const written = { bytes: 77, inputs: 'seeded random inputs', notes: ['latency not measured: x'] };
    const r = buildReport(parts({ written }));
    expect(keysOf(r)).toEqual(inOrder(keysOf(r)));
    expect(r.output).toMatchObject({ file: 'out.onnx', bytes: 77, macs: 140 });
    // OUT's side keeps the summary's key order, bytes second.
    expect(Object.keys(r.output).slice(0, 2)).toEqual(['file', 'bytes']);
    expect(r.notes).toEqual(['first', 'warning: 1 layer(s) skipped for NaN/Inf in their weights: b', 'latency not measured: x', 'budget not met: too few layers',
      'this run saved 0.0% of the params: a tighter budget (a lower --target-*, or a looser --max-error) trades more accuracy for size']);
    expect(r.schemaVersion).toBe(1);
    expect(r.budget!.unitKind).toBe('params');
    expect(r.layers.find((l) => l.name === 'b')!.skipCode).toBe('non-finite');
    expect(r.inputs).toBe('seeded random inputs');
  });

  it('without a written OUT (the plan command): no size, and the budget is not noted again', () => {
    const r = buildReport(parts());
    expect(r.output.bytes).toBe(0);
    expect(r.notes).toEqual(['first', 'warning: 1 layer(s) skipped for NaN/Inf in their weights: b']);
    expect('verify' in r).toBe(false);
  });

  it('leaves OUT\'s MACs unknown when IN\'s are', () => {
    const r = buildReport(parts({ input: { file: 'in.onnx', bytes: 10, ...summary, macs: undefined } }));
    expect(r.output.macs).toBeUndefined();
  });
});

describe('the report of a real run (PP-OCR cls, a params budget, verified in ORT)', () => {
  it('says what OUT on disk and the records say, in the report\'s order; the options are not written to', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-build-'));
    const out = path.join(dir, 'cls.onnx');
    const given: OptimizeOptions = { method: 'auto', policy: { kind: 'energy', energy: 0.999 }, minParams: 4096, seed: 0 };
    const opts = Object.freeze(given);
    const cfg: PipelineConfig = {
      opts, budget: { kind: 'params', fraction: 0.8 }, shapes: { x: [1, 3, 48, 192] }, values: {}, dataAware: false,
      verify: { enabled: true, minCosine: 0.5, threads: 1, latency: false, web: false },
      save: { force: false, externalData: false },
    };
    const { report: r, pass } = await runOptimize(CLS, out, cfg);
    expect(opts).toEqual({ method: 'auto', policy: { kind: 'energy', energy: 0.999 }, minParams: 4096, seed: 0 });
    expect(keysOf(r)).toEqual(inOrder(keysOf(r)));
    expect(keysOf(r)).toEqual(expect.arrayContaining(['budget', 'sensitivity', 'verify', 'inputs', 'calibration']));
    expect(r.verify!.pass).toBe(pass);
    expect(r.output.bytes).toBe(statSync(out).size);
    const written = loadModel(out);
    try {
      const s = summarize(written.model);
      expect({ nodeCount: r.output.nodeCount, params: r.output.params, ops: r.output.ops, fingerprint: r.output.fingerprint })
        .toEqual({ nodeCount: s.nodeCount, params: s.params, ops: s.ops, fingerprint: s.fingerprint });
    } finally {
      written.external.close();
    }
    expect(r.input.macs).toBeGreaterThan(0);
    expect(r.output.macs).toBe(r.layers.reduce((a, l) => a + (l.macsAfter ?? 0), 0));
    expect(r.layers.some((l) => !l.skipped)).toBe(true);
    expect(r.notes.some((n) => n.startsWith('budget not met'))).toBe(!r.budget!.met);
  });
});
