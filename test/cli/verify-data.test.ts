/** --verify-data: verification on held-out inputs the user gives, instead of seeded random ones. */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { writeNpy } from '../../src/io/npy.js';
import { renderReport, type Report } from '../../src/report/report.js';
import { createRng } from '../../src/util/rng.js';
import { nonProgress, runCli } from '../helpers/cli.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { REAL } from '../helpers/models.js';

const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'onnx-lr-vdata-'));

/** n samples of cls's input [3, 48, 192], smooth (not white noise) so they differ from the random feeds. */
function heldOut(dir: string, n: number, poison = false): { file: string; data: Float32Array } {
  const rng = createRng(77);
  const per = 3 * 48 * 192;
  const data = new Float32Array(n * per);
  for (let k = 0; k < n; k++) {
    const fx = 0.05 + 0.2 * rng.next();
    const fy = 0.05 + 0.2 * rng.next();
    for (let i = 0; i < per; i++) {
      const x = i % 192;
      const y = Math.floor(i / 192) % 48;
      data[k * per + i] = Math.sin(fx * x) * Math.cos(fy * y) + 0.1 * rng.normal();
    }
  }
  if (poison) data[per + 5] = NaN;
  const file = path.join(dir, 'held.npy');
  const r = writeNpy(file, { dtype: 'f4', shape: [n, 3, 48, 192], data });
  if (!r.ok) throw r.error;
  return { file, data };
}

/** Cosine of the two models' outputs over the given samples, stacked as verification stacks them. */
async function cosineOn(a: string, b: string, data: Float32Array, n: number, from = 0): Promise<number> {
  const per = 3 * 48 * 192;
  const sa = await ort.InferenceSession.create(a);
  const sb = await ort.InferenceSession.create(b);
  let dot = 0, na = 0, nb = 0;
  for (let k = from; k < from + n; k++) {
    const x = new ort.Tensor('float32', data.slice(k * per, (k + 1) * per), [1, 3, 48, 192]);
    const ya = (await sa.run({ x }))[sa.outputNames[0]!]!.data as Float32Array;
    const yb = (await sb.run({ x }))[sb.outputNames[0]!]!.data as Float32Array;
    for (let i = 0; i < ya.length; i++) { dot += ya[i]! * yb[i]!; na += ya[i]! ** 2; nb += yb[i]! ** 2; }
  }
  await sa.release();
  await sb.release();
  return dot / Math.sqrt(na * nb);
}

