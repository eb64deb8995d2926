/**
 * --refine (src/optimize/refine.ts): the rewritten layers' new factors refitted to the
 * original's outputs on the calibration inputs by L-BFGS on gradients from backward runs.
 * Checked by another route: the written models run in ORT on the calibration samples give
 * the rel. L2 the note reports before and after, the refit lowers it and the error on
 * samples it never saw, and no weight of the original moves.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { readNpy, writeNpy } from '../../src/io/npy.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { DataType, type ModelProto } from '../../src/onnx/schema.js';
import type { Report } from '../../src/report/report.js';
import { createRng } from '../../src/util/rng.js';
import { createSession } from '../../src/verify/session.js';
import { toNumbers } from '../../src/verify/tensor.js';
import { calibFile } from '../helpers/calib.js';
import { runCli } from '../helpers/cli.js';
import { REAL } from '../helpers/models.js';
import { fp16ConvModel } from '../helpers/fp16-model.js';
import { writeFileSync } from 'node:fs';

const SAMPLE = [3, 48, 192];

/** The first output of `model` on each sample of the .npy `file`, one sample per run. */
async function outputs(model: string, file: string): Promise<Float64Array[]> {
  const a = readNpy(file);
  if (!a.ok) throw a.error;
  const [n, ...one] = a.value.shape;
  const size = one.reduce((p, q) => p * q, 1);
  const s = await createSession({ path: model }, { graphOptimizationLevel: 'disabled' });
  if (!s.ok) throw s.error;
  try {
    const outs: Float64Array[] = [];
    for (let k = 0; k < n!; k++) {
      const data = Float32Array.from((a.value.data as Float32Array).subarray(k * size, (k + 1) * size));
      const r = await s.value.run({ x: { type: 'float32', dims: [1, ...one], data } });
      if (!r.ok) throw r.error;
      outs.push(toNumbers(Object.values(r.value)[0]!));
    }
    return outs;
  } finally {
    await s.value.release();
  }
}

/** √(Σ‖ŷ − y‖² / Σ‖y‖²) over every sample. */
function relL2(ref: Float64Array[], got: Float64Array[]): number {
  let num = 0;
  let den = 0;
  ref.forEach((r, k) => r.forEach((v, i) => { num += (got[k]![i]! - v) ** 2; den += v * v; }));
  return Math.sqrt(num / den);
}

const initializers = (file: string): Map<string, string> =>
  new Map(decodeModel(new Uint8Array(readFileSync(file))).graph!.initializer.map((t) => [t.name ?? '', Buffer.from(t.rawData ?? new Uint8Array()).toString('base64')]));

const refineNote = (r: Report): string | undefined => r.notes.find((n) => n.startsWith('--refine'));

/** A float32 .npy of `n` seeded N(0,1) samples of `one` in a new directory. */
function samples(tag: string, n: number, one: number[], seed: number): string {
  return calibFile(mkdtempSync(path.join(tmpdir(), `onnx-lr-refine-${tag}-`)), [n, ...one], seed);
}

/** Checks the note's figures against the written models run in ORT; returns them. */
async function checkNote(note: string, o: { original: string; plain: string; refined: string; calib: string; fitted: [number, number]; leftOut: [number, number]; label: string }) {
  const esc = o.label.replace(/[()]/g, '\\$&');
  const m = new RegExp(`(\\d+) factor tensor\\(s\\) of (\\d+) node\\(s\\) refitted to the original's outputs on ${esc}: rel\\. L2 there ([\\d.e-]+) → ([\\d.e-]+), on the part left out ([\\d.e-]+) → ([\\d.e-]+) \\(kept evaluation (\\d+) of (\\d+)\\)`).exec(note);
  expect(m, note).not.toBeNull();
  const [before, after, leftBefore, leftAfter] = [3, 4, 5, 6].map((k) => Number(m![k]));
  const ref = await outputs(o.original, o.calib);
  const [p, r] = [await outputs(o.plain, o.calib), await outputs(o.refined, o.calib)];
  const part = (xs: Float64Array[], [from, to]: [number, number]): Float64Array[] => xs.slice(from, to);
  expect(relL2(part(ref, o.fitted), part(p, o.fitted))).toBeCloseTo(before, 3);
  expect(relL2(part(ref, o.fitted), part(r, o.fitted))).toBeCloseTo(after, 3);
  expect(relL2(part(ref, o.leftOut), part(p, o.leftOut))).toBeCloseTo(leftBefore, 3);
  expect(relL2(part(ref, o.leftOut), part(r, o.leftOut))).toBeCloseTo(leftAfter, 3);
  return { tensors: Number(m![1]), before, after, leftBefore, leftAfter, kept: Number(m![7]), evaluations: Number(m![8]) };
}

