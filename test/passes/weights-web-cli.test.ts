/**
 * `optimize --weights int8 --bench-web` (issue 20: "the report shows file size before/after
 * and latency in ORT-node and ORT-web"): the int8 QDQ output of a shipped model loads in
 * onnxruntime-web's wasm backend as well as in ORT-node, and the report carries the file
 * sizes and both latencies. No speed is asserted (it depends on the machine), only that
 * each was measured.
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { REAL, REAL_SHAPES } from '../helpers/models.js';

const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-weights-web-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Lat { originalMs: { p50: number }; optimizedMs: { p50: number }; runs: number }

it('int8 factors of ch_ppocr_mobile_v2.0_cls: the report has both file sizes and the ORT-node and ORT-web latencies', async () => {
  const out = path.join(dir, 'cls-int8.onnx');
  const report = path.join(dir, 'cls-int8.json');
  const r = await runCli('optimize', REAL.cls, out, ...REAL_SHAPES.cls.flatMap((s) => ['--shape', s]), '--energy', '0.9', '--min-params', '0', '--save', 'params',
    '--min-cosine', '0.98', '--weights', 'int8', '--bench-web', '--report', report);
  expect(r.code, r.err + r.out).toBe(0);
  const rep = JSON.parse(readFileSync(report, 'utf8')) as { input: { bytes: number }; output: { bytes: number }; weights: { mode: string; factors: number }; latency: Lat; latencyWeb: Lat; verify: { pass: boolean } };
  expect(rep.verify.pass).toBe(true);
  expect(rep.weights.mode).toBe('int8');
  expect(rep.weights.factors).toBeGreaterThan(0);
  expect(rep.input.bytes).toBe(statSync(REAL.cls).size);
  expect(rep.output.bytes).toBe(statSync(out).size);
  expect(rep.output.bytes).toBeLessThan(rep.input.bytes);
  for (const lat of [rep.latency, rep.latencyWeb]) {
    expect(lat.originalMs.p50).toBeGreaterThan(0);
    expect(lat.optimizedMs.p50).toBeGreaterThan(0);
    expect(lat.runs).toBeGreaterThan(0);
  }
  expect(r.out).toMatch(/file size +[\d.]+ KiB +[\d.]+ KiB/);
  expect(r.out).toMatch(/latency p50, ORT-node /);
  expect(r.out).toMatch(/latency p50, ORT-web wasm /);
}, 180_000);