describe('--verify-data', () => {
  it('verifies on the given samples: the reported cosine is the one measured on them in ORT', async () => {
    const dir = tmp();
    const { file, data } = heldOut(dir, 4);
    const out = path.join(dir, 'o.onnx');
    const r = await runCli('optimize', REAL.cls, out, '--shape', 'x:1x3x48x192', '--rank-ratio', '0.3', '--min-params', '0', '--verify-data', file, '--no-latency', '--json');
    // No warning; a progress line may print if the run passes 10 s.
    expect(nonProgress(r.err)).toEqual([]);
    const report = JSON.parse(r.out) as Report;
    expect(report.inputs).toContain(`held out: 4 samples from ${file}`);
    const cos = await cosineOn(REAL.cls, out, data, 4);
    expect(report.verify!.outputs[0]!.cosine).toBeCloseTo(cos, 5);
    // cls's batch dim is free: the four samples go in as one batch (one run), and the
    // sample it agrees worst on is named from that batch's output, split along its batch axis.
    expect(report.verify!.runs).toBe(1);
    const each = await Promise.all([0, 1, 2, 3].map((k) => cosineOn(REAL.cls, out, data, 1, k)));
    const w = report.verify!.outputs[0]!.worstFeed!;
    expect(w).toMatchObject({ samples: true, of: 4, index: each.indexOf(Math.min(...each)) });
    expect(w.cosine).toBeCloseTo(Math.min(...each), 5);
    expect(renderReport(report)).toContain(`worst of the 4 samples is #${w.index + 1}`);
    // And not what seeded random inputs give.
    const rnd = JSON.parse((await runCli('optimize', REAL.cls, path.join(dir, 'r.onnx'), '--shape', 'x:1x3x48x192', '--rank-ratio', '0.3', '--min-params', '0', '--no-latency', '--json')).out) as Report;
    expect(rnd.inputs).toBe('seeded random inputs');
    expect(Math.abs(rnd.verify!.outputs[0]!.cosine - cos)).toBeGreaterThan(1e-6);

    const two = JSON.parse((await runCli('optimize', REAL.cls, path.join(dir, 't.onnx'), '--shape', 'x:1x3x48x192', '--rank-ratio', '0.3', '--min-params', '0', '--verify-data', file, '--verify-samples', '2', '--no-latency', '--json')).out) as Report;
    expect(two.inputs).toContain(`held out: 2 samples from ${file}`);
    expect(two.verify!.outputs[0]!.cosine).toBeCloseTo(await cosineOn(REAL.cls, path.join(dir, 't.onnx'), data, 2), 5);
  });

  it('one feed per sample (batch dim fixed at 1): the input it agrees worst on is named, with its own cosine', async () => {
    const dir = tmp();
    const { file, data } = heldOut(dir, 4);
    // cls as many exported models are: the batch dim fixed at 1, so each sample is a feed.
    const fixed = path.join(dir, 'cls-b1.onnx');
    const m = decodeModel(new Uint8Array(readFileSync(REAL.cls)));
    m.graph!.input[0]!.type!.tensorType!.shape!.dim[0] = { dimValue: 1 };
    writeFileSync(fixed, encodeModel(m));
    const out = path.join(dir, 'o.onnx');
    const r = await runCli('optimize', fixed, out, '--shape', 'x:1x3x48x192', '--rank-ratio', '0.3', '--min-params', '0', '--verify-data', file, '--no-latency', '--json');
    expect(nonProgress(r.err)).toEqual([]);
    const report = JSON.parse(r.out) as Report;
    expect(report.verify!.runs).toBe(4);
    const cos = await cosineOn(fixed, out, data, 4);
    expect(report.verify!.outputs[0]!.cosine).toBeCloseTo(cos, 5);
    const each = await Promise.all([0, 1, 2, 3].map((k) => cosineOn(fixed, out, data, 1, k)));
    // The samples differ enough for "the worst" to be one of them.
    const sorted = [...each].sort((a, b) => a - b);
    expect(sorted[1]! - sorted[0]!).toBeGreaterThan(1e-6);
    const w = report.verify!.outputs[0]!.worstFeed!;
    expect(w).toBeDefined();
    expect(w.index).toBe(each.indexOf(sorted[0]!));
    expect(w.cosine).toBeCloseTo(sorted[0]!, 5);
    expect(w.cosine).toBeLessThan(cos);
  });

  it('bad data is refused before any work, naming the file; nothing is written', async () => {
    const dir = tmp();
    const { file } = heldOut(dir, 3, true);
    const out = path.join(dir, 'o.onnx');
    const r = await runCli('optimize', REAL.cls, out, '--shape', 'x:1x3x48x192', '--verify-data', file);
    expect(r.code).toBe(2);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.err).toContain(file);
    expect(r.err).toMatch(/NaN|non-finite/i);
    expect(existsSync(out)).toBe(false);
    const wrongShape = path.join(dir, 'w.npy');
    writeNpy(wrongShape, { dtype: 'f4', shape: [2, 4, 48, 192], data: new Float32Array(2 * 4 * 48 * 192) });
    const w = await runCli('optimize', REAL.cls, out, '--shape', 'x:1x3x48x192', '--verify-data', wrongShape);
    expect(w.code).toBe(2);
    expect(w.err).toContain(wrongShape);
    for (const args of [['--verify-data', file, '--no-verify'], ['--verify-samples', '2']]) {
      const u = await runCli('optimize', REAL.cls, out, '--shape', 'x:1x3x48x192', ...args);
      expect(u.code).toBe(2);
      expect(u.err).toMatch(/--verify-data/);
    }
    expect(existsSync(out)).toBe(false);
  });
});