/** Initializers that differ between two models. */
function moved(a: string, b: string): string[] {
  const [p, q] = [initializers(a), initializers(b)];
  expect([...q.keys()].sort()).toEqual([...p.keys()].sort());
  return [...q].filter(([k, v]) => p.get(k) !== v).map(([k]) => k);
}

/** Three convs with Relus between, weights of decaying spectra, written to a new directory. */
function threeConvs(): { dir: string; model: string } {
  const rng = createRng(21);
  const randn = (n: number, s: number): number[] => Array.from({ length: n }, () => s * rng.normal());
  /** An [o, i·k·k] weight Σ_j 0.8^j·u_j·v_jᵀ: a spectrum that decays, as trained layers' do. */
  const decaying = (o: number, cols: number, scale: number): number[] => {
    const r = Math.min(o, cols);
    const [u, v] = [randn(o * r, 1), randn(r * cols, 1 / Math.sqrt(cols))];
    return Array.from({ length: o * cols }, (_, e) => {
      const [i, j] = [Math.floor(e / cols), e % cols];
      let t = 0;
      for (let k = 0; k < r; k++) t += 0.8 ** k * u[i * r + k]! * v[k * cols + j]!;
      return scale * t;
    });
  };
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', ['n', 8, 10, 10]);
  let h = b.node('Relu', [b.node('Conv', [x, b.init('w1', [32, 8, 3, 3], decaying(32, 72, 0.6)), b.init('b1', [32], randn(32, 0.1))], { pads: [1, 1, 1, 1] }, { name: 'c1' })]);
  h = b.node('Relu', [b.node('Conv', [h, b.init('w2', [32, 32, 3, 3], decaying(32, 288, 0.6)), b.init('b2', [32], randn(32, 0.1))], { pads: [1, 1, 1, 1] }, { name: 'c2' })]);
  b.output(b.node('Conv', [h, b.init('w3', [16, 32, 1, 1], decaying(16, 32, 0.6))], {}, { name: 'c3' }));
  const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-refine-convs-'));
  const model = path.join(dir, 'm.onnx');
  writeFileSync(model, encodeModel(b.build()));
  return { dir, model };
}

