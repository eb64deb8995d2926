/**
 * B·Bᵀ of a block of sample vectors (one per column) on a GemmEngine, computing only the
 * blocks on and above the diagonal and mirroring the rest: a GEMM does not know its
 * product is symmetric, so the plain B·Bᵀ spends half its work on the mirror image.
 *
 * Split into q row chunks, the product takes q·(q + 1)/2 of q² chunk products: 3/4 of the
 * work for q = 2, 5/8 for q = 4. Chunks stay at least MIN_CHUNK rows so each product is
 * still large enough to run at the GEMM's full speed.
 */
import type { GemmEngine } from '../linalg/engine.js';
import type { Matrix } from '../linalg/matrix.js';

/** Rows per chunk at least (below this, splitting costs more in GEMM speed than it saves). */
const MIN_CHUNK = 384;
/** Chunks at most (5/8 of the work; more saves little and adds calls). */
const MAX_CHUNKS = 4;

/** Chunks the rows of a `rows`-row block are split into. */
export function gramChunks(rows: number): number {
  return Math.max(1, Math.min(MAX_CHUNKS, Math.floor(rows / MIN_CHUNK)));
}

/** gram[off + i·rows + j] += (B·Bᵀ)[i, j] for B = `b` (rows × cols, row-major). */
export async function addSymmetricGram(engine: GemmEngine, gram: Float64Array, off: number, b: Matrix, chunks = gramChunks(b.rows)): Promise<void> {
  const n = b.rows;
  const w = b.cols;
  const q = Math.max(1, Math.min(chunks, n));
  const at = (k: number): number => Math.round((k * n) / q);
  const part = (k: number): Matrix => ({ rows: at(k + 1) - at(k), cols: w, data: b.data.subarray(at(k) * w, at(k + 1) * w) });
  for (let i = 0; i < q; i++) {
    const bi = part(i);
    for (let j = i; j < q; j++) {
      const p = (await engine.matmul(bi, i === j ? bi : part(j), { transB: true })).data;
      const r0 = at(i);
      const c0 = at(j);
      const cols = at(j + 1) - c0;
      for (let r = 0; r < bi.rows; r++) {
        const src = r * cols;
        const dst = off + (r0 + r) * n + c0;
        for (let c = 0; c < cols; c++) gram[dst + c] += p[src + c]!;
        // The mirror block (below the diagonal) of an off-diagonal chunk product.
        if (i !== j) for (let c = 0; c < cols; c++) gram[off + (c0 + c) * n + r0 + r] += p[src + c]!;
      }
    }
  }
}
