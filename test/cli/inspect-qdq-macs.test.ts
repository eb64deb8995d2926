/**
 * inspect's MACs for layers whose weight is int8 behind DequantizeLinear (weight-only QDQ)
 * and for layers fed through a Cast (fp16 storage): the shape run covers their nodes too
 * (graph/layer-shapes.ts shapesFor's `extra`, rewrite/quantize-inspect.ts qdqLayerNodes),
 * so they show the same MACs as the same layers stored fp32, not `?`. On the real rec
 * model's `optimize --weights int8|fp16` outputs, and on cls with every weight int8 (no
 * decomposable layer left: before, inspect did not even run the model for shapes). The
 * int8 output optimized again skips each QDQ layer with its reason and verifies.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { InspectResult } from '../../src/api/inspect.js';
import { Model } from '../../src/graph/graph.js';
import { encodeModel } from '../../src/onnx/codec.js';
import { loadModel } from '../../src/onnx/file.js';
import { quantizeAllWeights } from '../../src/rewrite/quantize-weights.js';
import { runCli } from '../helpers/cli.js';
import { REAL, REAL_SHAPES } from '../helpers/models.js';

const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-inspect-qdq-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function inspectJson(file: string, shapes: string[]): Promise<InspectResult> {
  const r = await runCli('inspect', file, ...shapes.flatMap((s) => ['--shape', s]), '--no-profile', '--json');
  expect(r.code, r.err).toBe(0);
  return JSON.parse(r.out) as InspectResult;
}

describe('inspect: MACs of int8 QDQ and Cast-fed layers', () => {
  it('rec with --weights int8 and fp16: each factor layer has the MACs it has stored fp32', async () => {
    const shapes = REAL_SHAPES.rec;
    const run = async (tag: string, extra: string[]): Promise<InspectResult> => {
      const out = path.join(dir, `rec-${tag}.onnx`);
      const o = await runCli('optimize', REAL.rec, out, ...shapes.flatMap((s) => ['--shape', s]), '--energy', '0.95', '--method', 'svd', '--min-params', '0', '--save', 'params',
        '--min-cosine', '0', '--no-latency', '--seed', '1', ...extra);
      expect(o.code, o.err + o.out).toBe(0);
      return inspectJson(out, shapes);
    };
    const fp32 = await run('fp32', []);
    const int8 = await run('int8', ['--weights', 'int8']);
    const fp16 = await run('fp16', ['--weights', 'fp16']);
    const macsOf = new Map(fp32.layers.map((l) => [l.name, l.macs]));
    // Conv and MatMul factors both went int8: every one has its fp32 twin's MACs.
    expect(new Set(int8.quantizedLayers.map((l) => l.op))).toEqual(new Set(['Conv', 'MatMul']));
    for (const l of int8.quantizedLayers) {
      expect(l.macs, l.name).not.toBeNull();
      expect(l.macs, l.name).toBe(macsOf.get(l.name));
    }
    const cast = fp16.layers.filter((l) => l.stored === 'fp16 via Cast');
    expect(cast.length).toBe(int8.quantizedLayers.length);
    for (const l of cast) expect(l.macs, l.name).toBe(macsOf.get(l.name));
    // The text shows the numbers, not '?'.
    const text = await runCli('inspect', path.join(dir, 'rec-int8.onnx'), ...shapes.flatMap((s) => ['--shape', s]), '--no-profile');
    const table = text.out.slice(text.out.indexOf('quantized layers'), text.out.indexOf('where the'));
    expect(table.split('\n').filter((line) => / int8 QDQ$/.test(line)).length).toBe(int8.quantizedLayers.length);
    expect(table).not.toMatch(/ \? +int8 QDQ/);
    // Optimizing the int8 output again: its QDQ layers are skipped one by one with the reason, and OUT verifies.
    const again = path.join(dir, 'rec-int8-again.json');
    const o = await runCli('optimize', path.join(dir, 'rec-int8.onnx'), path.join(dir, 'rec-int8-again.onnx'), ...shapes.flatMap((s) => ['--shape', s]),
      '--energy', '0.95', '--method', 'svd', '--min-params', '0', '--save', 'params', '--min-cosine', '0', '--no-latency', '--report', again);
    expect(o.code, o.err + o.out).toBe(0);
    const rep = JSON.parse(readFileSync(again, 'utf8')) as { layers: { name: string; skipped?: boolean; reason?: string }[]; verify: { pass: boolean } };
    for (const q of int8.quantizedLayers) {
      const l = rep.layers.find((x) => x.name === q.name);
      expect(l, q.name).toMatchObject({ skipped: true, reason: `quantized weight (DequantizeLinear → ${q.op}): not decomposed` });
    }
    expect(rep.verify.pass).toBe(true);
  }, 180_000);

  it('cls with every weight int8 (no decomposable layer left): the quantized layers carry all the MACs of the original', async () => {
    const shapes = REAL_SHAPES.cls;
    const loaded = loadModel(REAL.cls);
    const model = new Model(loaded.model);
    const q = quantizeAllWeights(model, { external: loaded.external });
    loaded.external.close();
    expect(q.tensors).toBeGreaterThan(40);
    const file = path.join(dir, 'cls-all-int8.onnx');
    writeFileSync(file, encodeModel(model.proto));
    const before = await inspectJson(REAL.cls, shapes);
    const after = await inspectJson(file, shapes);
    expect(after.shapeSource).toBe('ort-run');
    expect(after.quantizedLayers.length).toBe(q.tensors);
    expect(after.quantizedLayers.every((l) => typeof l.macs === 'number')).toBe(true);
    const quantized = new Set(after.quantizedLayers.map((l) => l.name));
    const want = before.layers.filter((l) => quantized.has(l.name)).reduce((a, l) => a + l.macs!, 0);
    expect(after.quantizedLayers.reduce((a, l) => a + l.macs!, 0)).toBe(want);
    expect(want).toBeGreaterThan(0);
    expect(readFileSync(file).length).toBeLessThan(readFileSync(REAL.cls).length);
  }, 120_000);
});
