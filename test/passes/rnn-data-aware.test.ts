/**
 * Data-aware LSTM/GRU input weights (passes/rnn-input-svd.ts with the rows statistics of X,
 * src/calib/stats-plan.ts): when the inputs live near a 4-dimensional subspace of their
 * 32 features, a rank-4 projection fitted to them keeps the op's output almost exactly,
 * while the weight-only truncation of a full-rank W (which cannot know the subspace) does
 * not. End to end through `optimize --calib` and `--verify-data` on held-out inputs from
 * the same distribution, verified in ORT.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { encodeModel } from '../../src/onnx/codec.js';
import { encodeNpy } from '../../src/io/npy.js';
import { createRng } from '../../src/util/rng.js';
import { runCli } from '../helpers/cli.js';

const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-rnn-aware-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const I = 32, H = 8, SEQ = 5, SUB = 4;

/** n inputs X [SEQ, 1, I], X = Z·M + 0.01·noise: every input vector near the span of M's SUB rows. */
function inputs(n: number, seed: number): Float32Array {
  const m = createRng(99);
  const basis = Float64Array.from({ length: SUB * I }, () => m.normal());
  const rng = createRng(seed);
  const x = new Float32Array(n * SEQ * I);
  for (let v = 0; v < n * SEQ; v++) {
    const z = Array.from({ length: SUB }, () => rng.normal());
    for (let i = 0; i < I; i++) {
      let s = 0.01 * rng.normal();
      for (let k = 0; k < SUB; k++) s += z[k]! * basis[k * I + i]!;
      x[v * I + i] = s * 0.3;
    }
  }
  return x;
}

function model(op: 'LSTM' | 'GRU'): string {
  const rng = createRng(op === 'LSTM' ? 1 : 2);
  const G = op === 'LSTM' ? 4 : 3;
  const randn = (n: number, s: number): Float32Array => Float32Array.from({ length: n }, () => s * rng.normal());
  const b = new ModelBuilder({ opset: 14 });
  const [y] = b.nodeMulti(op, [b.input('x', [SEQ, 1, I]), b.init('w', [1, G * H, I], randn(G * H * I, 0.3)), b.init('r', [1, G * H, H], randn(G * H * H, 0.2)), b.init('b', [1, 2 * G * H], randn(2 * G * H, 0.1))],
    { hidden_size: H }, { name: 'rnn', outputs: 1 });
  b.output(y!);
  const file = path.join(dir, `${op}.onnx`);
  writeFileSync(file, encodeModel(b.build()));
  return file;
}

const npy = (name: string, n: number, seed: number): string => {
  const f = path.join(dir, name);
  writeFileSync(f, encodeNpy({ dtype: 'f4', shape: [n, SEQ, 1, I], data: inputs(n, seed) }));
  return f;
};

describe('data-aware RNN input weights', () => {
  const calib = npy('calib.npy', 16, 5);
  const held = npy('held.npy', 4, 6);

  for (const op of ['LSTM', 'GRU'] as const) {
    it(`${op}: at rank ${SUB}, fitting to the calibration inputs' second moments cuts the held-out output error by 10x or more`, async () => {
      const inPath = model(op);
      const relL2 = async (extra: string[], tag: string): Promise<{ err: number; notes: string[] }> => {
        const report = path.join(dir, `${op}-${tag}.json`);
        const r = await runCli('optimize', inPath, path.join(dir, `${op}-${tag}.onnx`), '--rank', String(SUB), '--min-params', '0', '--save', 'params',
          '--no-latency', '--min-cosine', '0', '--verify-data', held, ...extra, '--report', report);
        expect(r.code, r.err + r.out).toBe(0);
        const rep = JSON.parse(readFileSync(report, 'utf8'));
        expect(rep.layers.filter((l: { skipped?: boolean }) => !l.skipped).map((l: { pass: string }) => l.pass)).toEqual(['rnn-input-svd']);
        return { err: Math.max(...rep.verify.outputs.map((o: { relL2: number }) => o.relL2)), notes: rep.notes };
      };
      const plain = await relL2([], 'plain');
      const aware = await relL2(['--calib', calib], 'aware');
      expect(aware.notes.some((n) => /data-aware decomposition: input statistics for 1 layer/.test(n))).toBe(true);
      expect(plain.err).toBeGreaterThan(0.05);
      expect(aware.err).toBeLessThan(plain.err / 10);
    }, 120_000);
  }
});
