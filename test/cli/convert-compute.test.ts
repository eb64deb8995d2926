/**
 * `onnx-lr convert --compute float32`: a float16 model written to compute in float32, checked
 * in ORT against IN before OUT is committed; IN untouched; what it cannot follow refused
 * with nothing written; bad options are usage errors.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { DataType } from '../../src/onnx/schema.js';
import { computesInFloat16 } from '../../src/rewrite/compute-float32.js';
import { fp16ConvModel } from '../helpers/fp16-model.js';
import { randomFeed, relL2 } from '../helpers/ort.js';
import { runCli } from '../helpers/cli.js';
import { SchemaValidator } from '../report/json-schema.js';

const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-convert-compute-'));
const sha = (f: string): string => createHash('sha256').update(readFileSync(f)).digest('hex');

async function firstOutput(file: string, x: ort.Tensor): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(file, { intraOpNumThreads: 1 });
  try { return (await s.run({ x }))[s.outputNames[0]!]!.data as Float32Array; } finally { await s.release(); }
}

describe('convert --compute float32', () => {
  it('writes a model that computes in float32, checked against IN, and leaves IN as it was', async () => {
    const inPath = path.join(dir, 'half.onnx');
    writeFileSync(inPath, encodeModel(fp16ConvModel(true)));
    const before = sha(inPath);
    const outPath = path.join(dir, 'out.onnx');
    const r = await runCli('convert', inPath, outPath, '--compute', 'float32');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/computes in float32: 3 float16 constants read through a Cast, 1 Casts to float16 now to float, 5 value types float32, 1 float16 graph inputs\/outputs behind a Cast/);
    expect(r.out).toMatch(/checked in ONNX Runtime against IN on 3 seeded random inputs: worst output cosine 1\.0000|worst output cosine 0\.9999/);
    expect(sha(inPath)).toBe(before);
    const out = decodeModel(new Uint8Array(readFileSync(outPath)));
    expect(computesInFloat16(out)).toBe(false);
    const x = randomFeed([1, 4, 8, 8], 9);
    expect(relL2(await firstOutput(inPath, x), await firstOutput(outPath, x))).toBeLessThan(1e-2);
    // optimize says a float16 graph could compute in float32; of OUT it says nothing of the kind.
    const said = async (f: string): Promise<boolean> => (await runCli('optimize', f, path.join(dir, 'opt.onnx'), '--no-latency', '--force')).out.includes('--compute float32');
    expect(await said(inPath)).toBe(true);
    expect(await said(outPath)).toBe(false);
    // inspect says so too, in its text and its JSON (valid against the shipped schema); of OUT nothing.
    const schemas = new SchemaValidator(path.resolve('schema'));
    const text = await runCli('inspect', inPath, '--no-profile');
    expect(text.out).toMatch(/note: this model computes in float16, .*--compute float32/);
    const json = JSON.parse((await runCli('inspect', inPath, '--no-profile', '--json')).out) as Record<string, unknown>;
    expect(json.computeNote).toMatch(/--compute float32/);
    expect(schemas.validate('inspect.schema.json', json)).toEqual([]);
    expect((await runCli('inspect', outPath, '--no-profile')).out).not.toMatch(/computes in float16/);
    // A float32 model: OUT is IN re-encoded, and says so.
    const f32 = path.join(dir, 'f32.onnx');
    writeFileSync(f32, encodeModel(fp16ConvModel(false)));
    const r2 = await runCli('convert', f32, path.join(dir, 'f32-out.onnx'), '--compute', 'float32');
    expect(r2.code).toBe(0);
    expect(r2.out).toMatch(/IN computes in float32 already/);
  });

  it('refuses what it cannot follow, writing nothing', async () => {
    const m = fp16ConvModel(true);
    m.graph!.node[2]!.domain = 'com.example';
    const inPath = path.join(dir, 'custom.onnx');
    writeFileSync(inPath, encodeModel(m));
    const outPath = path.join(dir, 'custom-out.onnx');
    const r = await runCli('convert', inPath, outPath, '--compute', 'float32');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/cannot compute in float32: node .* is in domain "com\.example"/);
    expect(existsSync(outPath)).toBe(false);
  });

  it('writes nothing when OUT computes other outputs than IN (a Cast to float16 that overflows on purpose)', async () => {
    // y = float(half(x·1e5)): IN gives ±inf, float32 arithmetic finite values.
    const b = new ModelBuilder({ opset: 17 });
    const x = b.input('x', [1, 4, 8, 8]);
    const big = b.node('Mul', [x, b.init('big', [1], [1e5])]);
    const y = b.node('Cast', [b.node('Cast', [big], { to: DataType.FLOAT16 })], { to: DataType.FLOAT });
    b.output(y, [1, 4, 8, 8]);
    const inPath = path.join(dir, 'overflow.onnx');
    writeFileSync(inPath, encodeModel(b.build()));
    const outPath = path.join(dir, 'overflow-out.onnx');
    const r = await runCli('convert', inPath, outPath, '--compute', 'float32');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/OUT computes other outputs than IN .*; nothing written/);
    expect(readdirSync(dir).filter((f) => f.includes('overflow-out'))).toEqual([]);
  });

  it('bad options are usage errors', async () => {
    const inPath = path.join(dir, 'half2.onnx');
    writeFileSync(inPath, encodeModel(fp16ConvModel(true)));
    const bad = await runCli('convert', inPath, path.join(dir, 'x.onnx'), '--compute', 'float16');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--compute expects float32, got "float16"/);
    const shape = await runCli('convert', inPath, path.join(dir, 'y.onnx'), '--shape', 'x:1x4x8x8');
    expect(shape.code).toBe(2);
    expect(shape.err).toMatch(/--shape needs --compute/);
    expect(existsSync(path.join(dir, 'x.onnx')) || existsSync(path.join(dir, 'y.onnx'))).toBe(false);
  });
});
