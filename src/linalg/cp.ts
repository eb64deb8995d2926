/**
 * Synchronous CP-ALS over `{ data, dims }`: `cpAls({ data, dims }, R, opts)`. Thin adapter
 * over cp-als.ts (JS products; the conv passes call cp-conv.ts, which returns chain weights);
 * factors have unit-norm columns and `weights` holds λ (Kruskal form).
 */
import { cpAlsSync, type CpAlsOptions, type CpAlsResult } from './cp-als.js';
import type { SyncGemm } from './engine.js';
import type { FloatArray } from './matrix.js';

export type { CpAlsOptions, CpAlsResult } from './cp-als.js';

export function cpAls(tensor: { data: FloatArray; dims: readonly number[] }, rank: number, opts: CpAlsOptions & { gemm?: SyncGemm } = {}): CpAlsResult {
  return cpAlsSync({ data: tensor.data, shape: tensor.dims }, rank, opts);
}
