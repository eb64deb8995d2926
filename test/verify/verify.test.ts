import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { writeNpy } from '../../src/io/npy.js';
import { loadInputArgs } from '../../src/verify/inputs.js';
import { createSession } from '../../src/verify/session.js';
import { fromNumbers } from '../../src/verify/tensor.js';
import { verifyModels } from '../../src/verify/verify.js';
import { CLS, HELLO, HELLO_OLD, NAMASTE, SILERO } from './models.js';

describe('verifyModels on real models', () => {
  it('a model against itself passes with exactly zero error (path vs bytes)', async () => {
    const r = await verifyModels({ path: HELLO }, { bytes: readFileSync(HELLO) });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.pass).toBe(true);
    expect(r.value.reasons).toEqual([]);
    expect(r.value.runs).toBe(3);
    expect(r.value.inputDims).toEqual({ 'onnx::Flatten_0': [1, 25, 96] });
    expect(r.value.outputs).toHaveLength(1);
    expect(r.value.outputs[0]).toMatchObject({ name: '39', dims: [1, 1], maxAbs: 0, meanAbs: 0, relL2: 0, cosine: 1 });
  });

  it('the PaddleOCR classifier against itself with --shape x:1x3x48x192', async () => {
    const r = await verifyModels({ path: CLS }, { path: CLS }, { shapes: { x: [1, 3, 48, 192] }, runs: 2 });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.pass).toBe(true);
    expect(r.value.defaulted).toEqual([]);
    // [N, 2] softmax output: top-1 is reported over the rows of all feeds.
    expect(r.value.outputs[0]).toMatchObject({ name: 'softmax_0.tmp_0', dims: [1, 2], maxAbs: 0, relL2: 0, cosine: 1, top1: 1 });
  });

  it('two different models with the same signature fail, with reasons', async () => {
    const r = await verifyModels({ path: NAMASTE }, { path: HELLO_OLD }, { seed: 1 });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.pass).toBe(false);
    const o = r.value.outputs[0]!;
    expect(o.maxAbs).toBeGreaterThan(1e-3);
    expect(o.cosine).toBeLessThan(0.9999);
    expect(o.mismatches).toBeGreaterThan(0);
    expect(r.value.reasons.length).toBeGreaterThan(0);
    expect(r.value.reasons[0]).toMatch(/^output 39: \d of 3 elements exceed atol/);
    // Loose enough tolerances turn the same comparison into a pass.
    const loose = await verifyModels({ path: NAMASTE }, { path: HELLO_OLD }, { seed: 1, atol: 10, rtol: 0 });
    expect(loose.ok && loose.value.pass).toBe(true);
  });

  it('with several feeds, the one an output agrees worst on is named with its own figures', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'onnx-lr-v-')), 'cls.lr.onnx');
    expect(await main(['optimize', CLS, out, '--shape', 'x:1x3x48x192', '--rank-ratio', '0.3', '--min-params', '0', '--no-verify', '--no-latency'], { out: () => {}, err: () => {} })).toBe(0);
    const feeds = [0, 1, 2].map((k) => ({ x: fromNumbers('float32', [1, 3, 48, 192], Array.from({ length: 3 * 48 * 192 }, (_, i) => Math.sin(i * (k + 1) * 0.37) * (k + 1))) }));
    const all = await verifyModels({ path: CLS }, { path: out }, { feeds });
    if (!all.ok) throw new Error(all.error.message);
    const each: number[] = [];
    for (const f of feeds) {
      const one = await verifyModels({ path: CLS }, { path: out }, { feeds: [f] });
      if (!one.ok) throw new Error(one.error.message);
      // One feed: nothing to single out.
      expect(one.value.outputs[0]!.worstFeed).toBeUndefined();
      each.push(one.value.outputs[0]!.cosine);
    }
    expect(new Set(each.map((c) => c.toFixed(9))).size).toBe(3);
    const w = all.value.outputs[0]!.worstFeed!;
    expect(w.index).toBe(each.indexOf(Math.min(...each)));
    expect(w.cosine).toBeCloseTo(Math.min(...each), 9);
  });

  it('the same seed gives the same statistics, another seed different ones', async () => {
    const stats = async (seed: number) => {
      const r = await verifyModels({ path: NAMASTE }, { path: HELLO_OLD }, { seed, runs: 2 });
      if (!r.ok) throw r.error;
      return r.value.outputs[0]!;
    };
    const a = await stats(5);
    expect(await stats(5)).toEqual(a);
    expect((await stats(6)).maxAbs).not.toBe(a.maxAbs);
  });

  it('a signature mismatch fails before running', async () => {
    const r = await verifyModels({ path: HELLO }, { path: NAMASTE });
    expect(r.ok && r.value.pass).toBe(false);
    expect(r.ok && r.value.reasons).toEqual(['input onnx::Flatten_0: optimized model expects [1,24,96], feeds are [1,25,96]']);
  });

  it('silero VAD: sr comes from an --input .npy; without shapes the run fails with a hint', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vad-'));
    const srFile = join(dir, 'sr.npy');
    writeNpy(srFile, { dtype: 'i8', shape: [], data: new BigInt64Array([16000n]) });
    const inputs = loadInputArgs([`sr:${srFile}`]);
    if (!inputs.ok) throw inputs.error;
    const r = await verifyModels({ path: SILERO }, { path: SILERO }, { shapes: { input: [1, 512] }, inputs: inputs.value, runs: 2 });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.pass).toBe(true);
    expect(r.value.outputs.map((o) => [o.name, o.dims, o.maxAbs])).toEqual([['output', [1, 1], 0], ['stateN', [2, 1, 128], 0]]);

    // Defaults (batch = sequence = 1) make the original model itself fail: an err, not a pass: false.
    const bad = await verifyModels({ path: SILERO }, { path: SILERO }, { inputs: { sr: fromNumbers('int64', [], [16000]) } });
    expect(bad.ok).toBe(false);
    if (bad.ok) return;
    expect(bad.error.kind).toBe('verify-mismatch');
    expect(bad.error.message).toMatch(/^ORT \(node\) failed to run original .*silero.*defaulted to 1: input\[0\] \(batch\), input\[1\] \(sequence\)/);
    expect(bad.error.message).not.toContain('\n');
  });

  it('load failures are one-line errors: io for a missing file, verify-mismatch for a bad model', async () => {
    const missing = await verifyModels({ path: 'no/such/model.onnx' }, { path: HELLO });
    expect(!missing.ok && missing.error.kind).toBe('io');
    expect(!missing.ok && missing.error.message).toContain('no/such/model.onnx');
    const garbage = await verifyModels({ path: HELLO }, { bytes: new Uint8Array([8, 1, 2, 3, 4]) });
    expect(!garbage.ok && garbage.error.kind).toBe('verify-mismatch');
    expect(!garbage.ok && garbage.error.message).toMatch(/^ORT \(node\) failed to load optimized model bytes: .*protobuf/);
    const s = await createSession({ bytes: new Uint8Array(0) });
    expect(!s.ok && s.error.message).not.toContain('\n');
  });
});
