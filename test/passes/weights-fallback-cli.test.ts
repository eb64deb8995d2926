/**
 * `optimize --weights int8` end to end when int8 factors miss the verification that the
 * rewrite itself meets: an error budget (--max-error cosine:0.99999) finds the exact rank
 * of a rank-3 layer, int8 factors then lose ~1e-5 of cosine and fp16 ones ~1e-7, so OUT is
 * written with fp16 factors, verified in ORT, and the report and stderr say why.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { DataType } from '../../src/onnx/schema.js';
import { lowRank } from '../helpers/ort.js';
import { nonProgress, runCli } from '../helpers/cli.js';
import { SchemaValidator } from '../report/json-schema.js';

const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-fallback-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('int8 factors that fail --max-error cosine:0.99999 fall back to fp16: OUT verifies, the report and stderr say so', async () => {
  const b = new ModelBuilder({ opset: 13 });
  const w = lowRank(96, 80, 3, 7).map((v, i) => v * (i % 80 === 0 ? 40 : 1));
  b.output(b.node('MatMul', [b.input('x', [8, 96]), b.init('w', [96, 80], w)], {}, { name: 'mm' }));
  const inPath = path.join(dir, 'in.onnx');
  writeFileSync(inPath, encodeModel(b.build()));
  const out = path.join(dir, 'out.onnx');
  const report = path.join(dir, 'out.json');
  const r = await runCli('optimize', inPath, out, '--max-error', 'cosine:0.99999', '--min-params', '0', '--weights', 'int8', '--no-latency', '--report', report);
  expect(r.code, r.err + r.out).toBe(0);
  const rep = JSON.parse(readFileSync(report, 'utf8'));
  expect(new SchemaValidator(path.resolve('schema')).validate('report.schema.json', rep)).toEqual([]);
  expect(rep.verify.pass).toBe(true);
  expect(rep.weights).toMatchObject({ mode: 'fp16', requested: 'int8', factors: 2 });
  expect(rep.weights.fallback).toMatch(/^OUT failed the verification with int8 factors \(worst output cosine 0\.\d+, threshold 0\.99999\); stored as fp16 instead$/);
  expect(rep.notes.some((n: string) => n.startsWith('--weights: OUT failed the verification with int8 factors'))).toBe(true);
  expect(nonProgress(r.err)).toContain(`onnx-lr: note: --weights int8: ${rep.weights.fallback}`);
  const model = decodeModel(readFileSync(out));
  expect(model.graph!.node.map((n) => n.opType).sort()).toEqual(['Cast', 'Cast', 'MatMul', 'MatMul']);
  expect(model.graph!.initializer.filter((t) => t.dataType === DataType.FLOAT16)).toHaveLength(2);
}, 120_000);
