/**
 * `onnx-lr optimize --compute float32`: the run works on a copy of IN that computes in
 * float32; OUT computes in float32 and is verified and timed against IN itself; the report
 * describes IN as the user has it; IN untouched, no copy left behind.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { DataType } from '../../src/onnx/schema.js';
import { summarize } from '../../src/graph/summary.js';
import { computesInFloat16 } from '../../src/rewrite/compute-float32.js';
import { fp16ConvModel } from '../helpers/fp16-model.js';
import { runCli } from '../helpers/cli.js';
import { SchemaValidator } from '../report/json-schema.js';

const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-optimize-compute-'));
const sha = (f: string): string => createHash('sha256').update(readFileSync(f)).digest('hex');
const copies = (): string[] => readdirSync(tmpdir()).filter((f) => f.startsWith('onnx-lr-work-'));

describe('optimize --compute float32', () => {
  it('writes OUT computing in float32, verified and timed against IN itself; the report describes IN as given', async () => {
    const inPath = path.join(dir, 'half.onnx');
    const half = fp16ConvModel(true);
    writeFileSync(inPath, encodeModel(half));
    const before = sha(inPath);
    const outPath = path.join(dir, 'out.onnx');
    const r = await runCli('optimize', inPath, outPath, '--compute', 'float32', '--rank-ratio', '0.5', '--min-params', '0', '--json');
    expect(r.code, r.err).toBe(0);
    expect(sha(inPath)).toBe(before);
    const report = JSON.parse(r.out);
    expect(new SchemaValidator(path.resolve('schema')).validate('report.schema.json', report)).toEqual([]);
    expect(report.notes).toContainEqual(expect.stringMatching(/^--compute float32: the run worked on a copy of IN that computes in float32 \(3 float16 constants read through a Cast, 1 Casts to float16 now to float, 5 value types float32, 1 float16 graph inputs\/outputs behind a Cast, \d+ attributes\); OUT is verified and timed against IN itself$/));
    // Not the float16 note: the run acted on it.
    expect(report.notes.some((n: string) => n.startsWith('this model computes in float16'))).toBe(false);
    expect(report.input).toMatchObject({ file: inPath, bytes: readFileSync(inPath).length, nodeCount: summarize(half).nodeCount, fingerprint: summarize(half).fingerprint });
    expect(report.verify.pass).toBe(true);
    expect(report.latency.originalMs.p50).toBeGreaterThan(0);
    expect(computesInFloat16(decodeModel(new Uint8Array(readFileSync(outPath))))).toBe(false);
    // The copy is gone with the run (runCli runs it in this process: its folder carries this pid).
    expect(copies().filter((c) => c.startsWith(`onnx-lr-work-${process.pid}-`))).toEqual([]);
  }, 60_000);

  it('judges OUT against IN, not against the copy: where float32 arithmetic changes the outputs, the verdict says so', async () => {
    // y = float(half(x·1e5)): IN gives ±inf, the float32 copy finite values.
    const b = new ModelBuilder({ opset: 17 });
    const x = b.input('x', [1, 4, 8, 8]);
    const big = b.node('Mul', [x, b.init('big', [1], [1e5])]);
    b.output(b.node('Cast', [b.node('Cast', [big], { to: DataType.FLOAT16 })], { to: DataType.FLOAT }), [1, 4, 8, 8]);
    const inPath = path.join(dir, 'overflow.onnx');
    writeFileSync(inPath, encodeModel(b.build()));
    const r = await runCli('optimize', inPath, path.join(dir, 'overflow-out.onnx'), '--compute', 'float32', '--no-latency', '--json');
    expect(r.code).toBe(1);
    expect(JSON.parse(r.out).verify.pass).toBe(false);
  }, 60_000);

  it('never replaces or removes what IN reads: OUT = IN needs --force, and an old OUT\'s data file IN shares is kept', async () => {
    const sub = mkdtempSync(path.join(dir, 'ext-'));
    const src = path.join(sub, 'src.onnx');
    writeFileSync(src, encodeModel(fp16ConvModel(true)));
    // out.onnx keeps its weights in out.onnx.<hash>.data; v1.onnx is a copy reading the same data file.
    const out = path.join(sub, 'out.onnx');
    expect((await runCli('convert', src, out, '--external-data', '--threshold', '0')).code).toBe(0);
    const data = readdirSync(sub).filter((f) => f.startsWith('out.onnx.') && f.endsWith('.data'));
    expect(data).toHaveLength(1);
    const v1 = path.join(sub, 'v1.onnx');
    writeFileSync(v1, readFileSync(out));
    const same = await runCli('optimize', v1, v1, '--compute', 'float32', '--no-latency');
    expect(same.code).toBe(2);
    expect(same.err).toMatch(/--force/);
    const r = await runCli('optimize', v1, out, '--compute', 'float32', '--no-latency');
    expect(r.code, r.err).toBe(0);
    // The old OUT's data file is v1's too: still there, and v1 still loads and runs.
    expect(readdirSync(sub)).toEqual(expect.arrayContaining(data));
    expect((await runCli('optimize', v1, path.join(sub, 'again.onnx'), '--no-latency')).code).toBe(0);
    const forced = await runCli('optimize', v1, v1, '--compute', 'float32', '--no-latency', '--force');
    expect(forced.code, forced.err).toBe(0);
    expect(computesInFloat16(decodeModel(new Uint8Array(readFileSync(v1))))).toBe(false);
  }, 60_000);

  it('a plan made with --compute float32 is IN\'s: optimize --compute float32 --plan applies it, not refused as another model\'s', async () => {
    const inPath = path.join(dir, 'plan-half.onnx');
    writeFileSync(inPath, encodeModel(fp16ConvModel(true)));
    const planned = await runCli('plan', inPath, '--compute', 'float32', '--rank-ratio', '0.5', '--min-params', '0');
    expect(planned.code, planned.err).toBe(0);
    const planPath = path.join(dir, 'plan.json');
    writeFileSync(planPath, planned.out);
    const r = await runCli('optimize', inPath, path.join(dir, 'planned.onnx'), '--compute', 'float32', '--plan', planPath, '--no-latency', '--min-cosine', '0', '--json');
    expect(r.code, r.err).toBe(0);
    expect(JSON.parse(r.out).notes.some((n: string) => /made for another model/.test(n))).toBe(false);
  }, 60_000);

  it('on a float32 model changes nothing and says so; another value is a usage error', async () => {
    const f32 = path.join(dir, 'f32.onnx');
    writeFileSync(f32, encodeModel(fp16ConvModel(false)));
    const r = await runCli('optimize', f32, path.join(dir, 'f32-out.onnx'), '--compute', 'float32', '--no-latency', '--json');
    expect(r.code, r.err).toBe(0);
    expect(JSON.parse(r.out).notes).toContain('--compute float32: IN computes in float32 already, nothing to change');
    const bad = await runCli('optimize', f32, path.join(dir, 'bad.onnx'), '--compute', 'float64');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--compute expects float32, got "float64"/);
  }, 60_000);
});
