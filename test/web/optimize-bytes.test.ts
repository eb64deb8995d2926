/**
 * The page's entry (src/browser/optimize-bytes.ts) run in Node, without a browser: bytes in,
 * the library optimize()'s model out (with `save: 'params'`, the same settings and seed),
 * and the user's mistakes as one clear line. page.test.ts runs the same entry in Chromium.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { optimize } from '../../src/api/optimize.js';
import { optimizeBytes } from '../../src/browser/optimize-bytes.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { DATA_LOCATION_EXTERNAL } from '../../src/onnx/schema.js';
import { withoutRunMetadata } from '../helpers/metadata.js';
import { REAL } from '../helpers/models.js';
import { writeCalibFolder } from './calib-lines.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'onnx-lr-web-bytes-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('optimizeBytes (the page entry) in Node', () => {
  it('writes the model optimize() writes with save params, and reports what the CLI reports', async () => {
    const settings = { energy: 0.95, seed: 3, shapes: { x: [1, 3, 48, 192] } };
    const out = path.join(tmp, 'api.onnx');
    const api = await optimize(REAL.cls, { ...settings, save: 'params', output: out, latency: false });
    const page = await optimizeBytes(new Uint8Array(readFileSync(REAL.cls)), 'cls.onnx', { ...settings, latency: false });
    const pageOut = path.join(tmp, 'page.onnx');
    writeFileSync(pageOut, page.bytes);
    expect(withoutRunMetadata(pageOut).equals(withoutRunMetadata(out))).toBe(true);
    expect(page.report.layers.map((l) => [l.name, l.ranks, l.skipped ?? false])).toEqual(api.report.layers.map((l) => [l.name, l.ranks, l.skipped ?? false]));
    expect(page.report.output.params).toBe(api.report.output.params);
    expect(page.report.output.file).toBe('cls.lr.onnx');
    expect(page.report.output.bytes).toBe(page.bytes.length);
    expect(page.pass).toBe(api.pass);
    // Agreement measured in ORT Web on the seeded inputs the CLI uses.
    const [w, n] = [page.report.verify!.outputs[0]!, api.report.verify!.outputs[0]!];
    expect(Math.abs(w.cosine - n.cosine)).toBeLessThanOrEqual(1e-5);
    expect(page.report.latencyWeb).toBeUndefined();
  });

  it('meets an error budget on calibration images as optimize() does, restarting from its bytes (there is no file behind them)', async () => {
    // JPEGs only: Node has no browser to decode PNGs. Data-aware and anchored (the defaults):
    // the kept allocation is refitted anchored from the original, reloaded by Job.reload.
    const calib = writeCalibFolder(tmp, 'jpegs', [[192, 48], [160, 32], [320, 64], [200, 56]], 1);
    const settings = { maxError: 'cosine:0.995', seed: 7, shapes: { x: [1, 3, 48, 192] } };
    const out = path.join(tmp, 'api-budget.onnx');
    const api = await optimize(REAL.cls, { ...settings, calib, mean: [0.5], std: [0.5], save: 'params', output: out, latency: false });
    const images = readdirSync(calib).map((name) => ({ name, bytes: new Uint8Array(readFileSync(path.join(calib, name))) }));
    const page = await optimizeBytes(new Uint8Array(readFileSync(REAL.cls)), 'cls.onnx', { ...settings, latency: false }, {
      calibration: { images, label: 'jpegs', mean: [0.5], std: [0.5] },
    });
    expect(page.report.calibration).toBe(api.report.calibration!.replace(calib, 'jpegs'));
    expect(page.report.notes.some((n) => /^data-aware decomposition: input statistics for \d+ layer/.test(n))).toBe(true);
    expect(page.report.budget!.attempts).toBe(api.report.budget!.attempts);
    expect(page.report.budget!.met).toBe(api.report.budget!.met);
    expect(page.report.layers.filter((l) => !l.skipped).length).toBeGreaterThan(0);
    const pageOut = path.join(tmp, 'page-budget.onnx');
    writeFileSync(pageOut, page.bytes);
    // ORT-node runs the statistics on both sides here: the same model, byte for byte.
    expect(withoutRunMetadata(pageOut).equals(withoutRunMetadata(out))).toBe(true);
  }, 600_000);

  it('says in one line what is wrong with bytes that are not a model, and with settings the CLI refuses', async () => {
    await expect(optimizeBytes(new Uint8Array([1, 2, 3]), 'junk.onnx', {})).rejects.toThrow(/^junk\.onnx: /);
    await expect(optimizeBytes(new Uint8Array(0), 'empty.onnx', {})).rejects.toThrow('empty.onnx is empty, not an ONNX model');
    const cls = new Uint8Array(readFileSync(REAL.cls));
    await expect(optimizeBytes(cls, 'cls.onnx', { rankRatio: 0 })).rejects.toThrow('--rank-ratio must be above 0');
    await expect(optimizeBytes(cls, 'cls.onnx', { energy: 0.9, rank: 4 })).rejects.toThrow('choose one of --energy, --rank-ratio, --vbmf, --rank (got --energy, --rank)');
  });

  it('refuses a model whose weights are in external data files, naming the way out', async () => {
    const m = decodeModel(new Uint8Array(readFileSync(REAL.wake)));
    const t = m.graph!.initializer.find((x) => x.dims.length === 2)!;
    t.dataLocation = DATA_LOCATION_EXTERNAL;
    t.externalData = [{ key: 'location', value: 'w.data' }, { key: 'offset', value: '0' }, { key: 'length', value: String(t.rawData?.length ?? 0) }];
    delete t.rawData;
    await expect(optimizeBytes(encodeModel(m), 'ext.onnx', {})).rejects.toThrow(/^ext\.onnx keeps 1 tensor\(s\) in external data files: the page takes single-file models \(use the command line\)$/);
  });
});
