/**
 * Synchronous Tucker-2 of a kernel given as its mode-T unfolding:
 * `tucker2(W_T, [T, S, K], [R2, R1], opts)` with W_T [T, S·K]. (The conv passes call
 * tucker2-conv.ts, which returns chain weights; this adapter remains for its tests.)
 * Returns factors [U_T [T,R2], U_S [S,R1]] and core [R2, R1, K]. Note the rank order
 * here is (output, input) = [R2, R1], unlike tucker2.ts's [R1, R2].
 */
import type { Rng } from '../util/rng.js';
import type { SyncGemm } from './engine.js';
import type { Matrix } from './matrix.js';
import type { Tensor } from './tensor.js';
import { tucker2Sync, type Tucker2Options } from './tucker2.js';

export interface Tucker2Decomposition {
  /** [U_T [T, R2], U_S [S, R1]] with orthonormal columns. */
  factors: [Matrix, Matrix];
  /** Core [R2, R1, K]. */
  core: Tensor;
  relError: number;
}

export function tucker2(
  unfoldingT: Matrix, dims: readonly [number, number, number], ranks: readonly [number, number],
  opts: Tucker2Options & { rng?: Rng; gemm?: SyncGemm } = {},
): Tucker2Decomposition {
  const [T, S, K] = dims;
  const { rng, ...rest } = opts;
  const svd = { ...(rest.svd ?? {}), ...(rng ? { rng } : {}) };
  const res = tucker2Sync({ data: unfoldingT.data, shape: [T, S, K] }, [ranks[1], ranks[0]], { ...rest, svd });
  return { factors: [res.uT, res.uS], core: res.core, relError: res.relError };
}