describe('--refine', () => {
  it('three convs with Relus at rank ratio 0.5, 64 calibration samples: lower error on 32 samples it never saw; the note\'s figures are the written models\' in ORT; only new factors move', async () => {
    const { dir, model } = threeConvs();
    const calib = samples('calib', 64, [8, 10, 10], 1);
    const held = samples('held', 32, [8, 10, 10], 2);
    const common = ['--shape', 'x:1x8x10x10', '--min-params', '0', '--rank-ratio', '0.5', '--calib', calib, '--no-verify', '--json'];
    const plain = path.join(dir, 'plain.onnx');
    const refined = path.join(dir, 'refined.onnx');
    const a = await runCli('optimize', model, plain, ...common);
    expect(a.code, a.err).toBe(0);
    const r = await runCli('optimize', model, refined, ...common, '--refine', '30');
    expect(r.code, r.err).toBe(0);
    const report = JSON.parse(r.out) as Report;
    expect(report.timings?.refine).toBeGreaterThan(0);
    // 64 samples in feeds of 8: the first 7 fitted, the last left out to pick the evaluation kept.
    const n = await checkNote(refineNote(report)!, { original: model, plain, refined, calib, fitted: [0, 56], leftOut: [56, 64], label: '7 of 8 calibration feeds' });
    expect(n.evaluations).toBeLessThanOrEqual(30);
    expect(n.kept).toBeGreaterThan(0);
    expect(n.after).toBeLessThan(0.95 * n.before);
    expect(n.leftAfter).toBeLessThan(n.leftBefore);
    const refHeld = await outputs(model, held);
    const [pe, re] = [relL2(refHeld, await outputs(plain, held)), relL2(refHeld, await outputs(refined, held))];
    expect(re).toBeLessThan(pe);
    const m = moved(plain, refined);
    expect(m.length).toBe(n.tensors);
    for (const k of m) expect(['w1', 'b1', 'w2', 'b2', 'w3']).not.toContain(k);
  });

  it('a ConvTranspose layer\'s factors are refitted too (its core is a ConvTranspose): the note counts them and the error falls', async () => {
    const rng = createRng(31);
    const randn = (n: number, sd: number): number[] => Array.from({ length: n }, () => sd * rng.normal());
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', ['n', 32, 6, 6]);
    const t = b.node('ConvTranspose', [x, b.init('wt', [32, 32, 3, 3], randn(9216, 0.1)), b.init('bt', [32], randn(32, 0.1))], { strides: [2, 2], pads: [1, 1, 1, 1], output_padding: [1, 1] }, { name: 't1' });
    b.output(b.node('Conv', [b.node('Relu', [t]), b.init('wc', [8, 32, 1, 1], randn(256, 0.3))], {}, { name: 'c1' }));
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-refine-convt-'));
    const model = path.join(dir, 'm.onnx');
    writeFileSync(model, encodeModel(b.build()));
    const calib = samples('convt', 32, [32, 6, 6], 7);
    const common = ['--shape', 'x:1x32x6x6', '--min-params', '0', '--rank-ratio', '0.5', '--method', 'tucker2', '--calib', calib, '--no-verify', '--json'];
    const [plain, refined] = [path.join(dir, 'plain.onnx'), path.join(dir, 'refined.onnx')];
    expect((await runCli('optimize', model, plain, ...common)).code).toBe(0);
    const r = await runCli('optimize', model, refined, ...common, '--refine', '15');
    expect(r.code, r.err).toBe(0);
    const report = JSON.parse(r.out) as Report;
    expect(report.layers.find((l) => l.name === 't1')?.method).toBe('tucker2');
    const notes = report.notes.filter((n) => n.startsWith('--refine')).join('\n');
    expect(notes).not.toMatch(/kept as fitted/);
    const n = await checkNote(refineNote(report)!, { original: model, plain, refined, calib, fitted: [0, 24], leftOut: [24, 32], label: '3 of 4 calibration feeds' });
    expect(n.after).toBeLessThan(n.before);
    // The ConvTranspose core's weight is among the tensors moved.
    const out = decodeModel(new Uint8Array(readFileSync(refined))).graph!;
    const core = out.node.filter((v) => v.opType === 'ConvTranspose').map((v) => v.input[1]!);
    expect(core).toHaveLength(1);
    expect(moved(plain, refined)).toContain(core[0]);
  });

  it('PP-OCR cls: its figures are the written models\' in ORT, and a refit no step of which helps on the part left out keeps the fit as it was', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-refine-cls-'));
    const calib = samples('cls', 16, SAMPLE, 3);
    const common = ['--shape', 'x:1x3x48x192', '--min-params', '0', '--rank-ratio', '0.5', '--calib', calib, '--no-verify', '--json'];
    const plain = path.join(dir, 'plain.onnx');
    const refined = path.join(dir, 'refined.onnx');
    expect((await runCli('optimize', REAL.cls, plain, ...common)).code).toBe(0);
    const r = await runCli('optimize', REAL.cls, refined, ...common, '--refine', '10');
    expect(r.code, r.err).toBe(0);
    const n = await checkNote(refineNote(JSON.parse(r.out) as Report)!, { original: REAL.cls, plain, refined, calib, fitted: [0, 8], leftOut: [8, 16], label: '1 of 2 calibration feeds' });
    expect(n.leftAfter).toBeLessThanOrEqual(n.leftBefore);
    // cls judges 2 probabilities per sample: 16 numbers from 8 samples do not pin 129 factors down.
    expect(n.kept).toBe(0);
    expect(moved(plain, refined)).toEqual([]);
  });

  it('one calibration sample: nothing to leave out, so the evaluation kept is the one best on the sample fitted, and the note says so', async () => {
    const { dir, model } = threeConvs();
    const calib = samples('one', 1, [8, 10, 10], 5);
    const r = await runCli('optimize', model, path.join(dir, 'r.onnx'), '--shape', 'x:1x8x10x10', '--min-params', '0', '--rank-ratio', '0.5', '--calib', calib, '--no-verify', '--json', '--refine', '8');
    expect(r.code, r.err).toBe(0);
    const notes = (JSON.parse(r.out) as Report).notes.filter((n) => n.startsWith('--refine'));
    expect(notes.join('\n')).toMatch(/no part of the calibration data to leave out/);
    const m = /on 1 calibration feed\(s\): rel\. L2 there ([\d.e-]+) → ([\d.e-]+) \(kept evaluation (\d+) of 8\)/.exec(notes[0]!);
    expect(m, notes[0]).not.toBeNull();
    expect(Number(m![2])).toBeLessThan(Number(m![1]));
    const ref = await outputs(model, calib);
    expect(relL2(ref, await outputs(path.join(dir, 'r.onnx'), calib))).toBeCloseTo(Number(m![2]), 3);
  });

  it('--max-memory bounds the optimizer\'s state: a limit too small for it leaves the fit as it was, with the reason', async () => {
    const { dir, model } = threeConvs();
    const calib = samples('mem', 16, [8, 10, 10], 9);
    const args = ['--shape', 'x:1x8x10x10', '--min-params', '0', '--rank-ratio', '0.5', '--calib', calib, '--no-verify', '--json', '--refine', '3'];
    const r = await runCli('optimize', model, path.join(dir, 'r.onnx'), ...args, '--max-memory', '0.00001');
    expect(r.code, r.err).toBe(0);
    const notes = (JSON.parse(r.out) as Report).notes.filter((n) => n.startsWith('--refine')).join('\n');
    expect(notes).toMatch(/nothing refined: its \d+ factor weights would need .* GiB of optimizer state, more than the .* GiB allowed \(a quarter of the memory the run may use\)/);
    const plain = await runCli('optimize', model, path.join(dir, 'p.onnx'), ...args.slice(0, -2));
    expect(plain.code, plain.err).toBe(0);
    expect(moved(path.join(dir, 'p.onnx'), path.join(dir, 'r.onnx'))).toEqual([]);
  });

  it('a float16 model with --compute float32: its float16 factors, read through Casts, are refitted and stay float16', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-refine-half-'));
    const model = path.join(dir, 'half.onnx');
    writeFileSync(model, encodeModel(fp16ConvModel(true)));
    const calib = samples('half', 16, [4, 8, 8], 6);
    const common = ['--compute', 'float32', '--rank-ratio', '0.5', '--min-params', '0', '--calib', calib, '--outputs', 'cast_8_out0', '--no-verify', '--json', '--no-anchor'];
    const [plain, refined] = [path.join(dir, 'plain.onnx'), path.join(dir, 'refined.onnx')];
    expect((await runCli('optimize', model, plain, ...common)).code).toBe(0);
    const r = await runCli('optimize', model, refined, ...common, '--refine', '10');
    expect(r.code, r.err).toBe(0);
    const note = refineNote(JSON.parse(r.out) as Report)!;
    expect(note).toMatch(/^--refine: \d+ factor tensor\(s\) of \d+ node\(s\) refitted .* \(kept evaluation [1-9]\d* of 10\)$/);
    const m = moved(plain, refined);
    expect(m.length).toBeGreaterThan(0);
    const inits = decodeModel(new Uint8Array(readFileSync(refined))).graph!.initializer;
    for (const k of m) expect(inits.find((t) => t.name === k)!.dataType, k).toBe(DataType.FLOAT16);
    expect(m).not.toContain('w');
  });

  it('says it needs calibration data and leaves the model as without it; a step count that is not a whole number is refused', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-refine-none-'));
    const common = ['--shape', 'x:1x3x48x192', '--min-params', '0', '--rank-ratio', '0.5', '--no-verify', '--json'];
    const r = await runCli('optimize', REAL.cls, path.join(dir, 'r.onnx'), ...common, '--refine', '5');
    expect(r.code, r.err).toBe(0);
    expect(refineNote(JSON.parse(r.out) as Report)).toMatch(/nothing refined: it needs calibration data/);
    const q = await runCli('optimize', REAL.cls, path.join(dir, 'q.onnx'), ...common);
    expect(q.code, q.err).toBe(0);
    expect(initializers(path.join(dir, 'r.onnx'))).toEqual(initializers(path.join(dir, 'q.onnx')));
    const bad = await runCli('optimize', REAL.cls, path.join(dir, 'b.onnx'), ...common, '--refine', '2.5');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--refine expects an integer in \[0, 100000\], got "2.5"/);
  });

  it('a layer behind an operator without a gradient rule (LRN) keeps its fit, with the reason; the one after it is refitted', async () => {
    const rng = createRng(9);
    const randn = (n: number, s: number): number[] => Array.from({ length: n }, () => s * rng.normal());
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [1, 16, 6, 6]);
    const c1 = b.node('Conv', [x, b.init('w1', [32, 16, 1, 1], randn(512, 0.25))], {}, { name: 'c1' });
    const l = b.node('LRN', [b.node('Relu', [c1])], { size: 3 });
    const c2 = b.node('Conv', [l, b.init('w2', [32, 32, 3, 3], randn(9216, 0.06)), b.init('b2', [32], randn(32, 0.1))], { pads: [1, 1, 1, 1] }, { name: 'c2' });
    b.output(b.node('Tanh', [c2]));
    const proto: ModelProto = b.build();
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-refine-lrn-'));
    const model = path.join(dir, 'm.onnx');
    writeFileSync(model, encodeModel(proto));
    const calib = path.join(dir, 'c.npy');
    const w = writeNpy(calib, { dtype: 'f4', shape: [32, 16, 6, 6], data: Float32Array.from(randn(32 * 576, 1)) });
    if (!w.ok) throw w.error;
    const common = ['--min-params', '0', '--rank-ratio', '0.5', '--calib', calib, '--no-verify', '--json', '--no-anchor'];
    const plain = path.join(dir, 'plain.onnx');
    const refined = path.join(dir, 'refined.onnx');
    expect((await runCli('optimize', model, plain, ...common)).code).toBe(0);
    const r = await runCli('optimize', model, refined, ...common, '--refine', '10');
    expect(r.code, r.err).toBe(0);
    const notes = (JSON.parse(r.out) as Report).notes.filter((n) => n.startsWith('--refine'));
    expect(notes.join('\n')).toMatch(/2 of 5 factor node\(s\) kept as fitted \(no exact gradient; .*no gradient through LRN/);
    const [p, q] = [initializers(plain), initializers(refined)];
    const moved = [...q].filter(([k, v]) => p.get(k) !== v).map(([k]) => k);
    expect(moved.length).toBeGreaterThan(0);
    for (const k of moved) expect(k.startsWith('c2'), k).toBe(true);
    expect([...q.keys()].filter((k) => k.startsWith('c1')).length).toBeGreaterThan(0);
  });
});
