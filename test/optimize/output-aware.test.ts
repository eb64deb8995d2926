/**
 * --output-aware (src/optimize/output-sensitivity.ts): each output channel's sensitivity,
 * measured in ORT by finite differences, against its value computed by hand on linear
 * tails; and the weighted fit end to end, at the ranks of a plan.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { main } from '../../src/cli/main.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { learnShapes } from '../../src/graph/shapes.js';
import { encodeModel } from '../../src/onnx/codec.js';
import { runAll } from '../../src/optimize/output-error.js';
import { feedScale, isSvdPairLayer, measureOutputSensitivity, outputChannelAxis } from '../../src/optimize/output-sensitivity.js';
import type { Report } from '../../src/report/report.js';
import { createRng } from '../../src/util/rng.js';
import type { Feeds } from '../../src/verify/tensor.js';
import { calibFile } from '../helpers/calib.js';

const rng = createRng(5);
const randw = (n: number): number[] => Array.from({ length: n }, () => rng.normal());

/** x [1, 4, 3, 3] → 1x1 conv c1 (6 outputs) → 1x1 conv c2 (V [2, 6]) → Identity → y. */
function twoConvs(v: number[]) {
  const b = new ModelBuilder();
  const x = b.input('x', ['N', 4, 3, 3]);
  const w1 = randw(24);
  const z = b.node('Conv', [x, b.init('w1', [6, 4, 1, 1], w1)], {}, { name: 'c1' });
  b.output(b.node('Identity', [b.node('Conv', [z, b.init('v', [2, 6, 1, 1], v)], {}, { name: 'c2' })]));
  return { model: new Model(b.build()), w1 };
}

const feed = (seed: number): Feeds => {
  const r = createRng(seed);
  return { x: { type: 'float32', dims: [1, 4, 3, 3], data: Float32Array.from({ length: 36 }, () => r.normal()) } };
};

/** y = V·W1·x per position (no biases): ‖y‖². */
function outputEnergy(w1: number[], v: number[], x: Float32Array): number {
  let e = 0;
  for (let p = 0; p < 9; p++) {
    const z = Array.from({ length: 6 }, (_, c) => w1.slice(c * 4, c * 4 + 4).reduce((a, w, k) => a + w * x[k * 9 + p]!, 0));
    for (let o = 0; o < 2; o++) e += z.reduce((a, zc, c) => a + v[o * 6 + c]! * zc, 0) ** 2;
  }
  return e;
}

