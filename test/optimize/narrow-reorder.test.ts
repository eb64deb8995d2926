/**
 * The narrow-reorder decision (optimize/narrow-reorder.ts): measured on the original, kept
 * only when faster, said in the report; end to end through the CLI.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Model } from '../../src/graph/graph.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { loadModel } from '../../src/onnx/file.js';
import { err, ok, type Result } from '../../src/errors.js';
import { checkNarrowReorder, NARROW_MIN_SPEEDUP } from '../../src/optimize/narrow-reorder.js';
import { narrowReorderLine } from '../../src/report/report.js';
import type { LatencyStats, measureLatency } from '../../src/verify/latency.js';
import type { ModelSource } from '../../src/verify/session.js';
import { runCli } from '../helpers/cli.js';
import { narrowModel, wideModel } from '../helpers/narrow-model.js';
import { SchemaValidator } from '../report/json-schema.js';

const stats = (originalMs: number, optimizedMs: number): LatencyStats => ({
  originalMs: { p10: originalMs, p50: originalMs, p90: originalMs }, optimizedMs: { p10: optimizedMs, p50: optimizedMs, p90: optimizedMs },
  speedup: originalMs / optimizedMs, runs: 6, backend: 'node', threads: 1, outputsKept: true,
});

/** A fake timer that records what it was asked to time. */
function fakeMeasure(answer: Result<LatencyStats>): { measure: typeof measureLatency; seen: ModelSource[] } {
  const seen: ModelSource[] = [];
  const measure = (async (a: ModelSource, b: ModelSource) => { seen.push(a, b); return answer; }) as unknown as typeof measureLatency;
  return { measure, seen };
}

describe('checkNarrowReorder', () => {
  const original = { path: 'in.onnx' };

  it('keeps the barriers when the original runs faster with them, and times the original against a copy that has them', async () => {
    const proto = narrowModel();
    const nodes = proto.graph!.node.length;
    const f = fakeMeasure(ok(stats(10, 8)));
    let phases = 0;
    const r = await checkNarrowReorder(original, new Model(proto), { block: 16, threads: 1, measure: f.measure, phase: (fn) => { phases++; return fn(); } });
    expect(phases).toBe(1);
    expect(r!.report).toMatchObject({ block: 16, kept: true, originalMs: 10, reorderedMs: 8, speedup: 1.25, runs: 6 });
    expect(r!.report.sites.map((s) => s.conv)).toEqual(['head', 'quad']);
    expect(f.seen[0]).toBe(original);
    const timed = decodeModel((f.seen[1] as { bytes: Uint8Array }).bytes);
    expect(timed.graph!.node.filter((n) => n.opType === 'Reshape')).toHaveLength(2);
    // The model itself is untouched: the copy got the barriers.
    expect(proto.graph!.node).toHaveLength(nodes);
    expect(proto.graph!.node.some((n) => n.opType === 'Reshape')).toBe(false);
    expect(narrowReorderLine(r!.report)).toMatch(/^narrow reorder: 2 conv output\(s\) of 1\/4 channel\(s\), which ORT's blocked layout pads to 16, reordered before their readers \(Resize, Add\): the model before rewriting ran 10\.0 -> 8\.0 ms with that alone \(1\.25x, 6 runs each\), so OUT has it too/);
  });

  it('leaves them out below the threshold or when the timing fails, and says why', async () => {
    const slow = await checkNarrowReorder(original, new Model(narrowModel()), { block: 16, threads: 1, measure: fakeMeasure(ok(stats(10, 10 / (NARROW_MIN_SPEEDUP - 0.005)))).measure });
    expect(slow!.report).toMatchObject({ kept: false, why: `below ${NARROW_MIN_SPEEDUP}x in ORT` });
    expect(narrowReorderLine(slow!.report)).toMatch(/below 1\.02x in ORT, so OUT does not have it$/);
    const failed = await checkNarrowReorder(original, new Model(narrowModel()), { block: 16, threads: 1, measure: fakeMeasure(err('unsupported', 'boom')).measure });
    expect(failed!.report).toMatchObject({ kept: false, why: 'not measured: boom' });
    expect(failed!.report.speedup).toBeUndefined();
    expect(narrowReorderLine(failed!.report)).toMatch(/: not measured: boom, so OUT does not have it$/);
  });

  it('says nothing where there is nothing to do: no blocked layout, no narrow conv', async () => {
    const never = fakeMeasure(ok(stats(10, 5)));
    // Nothing timed, so no phase in the run's times either.
    const phase = (): never => { throw new Error('no timing expected'); };
    expect(await checkNarrowReorder(original, new Model(narrowModel()), { block: undefined, threads: 1, measure: never.measure, phase })).toBeUndefined();
    const wide = wideModel();
    expect(await checkNarrowReorder(original, new Model(wide), { block: 16, threads: 1, measure: never.measure, phase })).toBeUndefined();
    expect(never.seen).toEqual([]);
  });
});

describe('optimize with narrow conv heads (CLI, timed in ORT)', () => {
  it('measures the reorder on the original, reports it (schema-valid), and OUT has it exactly when it was kept; --no-narrow-reorder or saving params turns it off', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-narrow-cli-'));
    const inPath = path.join(dir, 'in.onnx');
    const bytes = encodeModel(narrowModel({ size: 48 }));
    writeFileSync(inPath, bytes);
    const out = path.join(dir, 'out.onnx');
    const r = await runCli('optimize', inPath, out, '--report', path.join(dir, 'r.json'));
    expect(r.code, r.err).toBe(0);
    expect(readFileSync(inPath)).toEqual(Buffer.from(bytes));
    const report = JSON.parse(readFileSync(path.join(dir, 'r.json'), 'utf8'));
    expect(new SchemaValidator(path.resolve('schema')).validate('report.schema.json', report)).toEqual([]);
    const nr = report.narrowReorder;
    // Which way the timing goes is the machine's to say; what follows from it is checked.
    const block = nr?.block;
    if (block === undefined) {
      expect(process.arch === 'x64').toBe(false);
      return;
    }
    expect(nr.sites.map((s: { conv: string }) => s.conv)).toEqual(block >= 8 ? ['head', 'quad'] : []);
    expect(nr.speedup).toBeGreaterThan(0);
    expect(nr.kept).toBe(nr.speedup >= NARROW_MIN_SPEEDUP);
    expect(r.out).toContain(narrowReorderLine(nr));
    expect(report.timings.narrowReorder).toBeGreaterThan(0);
    const written = loadModel(out).model;
    expect(written.graph!.node.filter((n) => n.opType === 'Reshape').length).toBe(nr.kept ? 2 : 0);
    expect(report.verify.pass).toBe(true);

    // Turned off, or saving params (OUT then never depends on a timing): not timed, not applied.
    for (const flags of [['--no-narrow-reorder'], ['--save', 'params']]) {
      const off = await runCli('optimize', inPath, path.join(dir, 'off.onnx'), ...flags, '--json', '--force');
      expect(off.code, off.err).toBe(0);
      expect(JSON.parse(off.out).narrowReorder, flags.join(' ')).toBeUndefined();
      expect(loadModel(path.join(dir, 'off.onnx')).model.graph!.node.some((n) => n.opType === 'Reshape')).toBe(false);
    }
  }, 120_000);
});
