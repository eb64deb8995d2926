/**
 * Issue 20's "tests on real layers" for the two layer kinds the other CLI tests leave out
 * (the Gather and the LSTM: rnn-input-svd.test.ts; Cast-fed: cast-weights.test.ts): a GRU
 * (linear_before_reset, both directions) and a batched constant MatMul weight [B, K, N],
 * each with a trained-like decaying spectrum, through `inspect` (listed with their MACs),
 * `optimize --save params` (rewritten by their passes) and the ORT verification of OUT.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { createRng, type Rng } from '../../src/util/rng.js';
import { runCli } from '../helpers/cli.js';

const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-weights-layers-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Σ_t s·0.6^t·u_t·v_tᵀ over k random rank-one terms, [m, n]: a decaying spectrum. */
function decaying(rng: Rng, m: number, n: number, k: number, scale: number): Float32Array {
  const w = new Float32Array(m * n);
  for (let t = 0; t < k; t++) {
    const u = Array.from({ length: m }, () => rng.normal());
    const v = Array.from({ length: n }, () => rng.normal());
    const s = (scale * 0.6 ** t) / Math.sqrt(m * n);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) w[i * n + j] += s * u[i]! * v[j]!;
  }
  return w;
}

interface Rep { layers: { name: string; op: string; pass?: string; skipped?: boolean; reason?: string; ranks?: number[]; relError?: number }[]; verify: { pass: boolean; outputs: { cosine: number }[] } }

async function through(file: string): Promise<{ inspect: { layers: { name: string; op: string; weightShape: number[]; macs: number | null }[] }; rep: Rep; ops: string[] }> {
  const i = await runCli('inspect', file, '--no-profile', '--json');
  expect(i.code, i.err).toBe(0);
  const out = file.replace(/\.onnx$/, '-out.onnx');
  const report = file.replace(/\.onnx$/, '.json');
  const o = await runCli('optimize', file, out, '--save', 'params', '--energy', '0.999', '--min-params', '0', '--no-latency', '--report', report);
  expect(o.code, o.err + o.out).toBe(0);
  return { inspect: JSON.parse(i.out), rep: JSON.parse(readFileSync(report, 'utf8')) as Rep, ops: decodeModel(readFileSync(out)).graph!.node.map((n) => n.opType!) };
}

describe('a GRU and a batched MatMul through inspect, optimize and ORT verification', () => {
  it('GRU (bidirectional, linear_before_reset): listed with seq·batch·dirs·3H·I MACs, its input weights rewritten, OUT verifies', async () => {
    const rng = createRng(21);
    const I = 48, H = 16, T = 7, N = 2;
    const b = new ModelBuilder({ opset: 14 });
    const w = new Float32Array(2 * 3 * H * I);
    w.set(decaying(rng, 3 * H, I, 30, 30), 0);
    w.set(decaying(rng, 3 * H, I, 30, 30), 3 * H * I);
    const outs = b.nodeMulti('GRU', [b.input('x', [T, N, I]), b.init('w', [2, 3 * H, I], w), b.init('r', [2, 3 * H, H], decaying(rng, 2 * 3 * H, H, 16, 6)),
      b.init('b', [2, 6 * H], Float32Array.from({ length: 12 * H }, () => 0.1 * rng.normal()))], { hidden_size: H, direction: 'bidirectional', linear_before_reset: 1 }, { name: 'gru', outputs: 2 });
    b.output(outs[0]!);
    b.output(outs[1]!);
    const file = path.join(dir, 'gru.onnx');
    writeFileSync(file, encodeModel(b.build()));
    const { inspect, rep, ops } = await through(file);
    expect(inspect.layers.map((l) => [l.name, l.op, l.weightShape, l.macs])).toEqual([['gru', 'GRU', [2, 3 * H, I], T * N * 2 * 3 * H * I]]);
    expect(rep.layers.map((l) => [l.name, l.pass, l.skipped])).toEqual([['gru', 'rnn-input-svd', undefined]]);
    expect(rep.layers[0]!.ranks![0]!).toBeLessThan(I);
    expect(ops).toContain('MatMul');
    expect(ops).toContain('GRU');
    expect(rep.verify.pass).toBe(true);
    expect(Math.min(...rep.verify.outputs.map((o) => o.cosine))).toBeGreaterThan(0.99);
  }, 120_000);

  it('batched MatMul weight [B, K, N]: listed with K MACs per output entry, rewritten slice by slice, OUT verifies', async () => {
    const rng = createRng(22);
    const B = 4, M = 6, K = 64, N = 48;
    const w = new Float32Array(B * K * N);
    for (let s = 0; s < B; s++) w.set(decaying(rng, K, N, 24, 20), s * K * N);
    const b = new ModelBuilder({ opset: 13 });
    b.output(b.node('MatMul', [b.input('x', [B, M, K]), b.init('w', [B, K, N], w)], {}, { name: 'bmm' }));
    const file = path.join(dir, 'bmm.onnx');
    writeFileSync(file, encodeModel(b.build()));
    const { inspect, rep, ops } = await through(file);
    expect(inspect.layers.map((l) => [l.name, l.op, l.weightShape, l.macs])).toEqual([['bmm', 'MatMul', [B, K, N], B * M * N * K]]);
    expect(rep.layers.map((l) => [l.name, l.pass, l.skipped])).toEqual([['bmm', 'matmul-batched-svd', undefined]]);
    expect(ops).toEqual(['MatMul', 'MatMul']);
    expect(rep.verify.pass).toBe(true);
    expect(Math.min(...rep.verify.outputs.map((o) => o.cosine))).toBeGreaterThan(0.99);
  }, 120_000);
});
