import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gemm } from '../../src/linalg/gemm.js';
import { asFloat32, diffNorm, frobeniusNorm, randomNormal } from '../../src/linalg/matrix.js';
import { createSyncOrtGemm, type SyncOrtGemm } from '../../src/linalg/ort-gemm-sync.js';
import { tucker2Sync } from '../../src/linalg/tucker2.js';
import { cpAlsSync } from '../../src/linalg/cp-als.js';
import { truncatedSvdSync } from '../../src/linalg/rsvd.js';
import { createRng } from '../../src/util/rng.js';

let sync: SyncOrtGemm;
beforeAll(async () => { sync = await createSyncOrtGemm({ minFlops: 0 }); }); // minFlops 0: every product goes to ORT
afterAll(() => sync.dispose());

describe('synchronous ORT gemm (worker thread)', () => {
  it('agrees with the JS gemm for every transpose combination, fp64 exactly and fp32 to fp32 rounding', () => {
    const rng = createRng(70);
    for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
      const a = randomNormal(ta ? 70 : 45, ta ? 45 : 70, rng.normal);
      const b = randomNormal(tb ? 33 : 70, tb ? 70 : 33, rng.normal);
      const ref = gemm(a, b, { transA: ta, transB: tb });
      const c64 = sync.matmulSync(a, b, { transA: ta, transB: tb });
      expect(c64.data).toBeInstanceOf(Float64Array);
      expect([c64.rows, c64.cols]).toEqual([45, 33]);
      expect(diffNorm(c64, ref) / frobeniusNorm(ref)).toBeLessThan(1e-14);
      const c32 = sync.matmulSync(asFloat32(a), asFloat32(b), { transA: ta, transB: tb });
      expect(c32.data).toBeInstanceOf(Float32Array);
      expect(diffNorm(c32, ref) / frobeniusNorm(ref)).toBeLessThan(1e-6);
    }
  });

  it('passes operands of growing and shrinking sizes and mixed types through its reused stage; results are copies', () => {
    const rng = createRng(72);
    const kept: { copy: Float64Array; returned: Float64Array }[] = [];
    for (const [m, k, n, f32] of [[60, 50, 40, false], [5, 7, 3, false], [90, 80, 70, true], [8, 9, 10, true], [120, 30, 110, false]] as const) {
      const a = randomNormal(m, k, rng.normal);
      const b = randomNormal(k, n, rng.normal);
      // One fp32 operand and one fp64: the product is fp64, as in the JS gemm.
      const c = sync.matmulSync(f32 ? asFloat32(a) : a, b);
      const ref = gemm(f32 ? asFloat32(a) : a, b);
      expect(c.data).toBeInstanceOf(Float64Array);
      expect(diffNorm(c, ref) / frobeniusNorm(ref)).toBeLessThan(1e-14);
      kept.push({ copy: Float64Array.from(c.data), returned: c.data as Float64Array });
    }
    // Later products did not write into earlier results.
    for (const { copy, returned } of kept) expect(returned).toEqual(copy);
    expect(sync.fallbacks).toBe(0);
  });

  it('Tucker-2, CP-ALS and the truncated SVD give the JS results with their products in ORT', () => {
    const rng = createRng(71);
    const kernel = { data: Float64Array.from({ length: 40 * 36 * 9 }, () => rng.normal()), shape: [40, 36, 3, 3] };
    const js = tucker2Sync(kernel, [12, 10]);
    const ort = tucker2Sync(kernel, [12, 10], { gemm: sync });
    expect(ort.relError).toBeCloseTo(js.relError, 10);
    expect(ort.iterations).toBe(js.iterations);
    expect(diffNorm({ rows: 1, cols: js.core.data.length, data: ort.core.data }, { rows: 1, cols: js.core.data.length, data: js.core.data })).toBeLessThan(1e-8);

    const t = { data: Float64Array.from({ length: 20 * 18 * 9 }, () => rng.normal()), shape: [20, 18, 9] };
    expect(cpAlsSync(t, 6, { seed: 3, gemm: sync }).relError).toBeCloseTo(cpAlsSync(t, 6, { seed: 3 }).relError, 10);

    const a = randomNormal(300, 200, rng.normal);
    const s1 = truncatedSvdSync(a, 20, { seed: 4, method: 'randomized' }).s;
    const s2 = truncatedSvdSync(a, 20, { seed: 4, method: 'randomized', gemm: sync }).s;
    for (let i = 0; i < 20; i++) expect(s2[i]).toBeCloseTo(s1[i]!, 9);
  });

  it('refuses operands whose values do not fill their dims, answers after a timeout from JS, and refuses use after dispose', async () => {
    const rng = createRng(72);
    const a = randomNormal(10, 20, rng.normal);
    const b = randomNormal(20, 5, rng.normal);
    expect(() => sync.matmulSync({ rows: 10, cols: 20, data: new Float64Array(150) }, b)).toThrow(/holds 150 values for 10×20/);
    const c = sync.matmulSync(a, b);
    expect(diffNorm(c, gemm(a, b)) / frobeniusNorm(c)).toBeLessThan(1e-14);
    expect(sync.fallbacks).toBe(0);
    // A worker that cannot answer in time (0 ms): the product still comes back, from JS.
    const slow = await createSyncOrtGemm({ minFlops: 0, timeoutMs: 0 });
    const d = slow.matmulSync(a, b);
    expect(diffNorm(d, gemm(a, b))).toBe(0);
    expect(slow.fallbacks).toBe(1);
    await slow.dispose();
    const other = await createSyncOrtGemm({ minFlops: 0 });
    expect(other.matmulSync(a, b).rows).toBe(10);
    await other.dispose();
    expect(() => other.matmulSync(a, b)).toThrow(/after dispose/);
  });

  it('a product that times out while ORT runs it: the worker is closed, not killed, and the process lives on', () => {
    // Terminating the worker inside an ORT call aborted the whole process (SIGABRT,
    // "terminate called after throwing an instance of 'Napi::Error'") within a few
    // cycles; timeouts of 0-6 ms land before, inside and after the 300x300 products.
    const body = `
      import { createSyncOrtGemm } from ${JSON.stringify(new URL('../../src/linalg/ort-gemm-sync.ts', import.meta.url).pathname)};
      const a = { rows: 300, cols: 300, data: Float64Array.from({ length: 90000 }, (_, i) => Math.sin(i)) };
      let fallbacks = 0;
      for (let i = 0; i < 60; i++) {
        const g = await createSyncOrtGemm({ minFlops: 0, timeoutMs: i % 7 });
        g.matmulSync(a, a); g.matmulSync(a, a);
        fallbacks += g.fallbacks;
        await g.dispose();
      }
      console.log('done ' + fallbacks);`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', body], { encoding: 'utf8', timeout: 300_000 });
    expect(r.stderr).not.toMatch(/terminate called/);
    expect([r.status, r.signal]).toEqual([0, null]);
    expect(r.stdout).toMatch(/^done \d+/m);
  }, 320_000);
});
