/**
 * --weights fall-back (src/rewrite/quantize-factors.ts factorStorage, src/optimize/
 * write-verify.ts): when OUT with int8 factors fails the verification where wider factors
 * pass, OUT is written with fp16 factors, and with the factors as the rewrite made them
 * when fp16 fails too; the report's `weights` and notes say so. Verified in ORT on real
 * files: a rank-3 MatMul rewritten exactly at rank 3, so fp32 factors are exact to
 * roundoff, fp16 factors within ~1e-3 relative and int8 within ~1e-2, and thresholds
 * between those errors decide each case.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { loadModel } from '../../src/onnx/load.js';
import { DataType } from '../../src/onnx/schema.js';
import { optimizeModel, type OptimizeOptions } from '../../src/optimize/driver.js';
import type { Job, PipelineConfig } from '../../src/optimize/job.js';
import { writeAndVerify } from '../../src/optimize/write-verify.js';
import { factorStorage } from '../../src/rewrite/quantize-factors.js';
import { lowRank } from '../helpers/ort.js';

const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-fallback-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** x [8, 96] · W [96, 80], W of rank 3 with one large column per factor (int8 steps are then coarse for the rest). */
function model(): string {
  const w = lowRank(96, 80, 3, 7).map((v, i) => v * (i % 80 === 0 ? 40 : 1));
  const b = new ModelBuilder({ opset: 13 });
  b.output(b.node('MatMul', [b.input('x', [8, 96]), b.init('w', [96, 80], w)], {}, { name: 'mm' }));
  const file = path.join(dir, 'in.onnx');
  writeFileSync(file, encodeModel(b.build()));
  return file;
}

const OPTS: OptimizeOptions = { method: 'auto', policy: { kind: 'fixed', rank: 3 }, minParams: 0, seed: 0 };

/** Rewrites IN at rank 3, stores the factors as `mode`, and writes OUT through writeAndVerify at `minCosine`. */
async function run(inPath: string, mode: 'fp16' | 'int8', minCosine: number, out: string) {
  const loaded = loadModel(inPath);
  try {
    const job: Job = { inPath, loaded, model: new Model(loaded.model), opts: OPTS, timings: {} };
    const records = optimizeModel(job.model, undefined, OPTS);
    expect(records.filter((r) => !r.skipped)).toHaveLength(1);
    const factors = factorStorage(job.model, records, mode, { external: loaded.external });
    const stages: string[] = [];
    const cfg: PipelineConfig = {
      opts: OPTS, shapes: {}, values: {}, dataAware: false, save: { force: false, externalData: false }, onStage: (s) => stages.push(s),
      verify: { enabled: true, minCosine, threads: 1, latency: false, web: false },
    };
    const written = await writeAndVerify(job, cfg, out, undefined, factors);
    const cosine = Math.min(...written.verify!.outputs.map((o) => o.cosine));
    return { written, weights: factors.weights, stages, cosine, proto: decodeModel(readFileSync(out)) };
  } finally {
    loaded.external.close();
  }
}

const ops = (p: ReturnType<typeof decodeModel>): string[] => p.graph!.node.map((n) => n.opType ?? '');

describe('--weights falls back when OUT fails the verification', () => {
  const inPath = model();

  it('int8 factors that pass are kept: no fall-back (the baseline the thresholds below sit on)', async () => {
    const r = await run(inPath, 'int8', 0.9, path.join(dir, 'int8-ok.onnx'));
    expect(r.written.pass).toBe(true);
    expect(r.weights).toMatchObject({ mode: 'int8', factors: 2 });
    expect(r.weights.fallback).toBeUndefined();
    expect(ops(r.proto).filter((o) => o === 'DequantizeLinear')).toHaveLength(2);
    // int8's error sits between fp16's and the thresholds of the next tests.
    expect(r.cosine).toBeLessThan(0.99999);
  }, 60_000);

  it('int8 fails at a tight threshold, fp16 passes: OUT holds fp16 factors and says why', async () => {
    const out = path.join(dir, 'int8-to-fp16.onnx');
    const r = await run(inPath, 'int8', 0.99999, out);
    expect(r.written.pass).toBe(true);
    expect(r.cosine).toBeGreaterThanOrEqual(0.99999);
    expect(r.weights).toMatchObject({ mode: 'fp16', factors: 2, requested: 'int8' });
    expect(r.weights.fallback).toMatch(/^OUT failed the verification with int8 factors \(worst output cosine 0\.\d{6}, threshold 0\.99999\); stored as fp16 instead$/);
    expect(r.written.notes.some((n) => n.startsWith('--weights: OUT failed the verification with int8 factors') && n.endsWith('storing them as fp16'))).toBe(true);
    expect(r.stages.some((s) => s.includes('storing them as fp16'))).toBe(true);
    expect(ops(r.proto)).not.toContain('DequantizeLinear');
    expect(r.proto.graph!.initializer.filter((t) => t.dataType === DataType.FLOAT16)).toHaveLength(2);
    expect(r.proto.graph!.initializer.some((t) => t.dataType === DataType.INT8)).toBe(false);
  }, 60_000);

  it('int8 and fp16 fail, fp32 passes: OUT holds the factors as the rewrite made them', async () => {
    const out = path.join(dir, 'int8-to-fp32.onnx');
    const r = await run(inPath, 'int8', 0.999999999, out);
    expect(r.written.pass).toBe(true);
    expect(r.weights).toMatchObject({ mode: 'int8', factors: 0, requested: 'int8' });
    expect(r.weights.declined).toMatch(/with int8 factors .*, then with fp16 factors .*; the factors are kept as the rewrite made them$/);
    expect(ops(r.proto)).toEqual(['MatMul', 'MatMul']);
    expect(r.proto.graph!.initializer.every((t) => t.dataType === DataType.FLOAT)).toBe(true);
  }, 60_000);

  it('fp16 requested and failing falls back to fp32 the same way', async () => {
    const r = await run(inPath, 'fp16', 0.999999999, path.join(dir, 'fp16-to-fp32.onnx'));
    expect(r.written.pass).toBe(true);
    expect(r.weights).toMatchObject({ mode: 'fp16', factors: 0, requested: 'fp16' });
    expect(ops(r.proto)).toEqual(['MatMul', 'MatMul']);
  }, 60_000);
});
