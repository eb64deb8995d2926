/**
 * The shipped JSON Schemas (schema/) against real output: reports, `inspect --json` and
 * plans made by the CLI on the PP-OCR direction classifier.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { CLS } from '../verify/models.js';
import { SchemaValidator } from './json-schema.js';

const schemas = new SchemaValidator(path.resolve('schema'));
const SHAPE = ['--shape', 'x:1x3x48x192'];

describe('the JSON Schemas in schema/', () => {
  it('the validator catches what the schema forbids (a check that cannot fail is no check)', () => {
    const bad = { schemaVersion: 2, tool: 'x', seed: -1, policy: 'p', policyKind: 'guess', input: {}, output: {}, layers: [{ name: 1 }], seconds: 0, notes: [], extra: true };
    const errors = schemas.validate('report.schema.json', bad);
    for (const e of ['$.schemaVersion: expected 2', '$.seed: -1 is below 0', '$.policyKind: "guess" is not one of', '$.input: "irVersion" is missing',
      '$.layers[0].name: expected string', '$: "extra" is not in the schema']) {
      expect(errors.some((x) => x.startsWith(e.replace('expected 2', 'expected 1')))).toBe(true);
    }
  });

  it('a default run\'s --report and --json, a budgeted run\'s --report and a plan validate', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-schema-'));
    const plain = await runCli('optimize', CLS, path.join(dir, 'a.onnx'), ...SHAPE, '--no-latency', '--json', '--report', path.join(dir, 'a.json'));
    expect(plain.code, plain.err).toBe(0);
    const fromJson = JSON.parse(plain.out);
    const fromFile = JSON.parse(readFileSync(path.join(dir, 'a.json'), 'utf8'));
    expect(schemas.validate('report.schema.json', fromFile)).toEqual([]);
    expect(schemas.validate('report.schema.json', fromJson)).toEqual([]);
    expect(fromFile).toMatchObject({ schemaVersion: 1, policy: 'auto, energy 0.999', policyKind: 'energy' });
    // Every skipped layer has its code beside its reason; the min-params ones say so.
    const skipped = fromFile.layers.filter((l: { skipped?: boolean }) => l.skipped);
    expect(skipped.length).toBeGreaterThan(0);
    for (const l of skipped) expect(l.skipCode === 'min-params').toBe(/--min-params/.test(l.reason));

    const budgeted = await runCli('optimize', CLS, path.join(dir, 'b.onnx'), ...SHAPE, '--target-params', '0.8', '--min-cosine', '0', '--report', path.join(dir, 'b.json'));
    expect(budgeted.code, budgeted.err).toBe(0);
    const b = JSON.parse(readFileSync(path.join(dir, 'b.json'), 'utf8'));
    expect(schemas.validate('report.schema.json', b)).toEqual([]);
    expect(b).toMatchObject({ policyKind: 'target-params', calibrationKind: 'random', budget: { unit: 'params', unitKind: 'params' } });
    expect(b.sensitivity.length).toBeGreaterThan(0);
    expect(b.layers.some((l: { skipCode?: string }) => l.skipCode === 'budget')).toBe(true);

    const plan = await runCli('plan', CLS, ...SHAPE, '--target-macs', '0.8');
    expect(plan.code, plan.err).toBe(0);
    const p = JSON.parse(plan.out);
    expect(p.schemaVersion).toBe(1);
    expect(schemas.validate('plan.schema.json', p)).toEqual([]);
    // The plan's notes are not lost: they go to stderr, stdout stays the JSON.
    expect(plan.err).toMatch(/^note: the budget considers the \d+ of \d+ layers carrying 95% of the MACs/m);
  }, 180_000);

  it('inspect --json validates, with and without profiling', async () => {
    for (const extra of [[], ['--no-profile']]) {
      const r = await runCli('inspect', CLS, ...SHAPE, '--json', ...extra);
      expect(r.code, r.err).toBe(0);
      const j = JSON.parse(r.out);
      expect(j.schemaVersion).toBe(1);
      expect(schemas.validate('inspect.schema.json', j)).toEqual([]);
    }
  }, 60_000);
});
