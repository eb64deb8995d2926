import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import type { PlanFile } from '../../src/optimize/plan.js';
import { createRng } from '../../src/util/rng.js';
import { statsFromSamples } from '../helpers/calib.js';
import { relL2, runModel } from '../helpers/ort.js';

const S = 16;
const T = 4;
const HW = 8;
const rng = createRng(9);
const mixing = Float64Array.from({ length: S * 3 }, () => rng.normal());

/** n inputs whose channels are mixtures of 3 latent spatial fields (+ a little noise). */
function inputs(n: number, seed: number): Float32Array {
  const r = createRng(seed);
  const x = new Float32Array(n * S * HW * HW);
  for (let b = 0; b < n; b++) {
    const z = Array.from({ length: 3 * HW * HW }, () => r.normal());
    for (let c = 0; c < S; c++) for (let p = 0; p < HW * HW; p++) {
      let v = 0.01 * r.normal() + 0.5;
      for (let l = 0; l < 3; l++) v += mixing[c * 3 + l] * z[l * HW * HW + p];
      x[((b * S + c) * HW * HW) + p] = v;
    }
  }
  return x;
}

// The inputs span 3 latent fields plus their mean: 4 directions of the 16 channels.
describe('data-aware conv chains (Tucker-2 and CP) on a conv whose inputs span few channels', () => {
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [1, S, HW, HW]);
  const w = Float32Array.from({ length: T * S * 9 }, () => rng.normal());
  b.output(b.node('Conv', [x, b.init('w', [T, S, 3, 3], w), b.init('bias', [T], new Array(T).fill(0.1))], { pads: [1, 1, 1, 1] }, { name: 'conv' }));
  const bytes = encodeModel(b.build());

  /** Statistics of the conv over 24 calibration samples read back from a .npy file. */
  const calibStats = () => statsFromSamples(bytes, inputs(24, 1), [24, S, HW, HW], 'cda');

  for (const method of ['tucker2', 'cp'] as const) {
    it(`${method}: lower output error than weight-only at the same ranks`, async () => {
      const st = await calibStats();
      expect(st.get('conv')?.patchGram).toBeDefined();

      const held = { x: new ort.Tensor('float32', inputs(1, 99), [1, S, HW, HW]) };
      const ref = (await runModel(bytes, held)).conv_out0;
      const errOf = async (stats?: typeof st): Promise<number> => {
        const model = new Model(decodeModel(bytes));
        const [rec] = optimizeModel(model, undefined, { method, policy: { kind: 'fixed', rank: 4 }, minParams: 0, seed: 0 }, undefined, { stats });
        expect(rec.skipped).toBeUndefined();
        if (stats) expect(rec.dataError).toBeDefined();
        return relL2(ref, (await runModel(encodeModel(model.proto), held)).conv_out0);
      };
      const plain = await errOf();
      const aware = await errOf(st);
      // Tucker-2 can hold the 4 input directions exactly; a rank-4 CP cannot, but its
      // whitened input factors and refitted last factor still clearly help.
      if (method === 'tucker2') expect(aware).toBeLessThan(plain / 5);
      else expect(aware).toBeLessThan(0.8 * plain);
    });
  }

  it('cp: Kronecker-whitened input factors cut the output error on held-out inputs several-fold at rank 8', async () => {
    const st = await calibStats();
    // Held-out: four fresh samples of the same distribution, errors pooled over all outputs.
    const held = inputs(4, 77);
    const outputs = async (model: Uint8Array): Promise<number[]> => {
      const ys: number[] = [];
      for (let i = 0; i < 4; i++) {
        const x1 = held.subarray(i * S * HW * HW, (i + 1) * S * HW * HW);
        ys.push(...(await runModel(model, { x: new ort.Tensor('float32', x1, [1, S, HW, HW]) })).conv_out0);
      }
      return ys;
    };
    const ref = await outputs(bytes);
    const run = async (stats?: typeof st): Promise<{ out: number; dataError?: number }> => {
      const model = new Model(decodeModel(bytes));
      const [rec] = optimizeModel(model, undefined, { method: 'cp', policy: { kind: 'fixed', rank: 8 }, minParams: 0, seed: 0 }, undefined, { stats });
      expect(rec.skipped).toBeUndefined();
      expect(rec.ranks).toEqual([8]);
      return { out: relL2(ref, await outputs(encodeModel(model.proto))), dataError: rec.dataError };
    };
    const plain = await run();
    const aware = await run(st);
    expect(aware.out).toBeLessThan(plain.out / 3);
    // The reported data error is the output error on the calibration statistics: close to
    // the held-out one (same distribution), not the weight error.
    expect(aware.dataError).toBeDefined();
    expect(aware.dataError!).toBeGreaterThan(aware.out / 2);
    expect(aware.dataError!).toBeLessThan(aware.out * 2);
  });

  it('--method auto chooses between Tucker-2 and CP by output error when statistics exist', async () => {
    const st = await calibStats();
    const pick = (stats?: typeof st) => {
      const [rec] = optimizeModel(new Model(decodeModel(bytes)), undefined, { method: 'auto', policy: { kind: 'ratio', ratio: 0.3 }, minParams: 0, seed: 0 }, undefined, { stats });
      return rec;
    };
    const plain = pick();
    const aware = pick(st);
    expect(plain.note).toMatch(/^tucker2 \S+ err .* vs cp \d+ err/);
    expect(aware.note).toMatch(/^tucker2 \S+ data err .* vs cp \d+ err/);
    // The two chains auto weighed (their ranks as the note names them), each written and
    // run in ORT on the calibration inputs: the chosen one has the lower output error
    // there (CP wins ties within 2%).
    const [, r1, r2, rc] = /^tucker2 (\d+),(\d+) .* vs cp (\d+) err/.exec(aware.note!)!.map(Number);
    const calib = inputs(24, 1);
    const per = S * HW * HW;
    const outputs = async (model: Uint8Array): Promise<number[]> => {
      const ys: number[] = [];
      for (let i = 0; i < 24; i++) ys.push(...(await runModel(model, { x: new ort.Tensor('float32', calib.slice(i * per, (i + 1) * per), [1, S, HW, HW]) })).conv_out0);
      return ys;
    };
    const ref = await outputs(bytes);
    const measured = async (pass: string, ranks: number[]): Promise<number> => {
      const model = new Model(decodeModel(bytes));
      const plan = { version: 1, model: '', policy: 'plan', layers: [{ name: 'conv', pass, ranks }] } as unknown as PlanFile;
      const [rec] = optimizeModel(model, undefined, { method: 'auto', policy: { kind: 'fixed', rank: 1 }, minParams: 0, seed: 0, plan }, plan, { stats: st });
      expect(rec.skipped).toBeUndefined();
      expect(rec.pass).toBe(pass);
      return relL2(ref, await outputs(encodeModel(model.proto)));
    };
    const eT = await measured('conv-tucker2', [r1!, r2!]);
    const eC = await measured('conv-cp', [rc!]);
    // Far enough apart that float32 in ORT and float64 in the tool cannot order them differently.
    expect(Math.max(eT / eC, eC / eT)).toBeGreaterThan(1.1);
    expect(aware.pass).toBe(eC <= eT * 1.02 + 1e-4 ? 'conv-cp' : 'conv-tucker2');
  });
});