describe('output sensitivities measured in ORT', () => {
  it('a linear pointwise tail: h_c = positions·‖V[:, c]‖² / ‖y‖², averaged over the feeds; a column of zeros gives 0', async () => {
    const v = randw(12);
    v[3] = 0; v[9] = 0; // channel 3 is never read
    const { model, w1 } = twoConvs(v);
    const layers = findLayers(model).filter((l) => l.name === 'c1');
    const feeds = [feed(1), feed(2)];
    const energy = feeds.map((f) => outputEnergy(w1, v, f.x!.data as Float32Array));
    const want = (c: number): number => energy.reduce((a, e) => a + (9 * (v[c]! ** 2 + v[6 + c]! ** 2)) / e, 0) / feeds.length;
    // Finite differences: exact on a linear tail.
    const probed = await measureOutputSensitivity(model, undefined, layers, feeds, { method: 'probes' });
    const h = probed.sensitivity.get('c1')!;
    expect(h).toHaveLength(6);
    for (let c = 0; c < 6; c++) {
      if (c === 3) expect(h[c]).toBe(0);
      else expect(Math.abs(h[c]! - want(c)) / want(c)).toBeLessThan(1e-3);
    }
    expect(probed.notes).toEqual(['output weights: sensitivities of 1 layer(s) measured by finite differences (12 probe runs on 2 calibration feed(s))']);
    // Gradients: an unbiased estimate from random cotangents (9 positions per channel, 29
    // draws per feed: relative s.d. about 6%), and exactly 0 for the channel never read.
    const grads = await measureOutputSensitivity(model, undefined, layers, feeds);
    const hg = grads.sensitivity.get('c1')!;
    for (let c = 0; c < 6; c++) {
      if (c === 3) expect(hg[c]).toBe(0);
      else expect(Math.abs(hg[c]! - want(c)) / want(c)).toBeLessThan(0.25);
    }
    expect(grads.notes).toEqual(['output weights: sensitivities of 1 layer(s) from gradients (58 backward run(s) on 2 calibration feed(s))']);
  });

  it('through a Relu: a channel that is never positive moves nothing', async () => {
    const b = new ModelBuilder();
    const x = b.input('x', [1, 4, 3, 3]);
    // Channel 0's bias keeps it below zero on any N(0,1) input of this size.
    const bias = [-1000, 0, 0, 0, 0, 0];
    const z = b.node('Conv', [x, b.init('w1', [6, 4, 1, 1], randw(24)), b.init('b1', [6], bias)], {}, { name: 'c1' });
    b.output(b.node('Conv', [b.node('Relu', [z]), b.init('v', [2, 6, 1, 1], randw(12))], {}, { name: 'c2' }));
    const model = new Model(b.build());
    const { sensitivity, notes } = await measureOutputSensitivity(model, undefined, findLayers(model), [feed(3)], { method: 'probes' });
    const h = sensitivity.get('c1')!;
    expect(h[0]).toBe(0);
    expect(Math.min(...h.slice(1))).toBeGreaterThan(0);
    // c2's output is the graph output: each channel moves it alike, so it is not measured.
    expect(sensitivity.has('c2')).toBe(false);
    expect(notes).toContain('output weights: 1 layer(s) whose output is a graph output weighted evenly');
    // From gradients: the Relu's mask gives channel 0 exactly 0; a graph output's gradient is
    // the cotangent itself, ±1/‖y‖ at each of its 9 positions, so each channel's h is 9/‖y‖².
    const fromGrads = await measureOutputSensitivity(model, undefined, findLayers(model), [feed(3)]);
    expect(fromGrads.sensitivity.get('c1')![0]).toBe(0);
    expect(Math.min(...fromGrads.sensitivity.get('c1')!.slice(1))).toBeGreaterThan(0);
    const y = await runAll({ bytes: encodeModel(model.proto) }, [feed(3)]);
    if (!y.ok) throw y.error;
    const yy = y.value[0]![model.proto.graph!.output[0]!.name!]!.data as Float32Array;
    const energy = yy.reduce((a, t) => a + t * t, 0);
    for (const hc of fromGrads.sensitivity.get('c2')!) expect(Math.abs(hc - 9 / energy) / (9 / energy)).toBeLessThan(1e-4);
  });

  it('within the work bound: fewer feeds first, then the layers with the costliest probes left out, with a note', async () => {
    const { model } = twoConvs(randw(12));
    const learned = await learnShapes(model.proto);
    if (!learned.ok) throw learned.error;
    const layers = findLayers(model, learned.value.shapes);
    const macs = layers.map((l) => l.macs!);
    expect(macs).toEqual([6 * 4 * 9, 2 * 6 * 9]);
    // c1's 6 probes each run c1's downstream part (c1 and c2 counted), c2's 2 probes c2's.
    const oneFeed = await measureOutputSensitivity(model, undefined, layers, [feed(1), feed(2)], { maxMacs: 6 * (macs[0]! + macs[1]!) + 2 * macs[1]!, method: 'probes' });
    expect(oneFeed.notes.at(-1)).toMatch(/on 1 calibration feed\(s\)/);
    expect([...oneFeed.sensitivity.keys()].sort()).toEqual(['c1', 'c2']);
    const cheapest = await measureOutputSensitivity(model, undefined, layers, [feed(1)], { maxMacs: 2 * macs[1]!, method: 'probes' });
    expect([...cheapest.sensitivity.keys()]).toEqual(['c2']);
    expect(cheapest.notes).toContain('output weights: 1 layer(s) with the costliest probes not probed (beyond the work bound of 2.2e+2 multiply-adds)');
    // A feed holding a batch of 2 samples costs twice the learned shapes' MACs: the bound that took both layers on one feed takes c2 alone.
    const two = feed(1).x!;
    const batched = { x: { type: 'float32' as const, dims: [2, 4, 3, 3], data: Float32Array.from([...two.data as Float32Array, ...two.data as Float32Array]) } };
    expect(feedScale(batched, learned.value.shapes)).toBe(2);
    const bound = 6 * (macs[0]! + macs[1]!) + 2 * macs[1]!;
    const onBatch = await measureOutputSensitivity(model, learned.value.shapes, layers, [batched], { maxMacs: bound, method: 'probes' });
    expect([...onBatch.sensitivity.keys()]).toEqual(['c2']);
    expect(onBatch.notes).toContain('output weights: 1 layer(s) with the costliest probes not probed (beyond the work bound of 2.2e+3 multiply-adds)');
  });

  it('which layers and axes: 1x1 ungrouped convs, Gemms and 2-D MatMuls, on the axis their outputs make', () => {
    const b = new ModelBuilder();
    const x = b.input('x', [1, 4, 3, 3]);
    const k = b.node('Conv', [x, b.init('k', [4, 4, 3, 3], randw(144))], { pads: [1, 1, 1, 1] }, { name: 'k3' });
    const p = b.node('Conv', [k, b.init('p', [4, 4, 1, 1], randw(16))], {}, { name: 'pw' });
    const f = b.node('Reshape', [p, b.initInt64('shape', [2], [1, 36])]);
    const m = b.node('MatMul', [f, b.init('m', [36, 5], randw(180))], {}, { name: 'mm' });
    b.output(b.node('Gemm', [m, b.init('g', [5, 3], randw(15))], {}, { name: 'gm' }));
    const ls = findLayers(new Model(b.build()));
    const by = (n: string) => ls.find((l) => l.name === n)!;
    expect(['k3', 'pw', 'mm', 'gm'].map((n) => isSvdPairLayer(by(n)))).toEqual([false, true, true, true]);
    expect(['pw', 'mm', 'gm'].map((n) => outputChannelAxis(by(n)))).toEqual([1, -1, 1]);
  });
});

