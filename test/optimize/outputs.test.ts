/** --outputs: only the named outputs count for budgets, sensitivity and the verdict. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { encodeModel } from '../../src/onnx/codec.js';
import type { Report } from '../../src/report/report.js';
import { runCli } from '../helpers/cli.js';
import { REAL } from '../helpers/models.js';
import { decayingWeight } from '../helpers/kernels.js';

const decaying = (n: number, seed: number): number[] => decayingWeight(n, seed, 1.5);

/** x → MatMul(A) → kept; x → MatMul(B) → side: two independent outputs. */
function twoOutputs(dir: string): string {
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [16, 64]);
  b.output(b.node('Identity', [b.node('MatMul', [x, b.init('A', [64, 64], decaying(64, 1))], {}, { name: 'mmA' })], {}, { name: 'kept' }));
  b.output(b.node('Identity', [b.node('MatMul', [x, b.init('B', [64, 64], decaying(64, 2))], {}, { name: 'mmB' })], {}, { name: 'side' }));
  const f = path.join(dir, 'two.onnx');
  writeFileSync(f, encodeModel(b.build()));
  return f;
}

const json = async (...argv: string[]): Promise<{ code: number; report: Report; err: string }> => {
  const r = await runCli(...argv, '--json');
  return { code: r.code, report: r.code === 2 ? (undefined as unknown as Report) : JSON.parse(r.out) as Report, err: r.err };
};

describe('--outputs', () => {
  it('an error budget spends nothing on an output that does not count: its layer goes to the cheapest rank, the verdict ignores it', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-outs-'));
    const model = twoOutputs(dir);
    const common = ['optimize', model, path.join(dir, 'o.onnx'), '--max-error', '0.05', '--min-params', '0', '--no-latency', '--min-cosine', '0.999'];
    const all = await json(...common);
    const only = await json(...common, '--outputs', 'kept_out0', '--report', path.join(dir, 'r.json'));
    const params = (r: Report, name: string): number => r.layers.find((l) => l.name === name)!.paramsAfter;
    const stat = (r: Report, name: string) => r.verify!.outputs.find((o) => o.name === name)!;
    // Both outputs hold the budget when both count.
    expect(stat(all.report, 'side_out0').relL2).toBeLessThan(0.08);
    // With only `kept` counting, mmB is cut to fewer params than any rank that kept `side` within budget.
    expect(params(only.report, 'mmB')).toBeLessThan(params(all.report, 'mmB'));
    expect(stat(only.report, 'side_out0').relL2).toBeGreaterThan(0.08);
    expect(stat(only.report, 'side_out0').checked).toBe(false);
    // `kept` still holds the budget, and decides the verdict alone.
    expect(stat(only.report, 'kept_out0').relL2).toBeLessThan(0.08);
    expect(stat(only.report, 'kept_out0').checked).toBeUndefined();
    expect(only.report.verify!.pass).toBe(stat(only.report, 'kept_out0').pass);
    expect(only.report.verify!.reasons.some((r) => r.includes('side_out0'))).toBe(false);
  });

  it('an output the model does not have is a usage error that lists the outputs', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-outs-'));
    const r = await runCli('optimize', REAL.cls, path.join(dir, 'o.onnx'), '--shape', 'x:1x3x48x192', '--outputs', 'nope');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--outputs: the model has no output nope \(its outputs: /);
  });
});
