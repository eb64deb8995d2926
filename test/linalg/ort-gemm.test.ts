import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { runAsync, runSync } from '../../src/linalg/engine.js';
import { gemm } from '../../src/linalg/gemm.js';
import { encodeGemmModel, ONNX_FLOAT } from '../../src/linalg/gemm-model.js';
import { asFloat32, diffNorm, frobeniusNorm, orthonormalityError, randomNormal, transpose } from '../../src/linalg/matrix.js';
import { createOrtGemmEngine } from '../../src/linalg/ort-gemm.js';
import { truncatedSvdProgram } from '../../src/linalg/rsvd.js';
import { tucker2Program } from '../../src/linalg/tucker2.js';
import { createRng } from '../../src/util/rng.js';
import { reconstruct, withSpectrum } from './helpers.js';

const engine = createOrtGemmEngine({ threads: 2, minFlops: 0 }); // minFlops 0: every product goes to ORT
afterAll(() => engine.dispose());

describe('hand-encoded Gemm model', () => {
  it('loads in ORT and exposes symbolic inputs A, B and output Y', async () => {
    const s = await ort.InferenceSession.create(encodeGemmModel({ elemType: ONNX_FLOAT, transA: true, transB: false }));
    expect(s.inputNames).toEqual(['A', 'B']);
    expect(s.outputNames).toEqual(['Y']);
    const out = await s.run({
      A: new ort.Tensor('float32', Float32Array.from([1, 2, 3, 4, 5, 6]), [3, 2]), // Aᵀ is 2×3
      B: new ort.Tensor('float32', Float32Array.from([1, 0, 0, 1, 1, 1]), [3, 2]),
    });
    expect(out['Y']!.dims).toEqual([2, 2]);
    expect(Array.from(out['Y']!.data as Float32Array)).toEqual([1 + 5, 3 + 5, 2 + 6, 4 + 6]);
    await s.release();
  });
});

describe('ORT gemm engine', () => {
  it('agrees with the JS gemm for every transpose combination (fp32 and fp64)', async () => {
    const rng = createRng(60);
    for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
      const a = randomNormal(ta ? 70 : 45, ta ? 45 : 70, rng.normal);
      const b = randomNormal(tb ? 33 : 70, tb ? 70 : 33, rng.normal);
      const ref = gemm(a, b, { transA: ta, transB: tb });
      const c32 = await engine.matmul(asFloat32(a), asFloat32(b), { transA: ta, transB: tb });
      expect(c32.data).toBeInstanceOf(Float32Array);
      expect([c32.rows, c32.cols]).toEqual([45, 33]);
      expect(diffNorm(c32, ref) / frobeniusNorm(ref)).toBeLessThan(1e-6);
      const c64 = await engine.matmul(a, b, { transA: ta, transB: tb });
      expect(c64.data).toBeInstanceOf(Float64Array);
      expect(diffNorm(c64, ref) / frobeniusNorm(ref)).toBeLessThan(1e-14);
    }
  });

  it('keeps small products in JS below minFlops', async () => {
    const small = createOrtGemmEngine({ minFlops: 1e9 });
    const rng = createRng(61);
    const c = await small.matmul(asFloat32(randomNormal(4, 4, rng.normal)), asFloat32(randomNormal(4, 4, rng.normal)));
    expect(c.data).toBeInstanceOf(Float64Array); // the JS kernel's output: no ORT round trip
    await small.dispose();
    await expect(small.matmul(randomNormal(2, 2, rng.normal), randomNormal(2, 2, rng.normal))).rejects.toThrowError(/after dispose/);
  });

  it('runs the randomized SVD and Tucker-2 programs with results matching the JS path', async () => {
    const rng = createRng(62);
    const a = withSpectrum(300, 200, [8, 6, 4, 2, 1], rng);
    const viaOrt = await runAsync(truncatedSvdProgram(a, 5, { seed: 4, method: 'randomized' }), engine);
    const viaJs = runSync(truncatedSvdProgram(a, 5, { seed: 4, method: 'randomized' }));
    for (let i = 0; i < 5; i++) expect(viaOrt.s[i]).toBeCloseTo(viaJs.s[i]!, 10);
    expect(diffNorm(reconstruct(viaOrt), a) / frobeniusNorm(a)).toBeLessThan(1e-12);
    // fp32 input: products in fp32 on ORT, still accurate to fp32 level.
    const a32 = asFloat32(a);
    const r32 = await runAsync(truncatedSvdProgram(a32, 5, { seed: 4, method: 'randomized' }), engine);
    expect(diffNorm(reconstruct(r32), a) / frobeniusNorm(a)).toBeLessThan(1e-5);

    // A slowly decaying spectrum keeps the fp32 orthonormalisation (no fp64 fallback):
    // the result is still near-optimal and fp32-orthonormal.
    const sd = Array.from({ length: 150 }, (_, i) => 1 / Math.sqrt(i + 1));
    const slow = withSpectrum(400, 300, sd, rng);
    const rs = await runAsync(truncatedSvdProgram(asFloat32(slow), 20, { seed: 2, method: 'randomized' }), engine);
    let opt = 0;
    for (let i = 20; i < sd.length; i++) opt += sd[i]! ** 2;
    expect(diffNorm(reconstruct(rs), slow) / Math.sqrt(opt)).toBeLessThan(1.01);
    expect(orthonormalityError(rs.u)).toBeLessThan(1e-5);
    expect(orthonormalityError(transpose(rs.vt))).toBeLessThan(1e-5);

    const w = { data: randomNormal(1, 16 * 12 * 9, rng.normal).data, shape: [16, 12, 3, 3] };
    const t1 = await runAsync(tucker2Program(w, [4, 5], { svd: { seed: 1 } }), engine);
    const t2 = runSync(tucker2Program(w, [4, 5], { svd: { seed: 1 } }));
    expect(t1.relError).toBeCloseTo(t2.relError, 10);
    expect(transpose(t1.uS).rows).toBe(4);
  });
});
