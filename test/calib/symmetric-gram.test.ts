/** B·Bᵀ from the blocks on and above the diagonal (calib/symmetric-gram.ts) against the plain product, in ORT and in JS. */
import { afterAll, describe, expect, it } from 'vitest';
import { addSymmetricGram, gramChunks } from '../../src/calib/symmetric-gram.js';
import { createJsGemmEngine, type GemmEngine } from '../../src/linalg/engine.js';
import { gemm } from '../../src/linalg/gemm.js';
import { createOrtGemmEngine } from '../../src/linalg/ort-gemm.js';
import { seededArray, maxRelDiff } from './helpers.js';

const ort = createOrtGemmEngine({ threads: 1, minFlops: 0 });
afterAll(() => ort.dispose());

describe('addSymmetricGram', () => {
  it('chunks: whole below 768 rows, at most 4, each at least 384 rows', () => {
    expect([1, 383, 767, 768, 1151, 1152, 1536, 4608].map(gramChunks)).toEqual([1, 1, 1, 2, 2, 3, 4, 4]);
  });

  for (const [name, engine] of [['ORT', ort], ['JS', createJsGemmEngine()]] as [string, GemmEngine][]) {
    it(`${name}: adds B·Bᵀ at an offset, for chunk counts that do not divide the rows, on a view into a larger buffer`, async () => {
      const rows = 37;
      const cols = 23;
      // The block is a view at an offset, as a sample block's scratch can be.
      const buf = seededArray(rows * cols + 11, 7);
      const b = { rows, cols, data: buf.subarray(11) };
      const want = gemm({ rows, cols, data: Float64Array.from(b.data) }, { rows, cols, data: Float64Array.from(b.data) }, { transB: true }).data;
      for (const q of [1, 2, 3, 4, 5]) {
        const off = 5;
        const gram = new Float64Array(off + rows * rows).fill(1);
        await addSymmetricGram(engine, gram, off, b, q);
        expect(Array.from(gram.subarray(0, off))).toEqual([1, 1, 1, 1, 1]);
        expect(maxRelDiff(gram.subarray(off).map((v) => v - 1), want)).toBeLessThan(1e-5);
        // Exactly symmetric: each mirrored entry is the same product.
        for (let i = 0; i < rows; i++) for (let j = 0; j < i; j++) expect(gram[off + i * rows + j]).toBe(gram[off + j * rows + i]);
      }
    });
  }
});