/** x [1, 8, 6, 6] → 1x1 conv c1 (8 outputs) → 1x1 conv c2, which reads channels 0–3 strongly and 4–7 barely; written to a new temp dir. */
function unevenReader(tag: string): { dir: string; file: string } {
  const dir = mkdtempSync(path.join(tmpdir(), tag));
  const b = new ModelBuilder();
  const x = b.input('x', [1, 8, 6, 6]);
  const z = b.node('Conv', [x, b.init('w1', [8, 8, 1, 1], randw(64))], {}, { name: 'c1' });
  const v = randw(32).map((w, i) => w * (i % 8 < 4 ? 10 : 0.05));
  b.output(b.node('Conv', [z, b.init('v', [4, 8, 1, 1], v)], {}, { name: 'c2' }));
  const file = path.join(dir, 'm.onnx');
  writeFileSync(file, encodeModel(b.build()));
  return { dir, file };
}

describe('output weights in optimize, at the ranks of a plan', () => {
  it('a layer whose outputs the next one reads unevenly: by default (with --calib) lower held-out output error than the unweighted fit of --no-output-aware, with its note', async () => {
    const { dir, file } = unevenReader('onnx-lr-oaware-');
    const plan = path.join(dir, 'plan.json');
    writeFileSync(plan, JSON.stringify({ layers: [{ name: 'c1', pass: 'conv1x1-svd', ranks: [3] }] }));
    const calib = calibFile(mkdtempSync(path.join(dir, 'c-')), [4, 8, 6, 6], 11);
    const held = calibFile(mkdtempSync(path.join(dir, 'h-')), [4, 8, 6, 6], 12);
    const run = async (...extra: string[]): Promise<Report> => {
      let out = '';
      let err = '';
      const code = await main(['optimize', file, path.join(dir, 'o.onnx'), '--plan', plan, '--calib', calib, '--verify-data', held, '--no-latency', '--json', '--no-anchor', ...extra], { out: (t) => { out += t; }, err: (t) => { err += t; } });
      if (code === 2) throw new Error(err);
      return JSON.parse(out) as Report;
    };
    const rel = (r: Report): number => r.verify!.outputs[0]!.relL2;
    const plain = await run('--no-output-aware');
    const aware = await run();
    expect(aware.layers.find((l) => l.name === 'c1')!.ranks).toEqual([3]);
    expect(rel(aware)).toBeLessThan(0.5 * rel(plain));
    expect(aware.notes).toContain('output weights: sensitivities of 1 layer(s) from gradients (16 backward run(s) on 2 calibration feed(s))');
    expect(plain.notes.some((n) => n.includes('output weights'))).toBe(false);
    // --output-aware measures the same gradients here (every layer is reached): the same fit.
    expect(rel(await run('--output-aware'))).toBe(rel(aware));
    await expect(run('--output-aware', '--no-output-aware')).rejects.toThrow('--output-aware and --no-output-aware contradict each other');
    // Without calibration data there is nothing to weight with, and the run says so.
    let out = '';
    await main(['optimize', file, path.join(dir, 'n.onnx'), '--plan', plan, '--no-latency', '--no-verify', '--json', '--output-aware'], { out: (t) => { out += t; }, err: () => {} });
    expect((JSON.parse(out) as Report).notes).toContain('--output-aware: no calibration statistics (it needs --calib, without --no-data-aware), so no fit is weighted');
  });
});

describe('output weights in a budget', () => {
  it('the sensitivity trials fit as the final fit does: the kept rung\'s measured error is the final model\'s', async () => {
    const { dir, file } = unevenReader('onnx-lr-oabudget-');
    // Two calibration feeds: the trials run on both, as the final measurement does.
    const calib = calibFile(mkdtempSync(path.join(dir, 'c-')), [2, 8, 6, 6], 11);
    let out = '';
    let err = '';
    const code = await main(['optimize', file, path.join(dir, 'o.onnx'), '--calib', calib, '--max-error', '0.3', '--exclude', 'c2', '--min-params', '0',
      '--measure-all-rungs', '--save', 'params', '--no-anchor', '--no-latency', '--no-verify', '--json'], { out: (t) => { out += t; }, err: (t) => { err += t; } });
    if (code === 2) throw new Error(err);
    const r = JSON.parse(out) as Report;
    const kept = r.layers.find((l) => l.name === 'c1')!;
    expect(kept.ranks?.length).toBe(1);
    const rung = r.sensitivity!.find((s) => s.name === 'c1')!.candidates.find((c) => c.ranks.join() === kept.ranks!.join())!;
    expect(r.notes.some((n) => n.startsWith('output weights: sensitivities of'))).toBe(true);
    // Unweighted trials (before) measured this rung at several times the weighted fit's error.
    expect(Math.abs(Math.sqrt(rung.outErr2) / r.budget!.measuredError - 1)).toBeLessThan(1e-4);
  });
});
